"""Folder-scale detection, mrcnn_tf's `run_detect` against a torchvision loop, images/s timed in one run.

    python bench/compare_detect_folder.py --torch-python /path/to/venv/bin/python          # 100 fields
    python bench/compare_detect_folder.py --torch-python ... --images 200 --isa avx2 --bf16
    python bench/compare_detect_folder.py --torch-python ... --images 3 --size 256 --detections 10   # smoke test

The folder: --images synthetic LISC-size fields (720x576 24-bit BMPs drawn by `mrcnn_tf.wbc.synth.render_smear`,
the same ones as bench/detect_folder.py), written once. Then, as in bench/compare_torchvision.py (whose helpers and
model settings this reuses), each library runs in its own subprocess, one after the other, with the same thread count
(intra- and inter-op), over the same files, each into a fresh output folder:

  mrcnn_tf     `mrcnn_tf.inference.detect_folder.run_detect` (the `mrcnn-tf detect --no-overlays` pipeline: batches of
               --batch-size, the CLI's default 4, a read-ahead and a write-behind thread, the fsynced journal
               detections.jsonl with COCO RLE masks (pycocotools), counts.csv, then detections.json and images.json),
               without the per-cell table (cells.csv: morphometry the torchvision side would not do)
  torchvision  a plain user loop, one image at a time: PIL reads the BMP, `pil_to_tensor(...) / 255`, `model([x])` in
               eval mode under no_grad, masks > 0.5, then one line per image appended (flushed, not fsynced) to
               detections.jsonl with the COCO records (bbox, category, score, RLE: pycocotools' compressed strings
               where that interpreter has pycocotools, else numpy's uncompressed COCO counts) and a counts.csv row;
               detections.json and images.json at the end. No DataLoader: reading a BMP and writing its records
               take a few percent of an image's time (the torch side prints its model share)

The work (both sides): ResNet-50 FPN, 6 classes, random weights, BatchNorm with its moving statistics, each field scaled to --size (512) on its long side,
1000 proposals, score threshold 0, --detections (100) detections per field, all through the mask head and pasted at
720x576. The one difference is each library's padding: mrcnn_tf (IMAGE_RESIZE_MODE square, Matterport's) pads to
512x512, torchvision to a multiple of 32 (416x512), 19% fewer pixels through its backbone and RPN; the run prints
both inputs. --torch-pad-square pads torchvision to 512x512 too (size_divisible=--size): the same arithmetic
rather than each library's own way. --bf16 also times both in bfloat16 (mrcnn_tf MIXED_PRECISION=mixed_bfloat16,
torch CPU autocast), --isa avx2 limits both to AVX2 kernels, as in compare_torchvision. Untimed on both sides: the
model build and one warm-up call (mrcnn_tf one batch of the first field, the graph trace; torchvision the first
field). Timed: the whole folder, from the first read to the last file closed. The ratio is mrcnn_tf's seconds per
image over torchvision's (above 1: mrcnn_tf slower).
"""
import argparse
import datetime
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare_torchvision import (BF16_AVX2_REFUSAL, CLASSES, DETECTIONS, PROPOSALS_INFER, SIZE,  # noqa: E402
                                 cpu_model, isa_env, precision_of, tf_config, tf_setup, worker_result)

# `mrcnn-tf detect`'s default --batch-size (mrcnn_tf.cli.detect.DEFAULT_BATCH_SIZE; bench/ does not import the CLI).
BATCH_SIZE = 4
MASK_THRESHOLD = 0.5  # both: mrcnn_tf's unmold_mask and the torch loop below


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mb(folder):
    return sum(p.stat().st_size for p in pathlib.Path(folder).iterdir() if p.is_file()) / 2 ** 20


# ------------------------------------------------------------------------------------------- mrcnn_tf side
def tf_worker(args):
    tf = tf_setup(args.threads)
    import numpy as np
    from PIL import Image

    from mrcnn_tf.backend.runtime import onednn_enabled
    from mrcnn_tf.inference.detect_folder import class_names_for, list_images, run_detect
    from mrcnn_tf.model import MaskRCNN

    overrides = [f"IMAGE_MIN_DIM={args.size}", f"IMAGE_MAX_DIM={args.size}",
                 f"DETECTION_MAX_INSTANCES={args.detections}", f"IMAGES_PER_GPU={args.batch_size}", *args.tf_set]
    config = tf_config(overrides + (["MIXED_PRECISION=mixed_bfloat16"] if args.precision == "bf16" else []), "infer")
    inputs = list_images(args.fields)
    names = class_names_for(config)
    result = {"library": f"mrcnn_tf (tensorflow {tf.__version__}, oneDNN {'on' if onednn_enabled() else 'off'}, "
                         f"policy {config.MIXED_PRECISION or 'float32'})",
              "input": "x".join(str(d) for d in config.IMAGE_SHAPE[:2]), "batch": config.BATCH_SIZE}
    with tempfile.TemporaryDirectory() as logs:
        model = MaskRCNN("inference", config, logs)
        with Image.open(inputs[0]) as image:
            first = np.asarray(image.convert("RGB"))
        model.detect([first] * config.BATCH_SIZE)  # the graph trace, untimed
        runs = [("plain", False)] + ([("overlays", True)] if args.overlays else [])
        for key, overlays in runs:
            output = os.path.join(args.output, key)
            started = time.perf_counter()
            summary = run_detect(model, inputs, output, names, overlays=overlays, echo=lambda line: None)
            seconds = time.perf_counter() - started
            result[key] = {"seconds": seconds, "images": summary["detected"],
                           "detections": sum(summary["counts"].values()), "mb": folder_mb(output)}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# ---------------------------------------------------------------------------------------- torchvision side
def rle_encoder():
    """(name, encode): `encode(masks)` gives the COCO RLE dicts of bool masks [N, H, W]."""
    import numpy as np

    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        mask_utils = None
    if mask_utils is not None:
        def encode(masks):
            rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8)) if len(masks) else []
            return [dict(rle, counts=rle["counts"].decode("ascii")) for rle in rles]

        return "pycocotools", encode

    def encode(masks):
        n, h, w = masks.shape
        rles = []
        for flat in masks.transpose(0, 2, 1).reshape(n, h * w):  # COCO runs go down the columns
            edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
            counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
            rles.append({"size": [h, w], "counts": ([0] if flat[0] else []) + counts})  # the first run is of 0s
        return rles

    return "numpy (uncompressed counts)", encode


def torch_worker(args):
    import contextlib
    import csv

    import torch
    import torchvision
    from PIL import Image
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.transforms.functional import pil_to_tensor

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)
    padding = {"size_divisible": args.size} if args.torch_pad_square else {}
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=CLASSES, min_size=args.size,
                                  max_size=args.size, rpn_pre_nms_top_n_test=PROPOSALS_INFER,
                                  rpn_post_nms_top_n_test=PROPOSALS_INFER, box_score_thresh=0.0,
                                  box_detections_per_img=args.detections, **padding).eval()
    inputs = sorted(p for p in pathlib.Path(args.fields).iterdir() if p.suffix.lower() == ".bmp")
    shapes = set()
    model.backbone.register_forward_pre_hook(lambda module, x: shapes.add("x".join(map(str, x[0].shape[-2:]))))
    rle_name, encode = rle_encoder()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()

    def read(path):
        with Image.open(path) as image:
            return pil_to_tensor(image.convert("RGB")).float() / 255

    def detect(tensor):
        with torch.no_grad(), autocast:
            return model([tensor])[0]

    detect(read(inputs[0]))  # warm-up, untimed
    output = pathlib.Path(args.output, "plain")
    output.mkdir(parents=True)
    model_seconds, detections, results, images = 0.0, 0, [], []
    started = time.perf_counter()
    with open(output / "detections.jsonl", "w") as journal, open(output / "counts.csv", "w", newline="") as counts:
        rows = csv.writer(counts)
        rows.writerow(["image"] + [f"class_{k}" for k in range(1, CLASSES)] + ["total"])
        for image_id, path in enumerate(inputs, 1):
            tensor = read(path)
            before = time.perf_counter()
            out = detect(tensor)
            model_seconds += time.perf_counter() - before
            masks = (out["masks"][:, 0] > MASK_THRESHOLD).numpy()
            boxes, scores = out["boxes"].float().tolist(), out["scores"].float().tolist()
            labels = out["labels"].tolist()
            records = [{"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score,
                        "segmentation": rle}
                       for label, (x1, y1, x2, y2), score, rle in zip(labels, boxes, scores, encode(masks))]
            height, width = tensor.shape[-2:]
            images.append({"id": image_id, "file_name": path.name, "height": height, "width": width})
            journal.write(json.dumps({**images[-1], "class_ids": labels, "results": records}) + "\n")
            journal.flush()
            rows.writerow([path.stem] + [labels.count(k) for k in range(1, CLASSES)] + [len(labels)])
            counts.flush()
            results.extend(records)
            detections += len(labels)
    (output / "detections.json").write_text(json.dumps(results))
    categories = [{"id": k, "name": f"class_{k}"} for k in range(1, CLASSES)]
    (output / "images.json").write_text(json.dumps({"images": images, "categories": categories}, indent=1))
    seconds = time.perf_counter() - started
    return {"library": f"torchvision {torchvision.__version__} (torch {torch.__version__}), RLE by {rle_name}",
            "input": ", ".join(sorted(shapes)), "batch": 1, "peak_rss_mb": peak_rss_mb(),
            "plain": {"seconds": seconds, "images": len(inputs), "detections": detections, "mb": folder_mb(output),
                      "model_seconds": model_seconds}}


# ------------------------------------------------------------------------------------------------- parent
def run_worker(python, library, args, fields, output, precision, env):
    command = [python, os.path.abspath(__file__), "--worker", library, "--precision", precision, "--fields", fields,
               "--output", output, "--threads", str(args.threads), "--size", str(args.size),
               "--detections", str(args.detections), "--batch-size", str(args.batch_size),
               *(["--overlays"] if args.overlays and library == "tf" and precision == "fp32" else []),
               *(["--torch-pad-square"] if args.torch_pad_square else []), *[f"--tf-set={s}" for s in args.tf_set]]
    print(f"  running {library} {precision} ...", file=sys.stderr, flush=True)
    return worker_result(command, library, env)


def rate(run):
    return run["images"] / run["seconds"]


def report(args, results, started, loads, write_seconds):
    print(f"bench/compare_detect_folder.py  date={started:%Y-%m-%d %H:%M}  cmd=python {' '.join(sys.argv)}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cpus, threads={args.threads}, isa={args.isa}, "
          f"load {loads[0]:.1f} -> {loads[1]:.1f}"
          + (f"; mrcnn_tf with {' '.join(args.tf_set)}" if args.tf_set else ""))
    print(f"folder: {args.images} synthetic 720x576 BMP fields (written in {write_seconds:.1f} s); work: ResNet-50 "
          f"FPN, {args.size} px, {PROPOSALS_INFER} proposals, score threshold 0, {args.detections} detections, masks > "
          f"{MASK_THRESHOLD}")
    for key in ("tf", "torch"):
        r = results[key]
        print(f"  {key:5s} {r['library']}; network input {r['input']}, batch {r['batch']}")
    for key, r in results.items():
        run = r["plain"]
        model = (f", model {run['model_seconds']:.1f} s ({100 * run['model_seconds'] / run['seconds']:.0f}%)"
                 if "model_seconds" in run else "")
        print(f"  {key:10s} {run['images']} images in {run['seconds']:7.1f} s = {rate(run):6.3f} images/s "
              f"({run['seconds'] / run['images']:.3f} s/image{model}), {run['detections'] / run['images']:.1f} "
              f"detections/image, {run['mb']:.2f} MiB written, peak RSS {r['peak_rss_mb']:.0f} MiB")
        if "overlays" in r:
            over = r["overlays"]
            print(f"  {key:10s} with overlays: {over['seconds']:7.1f} s = {rate(over):6.3f} images/s, "
                  f"{over['mb']:.2f} MiB written (no torchvision counterpart)")
    per_image = {key: r["plain"]["detections"] / r["plain"]["images"] for key, r in results.items()}
    if len(set(per_image.values())) > 1:
        print(f"  WARNING: detections per image differ ({per_image}): not the same work")
    pairs = [("tf", "torch")] + ([("tf bf16", "torch"), ("tf bf16", "torch bf16")] if args.bf16 else [])
    summary = []
    for ours, theirs in pairs:
        mine, other = precision_of(ours), precision_of(theirs)
        tf_rate, torch_rate = rate(results[ours]["plain"]), rate(results[theirs]["plain"])
        print(f"  folder mrcnn_tf {mine} / torchvision {other} = {torch_rate / tf_rate:.2f}x (seconds per image)")
        summary.append(f"{mine} {tf_rate:.3f} vs {other} {torch_rate:.3f} images/s = {torch_rate / tf_rate:.2f}x")
    square = ", torchvision padded square" if args.torch_pad_square else ""
    print(f"SUMMARY compare_detect_folder {started:%Y-%m-%d} threads={args.threads} isa={args.isa} images={args.images}"
          f" size={args.size} detections={args.detections} batch={args.batch_size}{square}"
          + "".join(f" {item}" for item in args.tf_set) + ": mrcnn_tf run_detect --no-overlays vs torchvision loop: "
          + "; ".join(summary) + f"; load {loads[0]:.1f}-{loads[1]:.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100,
                        help="fields in the folder (a multiple of --batch-size keeps mrcnn_tf's batches full)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=SIZE, help="the long side both scale a field to (a multiple of 64)")
    parser.add_argument("--detections", type=int, default=DETECTIONS, help="detections per field, both sides")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="mrcnn_tf's images per model call")
    parser.add_argument("--overlays", action="store_true", help="also time mrcnn_tf with overlays (fp32; not compared)")
    parser.add_argument("--torch-pad-square", action="store_true",
                        help="pad torchvision's input to size x size as mrcnn_tf does (size_divisible=--size)")
    parser.add_argument("--isa", default="native", choices=["native", "avx2"],
                        help="avx2: limit oneDNN (both) and ATen (torch) to AVX2 kernels")
    parser.add_argument("--torch-python", default=sys.executable, help="an interpreter with torch + torchvision")
    parser.add_argument("--tf-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Config override for the mrcnn_tf side (see compare_torchvision.py)")
    parser.add_argument("--bf16", action="store_true", help="also time both libraries in bfloat16")
    parser.add_argument("--worker", choices=["tf", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--fields", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bf16 and args.isa == "avx2":
        parser.error(BF16_AVX2_REFUSAL)
    if args.worker:
        result = (tf_worker if args.worker == "tf" else torch_worker)(args)
        print("RESULT " + json.dumps(result))
        return
    # The workers get this environment, not the one mrcnn_tf's import (for the fields) adds to.
    env = dict(os.environ, **isa_env(args.isa))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from detect_folder import write_fields

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        write_fields(pathlib.Path(tmp, "fields"), args.images)
        write_seconds = time.perf_counter() - began
        started, load_before = datetime.datetime.now(), os.getloadavg()[0]
        runs = [("tf", "fp32"), ("torch", "fp32")] + ([("tf", "bf16"), ("torch", "bf16")] if args.bf16 else [])
        results = {}
        for library, precision in runs:
            python = sys.executable if library == "tf" else args.torch_python
            output = os.path.join(tmp, f"{library}-{precision}")
            key = library if precision == "fp32" else f"{library} {precision}"
            results[key] = run_worker(python, library, args, os.path.join(tmp, "fields"), output, precision, env)
    report(args, results, started, (load_before, os.getloadavg()[0]), write_seconds)


if __name__ == "__main__":
    main()
