"""Learning benchmark: train from scratch on synthetic LISC and score a held-out set against steps.

    python bench/learn_synth.py --epochs 12 --every 2 --out bench/out/learn

Writes a synthetic training set and a held-out set (different seeds), trains `DemoConfig` (or the
config named by --set overrides) from random weights on this machine, and prints held-out mask
mAP50 / COCO AP / typing accuracy after fixed epochs (seeded work: the same curve on any CPU up to thread
nondeterminism; the training minutes beside it, scoring excluded, are this machine's).
The curve is saved as JSON in --out; paste the printed table into bench/RESULTS.md.
"""
import argparse
import os
import pathlib
import platform
import sys
import time



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="epochs of STEPS_PER_EPOCH steps")
    parser.add_argument("--every", type=int, default=2, help="score the held-out set every N epochs")
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--train-mixt", type=int, default=20)
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--val-mixt", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE config override")
    parser.add_argument("--out", default="bench/out/learn")
    args = parser.parse_args(argv)

    from mrcnn_tf.wbc.demo import DemoConfig, load_subset, save_curve
    from mrcnn_tf.wbc.training_run import train_run
    from mrcnn_tf.wbc.synth import write_lisc

    out = pathlib.Path(args.out)
    train_dir, val_dir = out / "train", out / "heldout"
    if not train_dir.exists():
        write_lisc(train_dir, args.train_per_class, mixt=args.train_mixt, seed=1000 + args.seed)
    if not val_dir.exists():
        write_lisc(val_dir, args.val_per_class, mixt=args.val_mixt, seed=2000 + args.seed)
    config = DemoConfig().apply_overrides(args.overrides)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}; config {type(config).__name__} {args.overrides or ''}")
    started = time.time()
    run = train_run(config, load_subset(train_dir), load_subset(val_dir), out / "logs",
                    [("all", args.epochs, config.LEARNING_RATE)], seed=args.seed, augment=not args.no_augment,
                    score_every=args.every)
    curve = run.scorer.curve
    save_curve(curve, out / "curve.json")
    print("\n| epoch | steps | training minutes (here) | held-out mask mAP50 | COCO segm AP | typing accuracy | loss |")
    print("|---|---|---|---|---|---|---|")
    for p in curve:
        print(f"| {p['epoch']} | {p['steps']} | {p['minutes']:.1f} | {p['mAP50']:.3f} | {p['AP']:.3f} "
              f"| {p['accuracy']:.3f} | {p['loss']:.3f} |")
    print(f"\nwall time {(time.time() - started) / 60:.1f} min (scoring included); "
          f"load average {os.getloadavg()[0]:.1f}; curve in {out / 'curve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
