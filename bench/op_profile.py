"""Where a step's time goes: TensorFlow op time per op type and per layer, from the TF profiler.

    python bench/op_profile.py                       # the training step of bench/compare_torchvision.py
    python bench/op_profile.py --part infer          # its inference call (detect, molding included)
    python bench/op_profile.py --top 40 --steps 3
    python bench/op_profile.py --config demo         # a preset's own training step (bench/first_step.py's batch)

Runs the exact work of bench/compare_torchvision.py (ResNet-50 FPN, 512 px, BatchNorm trained, 2000
proposals, 512 ROIs), warms up, then records `--steps` calls with `tf.profiler.experimental` and reads
the host plane of the written XSpace (`xplane.pb`) itself: every TraceMe event named `layer/op:OpType` is
an executed kernel. Printed per step: wall time, op time summed over threads (above wall time when the two
inter-op threads overlap), then the op types and the layers (first two name components, forward and
gradient together) that took most of it. Host work outside ops (Python, molding, the data generator) is
wall time minus what ops covered on the busiest thread. `--config NAME` profiles that preset's training
step instead, on synthetic batches of its size (its backbone, batch, BatchNorm mode and optimizer).
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from compare_torchvision import cpu_model, make_work, tf_models, tf_setup  # noqa: E402

# Ops that only call a function body whose own ops are traced too: counting them would count twice.
CONTAINER_OPS = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf",
                 "Case", "StatelessCase", "_MklPartitionedCall"}
OP_EVENT = re.compile(r"^(?P<name>[^:#]+):(?P<type>[A-Z_][A-Za-z0-9_]*)$")


def kernel_events(xspace_path):
    """(op name, op type, thread line id, start ps, duration ps) of every executed kernel on the host plane."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name.split("#")[0]
                match = OP_EVENT.match(name)
                if match and match["type"] not in CONTAINER_OPS:
                    events.append((match["name"], match["type"], line.id,
                                   event.offset_ps + line.timestamp_ns * 1000, event.duration_ps))
    return events


def layer_of(op_name):
    """The layer an op belongs to: gradient ops named gradient_tape/<layer>/... count with their layer."""
    parts = [p for p in op_name.split("/") if p not in ("gradient_tape", "functional", "mask_rcnn")]
    return "/".join(parts[:2]) if len(parts) > 1 else parts[0]


def covered_seconds(events):
    """Seconds of the busiest thread covered by kernels (nested events merged)."""
    by_line = collections.defaultdict(list)
    for _, _, line, start, duration in events:
        by_line[line].append((start, start + duration))
    best = 0
    for spans in by_line.values():
        spans.sort()
        total, end = 0, None
        for s, e in spans:
            if end is None or s > end:
                total += e - s
                end = e
            elif e > end:
                total += e - end
                end = e
        best = max(best, total)
    return best / 1e12


def report(events, steps, wall, top):
    total = sum(e[4] for e in events) / 1e12 / steps
    print(f"  wall {wall:.3f} s per step; op time {total:.3f} s per step summed over threads "
          f"({len(events) // steps} kernels); the busiest thread is in ops {covered_seconds(events) / steps:.3f} s")
    for title, key in (("op type", lambda e: e[1]), ("layer", lambda e: layer_of(e[0])),
                       ("layer and op type", lambda e: f"{layer_of(e[0])}  {e[1]}")):
        sums, counts = collections.Counter(), collections.Counter()
        for event in events:
            sums[key(event)] += event[4] / 1e12 / steps
            counts[key(event)] += 1
        print(f"  by {title}:  seconds per step, share of op time, kernels per step")
        for name, seconds in sums.most_common(top):
            print(f"    {name:60s} {seconds:7.3f} s {100 * seconds / total:5.1f}%  {counts[name] // steps:5d}")


def preset_step(name, logs):
    """One `train_on_batch` of preset `name` on synthetic batches of its size (bench/first_step.py's)."""
    import numpy as np

    from mrcnn_tf.model import MaskRCNN
    from mrcnn_tf.wbc.presets import make_config
    from train_step import synthetic_batch

    config = make_config(name)
    batch = [np.concatenate(parts) for parts in zip(*(synthetic_batch(config, s) for s in range(config.BATCH_SIZE)))]
    model = MaskRCNN(mode="training", config=config, model_dir=logs)
    model.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
    return lambda: model.keras_model.train_on_batch(batch)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="train", choices=["train", "infer"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="profiled calls after the warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--config", help="profile a preset's training step (demo, bccd, lisc) instead")
    args = parser.parse_args(argv)
    tf = tf_setup(args.threads)
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        make_work(os.path.join(tmp, "work.npz"))
        work = dict(np.load(os.path.join(tmp, "work.npz")))
        call = preset_step(args.config, tmp) if args.config else tf_models([args.part], tmp, work)[args.part]
        for _ in range(args.warmup):
            call()
        log_dir = os.path.join(tmp, "profile")
        tf.profiler.experimental.start(log_dir)
        start = time.perf_counter()
        for _ in range(args.steps):
            call()
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            sys.exit(f"the profiler wrote no .xplane.pb under {log_dir}")
        events = kernel_events(paths[0])
    work = f"config={args.config}" if args.config else f"part={args.part}"
    print(f"bench/op_profile.py  {work}  machine: {cpu_model()}, threads={args.threads}, "
          f"load {os.getloadavg()[0]:.1f}  cmd=python {' '.join(sys.argv)}")
    report(events, args.steps, wall, args.top)


if __name__ == "__main__":
    main()
