"""The plain command on each real dev set: self-configured from the data, trained from scratch, val scored once.

    python bench/learn_wbc.py                                   # ../shared/data/bccd-wbc and ../shared/data/tecom-wbc
    python bench/learn_wbc.py --data ../shared/data/tecom-wbc --seed 1
    python bench/learn_wbc.py --fold 1/5 --set MIXED_PRECISION=mixed_bfloat16   # a choice, by cross-validation
    python bench/learn_wbc.py --data ../shared/data/tecom-wbc --score-every 1     # the learning curve on val

For each COCO-layout folder this does what `mrcnn-tf train --dataset DIR --weights none` (no --config) and then
`mrcnn-tf evaluate --subset val` do: fingerprint the training annotations and plan the settings
(`mrcnn_tf.wbc.fingerprint`), train from random weights through the one training driver, score the val split once
with the run's colour typer, and print a table per set: mask mAP50 and typing accuracy with their 95 % intervals,
COCO segm AP, Dice, the type confusion, training minutes on this machine. Val is scored once per finished recipe:
nothing here chooses anything on it. `--fold K/N` scores a recipe for a choice instead: it trains on the train split
less its K-th of N seeded parts and scores that part (val is not read); `--set KEY=VALUE` changes the plan's settings
as `train --set` does. `--score-every N` also scores val after every N epochs while it trains and prints that curve
(training minutes only, scoring excluded: the curve to read against bench/learn_bccd_torchvision.py's); the final
row is the same finished recipe's score.
"""
import argparse
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SETS = [ROOT.parent / "shared" / "data" / "bccd-wbc", ROOT.parent / "shared" / "data" / "tecom-wbc"]


def cpu_name():
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fold_folder(data, out, fold, folds, seed=0):
    """A COCO-layout folder whose train and val are the train split of `data` less part `fold` of `folds`, and that
    part (images split by a seeded shuffle; the images folder is linked, not copied)."""
    source = json.loads((data / "annotations" / "instances_train.json").read_text())
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(source["images"]))
    held = {source["images"][i]["id"] for i in order[fold - 1::folds]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    for subset, keep in (("train", lambda i: i not in held), ("val", lambda i: i in held)):
        part = dict(source, images=[im for im in source["images"] if keep(im["id"])],
                    annotations=[a for a in source["annotations"] if keep(a["image_id"])])
        (out / "annotations" / f"instances_{subset}.json").write_text(json.dumps(part))
    if not (out / "images").exists():
        (out / "images").symlink_to((data / "images").resolve(), target_is_directory=True)
    return out


def run_set(data, out, seed, overrides=(), echo=print, score_every=None):
    """Train the plan on `data`'s train split and score its val split once; returns the metrics and minutes (and,
    with `score_every` epochs, prints val's curve while it trains)."""
    from mrcnn_tf.engine.driver import parse_schedule
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
    from mrcnn_tf.wbc.fingerprint import fingerprint, format_plan, planned_config
    from mrcnn_tf.wbc.runs import load_dataset, load_inference_model
    from mrcnn_tf.wbc.training_run import train_run

    train_set, val_set = load_dataset(data, "train"), load_dataset(data, "val")
    fp = fingerprint(train_set)
    config, schedule, choices, warnings = planned_config(fp)
    echo(format_plan(fp, choices, warnings))
    if overrides:
        config.apply_overrides(list(overrides))
        echo(f"--set {' '.join(overrides)}")
    started = time.perf_counter()
    run = train_run(config, train_set, val_set, out / "logs", parse_schedule(schedule, config.LEARNING_RATE),
                    seed=seed, echo=echo, run_info={"dataset": str(data), "command": "bench/learn_wbc.py"},
                    score_every=score_every)
    minutes = (time.perf_counter() - started) / 60
    if run.scorer is not None:
        echo("\n| epoch | steps | training min (scoring excluded) | mask mAP50 | COCO segm AP | typing accuracy |")
        echo("|---|---|---|---|---|---|")
        for p in run.scorer.curve:
            typed = p.get("colour_typed", p)
            echo(f"| {p['epoch']} | {p['steps']} | {p['minutes']:.1f} | {typed['mAP50']:.3f} | {typed['AP']:.3f} | "
                 f"{typed['accuracy']:.3f} |")
    model, _ = load_inference_model(str(run.checkpoints()[-1]), str(out / "logs"), echo=echo)
    metrics = evaluate_dataset(model, val_set)
    echo(format_report(metrics))
    return metrics, minutes, schedule


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=None, help="COCO-layout folder (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out/wbc")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fold", default=None, metavar="K/N", help="score part K of N of the train split instead of val")
    parser.add_argument("--score-every", type=int, default=None, metavar="N",
                        help="also score val after every N epochs (the learning curve)")
    args = parser.parse_args(argv)
    sets = [pathlib.Path(d) for d in (args.data or DEFAULT_SETS)]
    fold = tuple(int(v) for v in args.fold.split("/")) if args.fold else None
    print(f"bench/learn_wbc.py {time.strftime('%Y-%m-%d %H:%M')}  {cpu_name()}, {os.cpu_count()} cpus; "
          f"cmd=python {' '.join(sys.argv)}")
    rows = []
    for data in sets:
        out = pathlib.Path(args.out) / data.name
        if fold:
            out = out / f"fold{fold[0]}of{fold[1]}"
            data = fold_folder(data, out / "data", *fold)
        metrics, minutes, schedule = run_set(data, out, args.seed, args.overrides, score_every=args.score_every)
        rows.append((data.name if not fold else f"{out.parent.name} train fold {args.fold}", schedule, minutes, metrics))
    print(f"\nsettings: plan{' + ' + ' '.join(args.overrides) if args.overrides else ''}")
    print("\n| set (scored part) | schedule | training min | mask mAP50 [95%] | typing [95%] | COCO segm AP | Dice |")
    print("|---|---|---|---|---|---|---|")
    for name, schedule, minutes, m in rows:
        ci = m["mAP50_ci95"] or (float("nan"),) * 2
        acc = m["accuracy_ci95"] or (float("nan"),) * 2
        print(f"| {name} | {schedule} | {minutes:.1f} | {m['mAP50']:.3f} [{ci[0]:.3f}-{ci[1]:.3f}] | "
              f"{m['accuracy']:.3f} [{acc[0]:.3f}-{acc[1]:.3f}] | {m['AP']:.3f} | {m['dice']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
