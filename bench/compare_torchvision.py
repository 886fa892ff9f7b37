"""mrcnn_tf against torchvision's Mask R-CNN on the same work, timed in one run on one machine.

    python bench/compare_torchvision.py                              # torch in this interpreter
    python bench/compare_torchvision.py --torch-python /path/to/venv/bin/python
    python bench/compare_torchvision.py --isa avx2                   # both limited to AVX2 kernels
    python bench/compare_torchvision.py --bf16                       # also both in bfloat16, four workers

torch and torchvision are not dependencies of mrcnn_tf: install them with `pip install -e ".[compare]"`, or
point --torch-python at any interpreter that has them (numpy is all that side needs besides torch). Each
library runs in its own subprocess, one after the other, with the same thread count, so neither's thread
pools or allocator disturb the other; the parent prints both and their ratio. No figure comes from another
day or machine.

The work (the issue's definition, both sides):
  inference  ResNet-50 FPN, 512x512, batch 1, 6 classes, 1000 proposals after NMS, score threshold 0 and
             100 detections, all 100 through the mask head; timed end to end (mrcnn_tf `detect([image])`:
             molding, graph, full-size masks; torchvision `model([tensor])` in eval mode: transform, graph,
             pasted masks); BatchNorm with its moving statistics on both sides, as torchvision's eval mode and every
             mrcnn_tf preset's inference (until 2026-12-08 mrcnn_tf ran TRAIN_BN=True here, batch statistics at
             inference, Matterport's reading of it: `--tf-set TRAIN_BN=true` times that)
  training   one optimizer step, same network from random weights with BatchNorm trained, 2 instances,
             2000 proposals, 512 sampled ROIs per image, 256 RPN anchors, batch 1, SGD momentum 0.9 at 0.001 (mrcnn_tf
             `train_on_batch` on a batch built by its DataGenerator; torchvision forward + backward + step)
Both start from the same uint8 image and instance masks. One difference is Matterport's architecture, kept because
the COCO weights need it: its RPN conv is 512 channels wide, torchvision's 256 (twice the RPN's arithmetic; 12% of
mrcnn_tf's training step on a Zen 5 EPYC); `--tf-set RPN_CONV_CHANNELS=256` times mrcnn_tf on torchvision's width.
`--isa avx2` sets ONEDNN_MAX_CPU_ISA=AVX2 for both, ATEN_CPU_CAPABILITY=avx2 and MKL_ENABLE_INSTRUCTIONS=AVX2 for
torch: what an AVX2-only CPU runs, on a machine that has AVX-512.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE, CLASSES, PROPOSALS_INFER, DETECTIONS = 512, 6, 1000, 100
PROPOSALS_TRAIN, ROIS_PER_IMAGE, RPN_ANCHORS = 2000, 512, 256
# At 0.01 torchvision's RPN left no proposal after its fifth step from random weights (2000, 2000, 2000, 2000, 1328,
# then 0): its box and mask heads then ran on the 2 ground-truth boxes alone and the step took 0.93 s instead of
# 1.45 s, less work than the compared one. At 0.001 it keeps its 2000 proposals (16 steps checked); mrcnn_tf's heads
# always run on their TRAIN_ROIS_PER_IMAGE slots. The torch worker counts the ROIs its box head sees in each step.
LEARNING_RATE = 0.001
BF16_AVX2_REFUSAL = ("--bf16 with --isa avx2: oneDNN has no bfloat16 convolution below AVX512-BF16 (the mrcnn_tf side "
                     "fails to build its primitives); time bfloat16 with native kernels")


def make_work(path, seed=0):
    """The shared input: a 512x512 smear-like uint8 image with two cell masks and their classes (.npz)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(170, 230, size=(SIZE, SIZE, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((SIZE, SIZE, 2), bool)
    for i, (cy, cx, r) in enumerate([(150, 170, 60), (350, 330, 75)]):
        masks[..., i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image[masks[..., i]] = (120 + 30 * i, 80, 160)
    np.savez(path, image=image, masks=masks, class_ids=np.array([2, 5], np.int32))


def timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "times": times}


# ------------------------------------------------------------------------------------------- mrcnn_tf side
def tf_setup(threads):
    """Import mrcnn_tf before TensorFlow (its process settings come first) and pin both thread pools."""
    import mrcnn_tf  # noqa: F401
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def tf_config(overrides=(), part="train"):
    """The compared work of `part` ("train" or "infer") as an mrcnn_tf Config (ResNet-50 FPN, the sizes above;
    BatchNorm trained for "train", its moving statistics for "infer"), with `overrides` ("KEY=VALUE", as
    `mrcnn-tf train --set`) applied."""
    from mrcnn_tf.config import Config

    attributes = dict(NAME="compare", BACKBONE="resnet50", GPU_COUNT=1, IMAGES_PER_GPU=1, NUM_CLASSES=CLASSES,
                      IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=SIZE, IMAGE_MAX_DIM=SIZE,
                      POST_NMS_ROIS_INFERENCE=PROPOSALS_INFER, DETECTION_MIN_CONFIDENCE=0.0,
                      DETECTION_MAX_INSTANCES=DETECTIONS, POST_NMS_ROIS_TRAINING=PROPOSALS_TRAIN,
                      TRAIN_ROIS_PER_IMAGE=ROIS_PER_IMAGE, RPN_TRAIN_ANCHORS_PER_IMAGE=RPN_ANCHORS,
                      TRAIN_BN=True if part == "train" else None,
                      LEARNING_RATE=LEARNING_RATE)
    return type("CompareConfig", (Config,), attributes)().apply_overrides(list(overrides))


def tf_train_batch(config, work):
    """The training inputs of the work's one image, built by mrcnn_tf's own DataGenerator."""
    from mrcnn_tf.data.dataset import Dataset
    from mrcnn_tf.data.pipeline import DataGenerator

    class OneImage(Dataset):
        def load_image(self, image_id):
            return work["image"]

        def load_mask(self, image_id):
            return work["masks"], work["class_ids"]

    dataset = OneImage()
    dataset.add_class("compare", 1, "cell")
    for k in range(2, CLASSES):
        dataset.add_class("compare", k, f"type{k}")
    dataset.add_image("compare", 0, None)
    dataset.prepare()
    return list(DataGenerator(dataset, config, shuffle=False)[0][0])


def tf_models(parts, logs, work, overrides=()):
    """{part: a callable doing one unit of the part's work} for "infer" and "train"."""
    from mrcnn_tf.model import MaskRCNN

    config = tf_config(overrides)
    print(f"mrcnn_tf policy {config.MIXED_PRECISION or 'float32'}", file=sys.stderr)
    calls = {}
    if "infer" in parts:
        model = MaskRCNN("inference", tf_config(overrides, "infer"), logs)
        calls["infer"] = lambda: model.detect([work["image"]])
    if "train" in parts:
        batch = tf_train_batch(config, work)
        model = MaskRCNN("training", config, logs)
        model.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
        keras_model = model.keras_model
        calls["train"] = lambda: keras_model.train_on_batch(batch)
    return calls


def tf_worker(args, work):
    tf = tf_setup(args.threads)
    from mrcnn_tf.backend.runtime import onednn_enabled

    result = {"library": f"mrcnn_tf (tensorflow {tf.__version__}, oneDNN {'on' if onednn_enabled() else 'off'})"}
    overrides = list(args.tf_set) + (["MIXED_PRECISION=mixed_bfloat16"] if args.precision == "bf16" else [])
    with tempfile.TemporaryDirectory() as logs:
        for part in args.parts:
            # One part at a time, as before: the inference model is released before training builds.
            call = tf_models([part], logs, work, overrides)[part]
            if part == "infer":
                result["detections"] = len(call()[0]["class_ids"])
            result[part] = timed(call, args.runs, warmup=args.warmup)
            del call
    return result


# ---------------------------------------------------------------------------------------- torchvision side
def torch_worker(args, work):
    import torch
    import torchvision
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)
    common = dict(weights=None, weights_backbone=None, num_classes=CLASSES, min_size=SIZE, max_size=SIZE)
    image = torch.from_numpy(work["image"]).permute(2, 0, 1).float() / 255
    result = {"library": f"torchvision {torchvision.__version__} (torch {torch.__version__})"}

    def autocast():
        if args.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if "infer" in args.parts:
        model = maskrcnn_resnet50_fpn(**common, rpn_pre_nms_top_n_test=PROPOSALS_INFER,
                                      rpn_post_nms_top_n_test=PROPOSALS_INFER, box_score_thresh=0.0,
                                      box_detections_per_img=DETECTIONS).eval()
        with torch.no_grad(), autocast():
            result["detections"] = int(model([image])[0]["labels"].shape[0])
            result["infer"] = timed(lambda: model([image]), args.runs, warmup=args.warmup)
        del model
    if "train" in args.parts:
        # From random weights torchvision trains BatchNorm (FrozenBatchNorm only with pretrained weights).
        model = maskrcnn_resnet50_fpn(**common, trainable_backbone_layers=5, rpn_pre_nms_top_n_train=PROPOSALS_TRAIN,
                                      rpn_post_nms_top_n_train=PROPOSALS_TRAIN, rpn_batch_size_per_image=RPN_ANCHORS,
                                      box_batch_size_per_image=ROIS_PER_IMAGE).train()
        masks = torch.from_numpy(work["masks"]).permute(2, 0, 1).to(torch.uint8)
        boxes = []
        for m in masks:
            rows, cols = torch.where(m.any(dim=1))[0], torch.where(m.any(dim=0))[0]
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32),
                  "labels": torch.from_numpy(work["class_ids"]).long(), "masks": masks}
        optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
        box_head_rois = []
        model.roi_heads.box_head.register_forward_hook(lambda module, inputs, output:
                                                       box_head_rois.append(int(inputs[0].shape[0])))

        def step():
            optimizer.zero_grad()
            with autocast():
                loss = sum(model([image], [target]).values())
            loss.backward()
            optimizer.step()

        result["train"] = timed(step, args.runs, warmup=args.warmup)
        result["train"]["box_head_rois"] = box_head_rois[-args.runs:]  # the timed steps'
    return result


# ------------------------------------------------------------------------------------------------- parent
def isa_env(isa):
    if isa == "native":
        return {}
    # torch's own matrix products are MKL's, which ONEDNN_MAX_CPU_ISA does not reach (TensorFlow's are oneDNN's).
    return {"ONEDNN_MAX_CPU_ISA": isa.upper(), "ATEN_CPU_CAPABILITY": isa, "MKL_ENABLE_INSTRUCTIONS": isa.upper()}


def run_worker(python, library, args, work_path, precision="fp32"):
    command = [python, os.path.abspath(__file__), "--worker", library, "--precision", precision, "--work", work_path,
               "--threads",
               str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup), "--parts", *args.parts,
               *[f"--tf-set={item}" for item in args.tf_set]]
    env = dict(os.environ, **isa_env(args.isa))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return worker_result(command, library, env)


def worker_result(command, library, env):
    """Run a worker's `command` and return the JSON of its last ``RESULT`` line (exit with its stderr if it failed)."""
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.exit(f"{library} worker failed ({' '.join(command)}):\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def precision_of(key):
    """"fp32" or "bf16" for a results key ("tf", "torch bf16", ...)."""
    return key.split()[1] if " " in key else "fp32"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    extras = [label for flag, label in (("avx512_vnni", "VNNI"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX"))
              if flag in flags]
    return f"{name} ({', '.join([isa] + extras)})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before the timed ones (both sides)")
    parser.add_argument("--parts", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--isa", default="native", choices=["native", "avx2"],
                        help="avx2: limit oneDNN (both) and ATen (torch) to AVX2 kernels")
    parser.add_argument("--torch-python", default=sys.executable, help="an interpreter with torch + torchvision")
    parser.add_argument("--tf-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Config override for the mrcnn_tf side, e.g. RPN_CONV_CHANNELS=256: torchvision's "
                             "RPN conv is 256 wide, Matterport's (and the COCO weights') 512, twice its arithmetic")
    parser.add_argument("--bf16", action="store_true", help="also time both libraries in bfloat16")
    parser.add_argument("--worker", choices=["tf", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bf16 and args.isa == "avx2":
        parser.error(BF16_AVX2_REFUSAL)
    if args.worker:
        import numpy as np

        work = dict(np.load(args.work))
        result = (tf_worker if args.worker == "tf" else torch_worker)(args, work)
        print("RESULT " + json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work_path = os.path.join(tmp, "work.npz")
        make_work(work_path)
        started = datetime.datetime.now()
        load_before = os.getloadavg()[0]
        results = {"tf": run_worker(sys.executable, "tf", args, work_path),
                   "torch": run_worker(args.torch_python, "torch", args, work_path)}
        if args.bf16:
            results["tf bf16"] = run_worker(sys.executable, "tf", args, work_path, "bf16")
            results["torch bf16"] = run_worker(args.torch_python, "torch", args, work_path, "bf16")
    load_after = os.getloadavg()[0]
    print(f"bench/compare_torchvision.py  date={started:%Y-%m-%d %H:%M}  cmd=python {' '.join(sys.argv)}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus, threads={args.threads}, isa={args.isa}, "
          f"load {load_before:.1f} -> {load_after:.1f}"
          + (f"; mrcnn_tf with {' '.join(args.tf_set)}" if args.tf_set else ""))
    for key in ("tf", "torch"):
        print(f"  {key:5s} {results[key]['library']}")
    summary = []
    # (mrcnn_tf's run, torchvision's run) pairs to divide; with --bf16 also bf16 against fp32 and bf16.
    pairs = [("tf", "torch")] + ([("tf bf16", "torch"), ("tf bf16", "torch bf16")] if args.bf16 else [])
    for part in args.parts:
        for key, result in results.items():
            runs = ", ".join(f"{t:.2f}" for t in result[part]["times"])
            print(f"  {part:5s} {key:10s} median {result[part]['median']:7.3f} s  [{runs}]")
            rois = result[part].get("box_head_rois")
            if rois is not None:
                print(f"  {part:5s} {key}: torchvision's box head saw {min(rois)}-{max(rois)} ROIs per timed step "
                      f"(mrcnn_tf's: {ROIS_PER_IMAGE}, always)" + ("" if min(rois) == ROIS_PER_IMAGE else
                                                                   "  WARNING: not the same work, not comparable"))
        for ours, theirs in pairs:
            tf_s, torch_s = results[ours][part]["median"], results[theirs][part]["median"]
            mine, other = precision_of(ours), precision_of(theirs)
            print(f"  {part:5s} mrcnn_tf {mine} / torchvision {other} = {tf_s / torch_s:.2f}x")
            summary.append(f"{part} {mine} {tf_s:.3f} s vs {other} {torch_s:.3f} s = {tf_s / torch_s:.2f}x")
    print(f"SUMMARY compare_torchvision {started:%Y-%m-%d} threads={args.threads} isa={args.isa}"
          + "".join(f" {item}" for item in args.tf_set) + ": "
          + "; ".join(summary) + f"; load {load_before:.1f}-{load_after:.1f}")


if __name__ == "__main__":
    main()
