"""Learning benchmark on real smears: BCCD-WBC train -> scored on BCCD-WBC val at fixed step counts.

    python bench/learn_bccd.py --every 2 --out bench/out/bccd     # the recipe: BccdConfig, 16 epochs
    python bench/learn_bccd.py --set REPEAT_FACTOR_THRESHOLD=0 --out bench/out/bccd_no_rfs

Trains `BccdConfig` (`mrcnn-tf train --config bccd`, changed by --set) from random weights on the 227
training fields of ../shared/data/bccd-wbc (or --data) and scores the 57 validation fields after every
--every epochs: Matterport's mask mAP50, COCO segm AP, typing accuracy, per-type AP50 and the type
confusion matrix, against steps (seeded work: the same curve on any CPU up to thread nondeterminism) and
training minutes on this machine (scoring excluded). The curve is saved as JSON in --out. With COLOUR_TYPING
(BccdConfig's) every point is scored again with the types from the colour typer `mrcnn-tf train` writes (fitted
on the training cells' hand-drawn masks before training: it does not depend on the network), and the typer is
saved beside the run's checkpoints, so `mrcnn-tf evaluate --weights` on them types the cells the same way.
"""
import argparse
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bccd-wbc"


def load(data, subset):
    from mrcnn_tf.coco import CocoDataset

    dataset = CocoDataset()
    dataset.load_coco(str(data), subset)
    dataset.prepare()
    return dataset


def confusion_lines(confusion):
    """Rows: true type; columns: the detected type of its best-matching detection, or missed."""
    labels, rows = confusion["labels"], confusion["rows"]  # labels: the types, then "missed"
    width = max(len(label) for label in labels) + 2
    lines = ["true \\ detected".ljust(width) + "".join(label[:10].rjust(11) for label in labels)]
    lines += [label.ljust(width) + "".join(f"{n:11d}" for n in row) for label, row in zip(labels[:-1], rows)]
    return lines


def print_colour_typed(curve, typer):
    """COLOUR_TYPING: the curve's points scored with the colour typer's types, and the last point's confusion."""
    print(f"\ntyped by colour inside the predicted masks ({typer.feature_set} typer on {typer.cells} training cells, "
          f"L2 {typer.l2:g}, cross-validated {typer.cv_accuracy:.3f}; nucleus direction {typer.nucleus_source}):")
    print("\n| epoch | steps | training minutes (here) | mask mAP50 | COCO segm AP | typing accuracy |")
    print("|---|---|---|---|---|---|")
    for p in curve:
        t = p["colour_typed"]
        print(f"| {p['epoch']} | {p['steps']} | {p['minutes']:.1f} | {t['mAP50']:.3f} | {t['AP']:.3f} | "
              f"{t['accuracy']:.3f} |")
    print("\n".join(confusion_lines(curve[-1]["colour_typed"]["confusion_matrix"])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a COCO-layout folder with train and val")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of STEPS_PER_EPOCH steps (default: the preset's from-scratch schedule, "
                             "bccd: all:16)")
    parser.add_argument("--every", type=int, default=2, help="score the validation fields every N epochs")
    parser.add_argument("--config", default="bccd", help="preset name (mrcnn_tf/wbc/presets.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE config override")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--init", default=None, help="start from this weight file (e.g. a synthetic-smear run)")
    parser.add_argument("--out", default="bench/out/bccd")
    args = parser.parse_args(argv)

    from mrcnn_tf.engine.checkpoints import resolve_weights
    from mrcnn_tf.engine.driver import parse_schedule
    from mrcnn_tf.wbc.demo import save_curve
    from mrcnn_tf.wbc.presets import make_config, scratch_schedule
    from mrcnn_tf.wbc.training_run import train_run

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = make_config(args.config).apply_overrides(args.overrides)
    if args.epochs is None:  # what `mrcnn-tf train --config NAME --weights none` runs
        args.epochs = parse_schedule(scratch_schedule(args.config), config.LEARNING_RATE)[-1][1]
    train_set, val_set = load(args.data, "train"), load(args.data, "val")
    print(f"bench/learn_bccd.py {time.strftime('%Y-%m-%d %H:%M')}  cmd=python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; config {args.config} {args.overrides or ''}; "
          f"{train_set.num_images} training / {val_set.num_images} validation fields")
    started = time.time()
    # The driver fits the colour typer (COLOUR_TYPING) before training and saves it beside the checkpoints, as
    # `mrcnn-tf train` does: `mrcnn-tf evaluate --weights` on them types the cells the same way.
    run = train_run(config, train_set, val_set, out / "logs", [("all", args.epochs, config.LEARNING_RATE)],
                    choice=resolve_weights(args.init, out) if args.init else None, fresh_run=bool(args.init),
                    seed=args.seed, augment=not args.no_augment, score_every=args.every,
                    run_info={"dataset": str(args.data), "command": "bench/learn_bccd.py"})
    typer, curve = run.typer, run.scorer.curve
    save_curve(curve, out / "curve.json")
    types = [name for name in train_set.class_names[1:]]
    print("\n| epoch | steps | training minutes (here) | mask mAP50 | COCO segm AP | typing accuracy | "
          + " | ".join(f"{t} AP50" for t in types) + " |")
    print("|" + "---|" * (6 + len(types)))
    for p in curve:
        per_class = p.get("per_class") or {}
        cells = " | ".join("n/a" if per_class.get(t) is None else f"{per_class[t]:.2f}" for t in types)
        print(f"| {p['epoch']} | {p['steps']} | {p['minutes']:.1f} | {p['mAP50']:.3f} | {p['AP']:.3f} | "
              f"{p['accuracy']:.3f} | {cells} |")
    if curve and curve[-1].get("confusion_matrix"):
        print("\ntype confusion at the last point (rows: true type, columns: detected type or missed):")
        print("\n".join(confusion_lines(curve[-1]["confusion_matrix"])))
    final = curve[-1] if curve else {}
    typed = curve[-1].get("colour_typed") if curve else None
    if typed:
        print_colour_typed(curve, typer)
    print(f"\nSUMMARY learn_bccd {time.strftime('%Y-%m-%d')} {args.config} {' '.join(args.overrides)}: "
          f"{final.get('steps')} steps, mAP50 {final.get('mAP50', float('nan')):.3f}, accuracy "
          f"{final.get('accuracy', float('nan')):.3f}, {final.get('minutes', float('nan')):.1f} training min; "
          f"wall {(time.time() - started) / 60:.1f} min, load {os.getloadavg()[0]:.1f}"
          + (f"; typed by colour: mAP50 {typed['mAP50']:.3f}, accuracy {typed['accuracy']:.3f}" if typed else ""))
    (out / "summary.json").write_text(json.dumps({"args": vars(args), "curve": curve, "colour_typed": typed},
                                                 indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
