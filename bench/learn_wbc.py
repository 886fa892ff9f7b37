"""The plain command on each real dev set: self-configured from the data, trained from scratch, val scored once.

    python bench/learn_wbc.py                                   # ../shared/data/bccd-wbc and ../shared/data/tecom-wbc
    python bench/learn_wbc.py --data ../shared/data/tecom-wbc --seed 1

For each COCO-layout folder this does what `mrcnn-tf train --dataset DIR --weights none` (no --config) and then
`mrcnn-tf evaluate --subset val` do: fingerprint the training annotations and plan the settings
(`mrcnn_tf.wbc.fingerprint`), train from random weights through the one training driver, score the val split once
with the run's colour typer, and print a table per set: mask mAP50 and typing accuracy with their 95 % intervals,
COCO segm AP, Dice, the type confusion, training minutes on this machine. Val is scored once per finished recipe:
nothing here chooses anything on it.
"""
import argparse
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


def run_set(data, out, seed, echo=print):
    """Train the plan on `data`'s train split and score its val split once; returns the metrics and minutes."""
    from mrcnn_tf.engine.driver import parse_schedule
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
    from mrcnn_tf.wbc.fingerprint import fingerprint, format_plan, planned_config
    from mrcnn_tf.wbc.runs import load_dataset, load_inference_model
    from mrcnn_tf.wbc.training_run import train_run

    train_set, val_set = load_dataset(data, "train"), load_dataset(data, "val")
    fp = fingerprint(train_set)
    config, schedule, choices, warnings = planned_config(fp)
    echo(format_plan(fp, choices, warnings))
    started = time.perf_counter()
    run = train_run(config, train_set, val_set, out / "logs", parse_schedule(schedule, config.LEARNING_RATE),
                    seed=seed, echo=echo, run_info={"dataset": str(data), "command": "bench/learn_wbc.py"})
    minutes = (time.perf_counter() - started) / 60
    model, _ = load_inference_model(str(run.checkpoints()[-1]), str(out / "logs"), echo=echo)
    metrics = evaluate_dataset(model, val_set)
    echo(format_report(metrics))
    return metrics, minutes, schedule


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=None, help="COCO-layout folder (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out/wbc")
    args = parser.parse_args(argv)
    sets = [pathlib.Path(d) for d in (args.data or DEFAULT_SETS)]
    print(f"bench/learn_wbc.py {time.strftime('%Y-%m-%d %H:%M')}  {cpu_name()}, {os.cpu_count()} cpus; "
          f"cmd=python {' '.join(sys.argv)}")
    rows = []
    for data in sets:
        metrics, minutes, schedule = run_set(data, pathlib.Path(args.out) / data.name, args.seed)
        rows.append((data.name, schedule, minutes, metrics))
    print("\n| set (val) | schedule | training min | mask mAP50 [95%] | typing [95%] | COCO segm AP | Dice |")
    print("|---|---|---|---|---|---|---|")
    for name, schedule, minutes, m in rows:
        ci = m["mAP50_ci95"] or (float("nan"),) * 2
        acc = m["accuracy_ci95"] or (float("nan"),) * 2
        print(f"| {name} | {schedule} | {minutes:.1f} | {m['mAP50']:.3f} [{ci[0]:.3f}-{ci[1]:.3f}] | "
              f"{m['accuracy']:.3f} [{acc[0]:.3f}-{acc[1]:.3f}] | {m['AP']:.3f} | {m['dice']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
