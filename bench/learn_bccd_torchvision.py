"""torchvision's Mask R-CNN from scratch on BCCD-WBC, scored like bench/learn_bccd.py: the peer's learning curve.

    pip install -e ".[compare]"                         # torch and torchvision beside mrcnn_tf
    python bench/learn_bccd_torchvision.py --minutes 15 --every 2.5 --out bench/out/bccd_tv
    python bench/learn_bccd_torchvision.py --data ../shared/data/tecom-wbc --min-size 240 --max-size 240 \
        --minutes 6 --every 1 --out bench/out/tecom_tv     # another lab's 120x120 crops, seen at twice their size

Trains `maskrcnn_resnet50_fpn` from random weights (BatchNorm trained, as torchvision does without pretrained
weights) on the 227 training fields of ../shared/data/bccd-wbc at 320x240 (min_size 240, max_size 320; --data,
--min-size and --max-size for another COCO-layout set), batch 2,
SGD with momentum 0.9 and weight decay 1e-4 after a linear warm-up, gradients clipped to norm --clip (as Matterport
clips at 5), random horizontal flips: a new user's recipe, close to the one issue 14 measured (SGD 0.01, mask mAP50
0.58, typing 0.58 after 15 minutes). At 0.01 without clipping the loss went to NaN within 192 steps here
(2026-12-07), hence --lr 0.005 and --clip 10 by default; a run whose loss stops being finite ends with one line.
Every --every training minutes (scoring excluded) it scores the 57 validation fields with mrcnn_tf's own `evaluate_dataset` (Matterport's mask
mAP50, COCO segm AP, typing accuracy), so its curve reads against bench/learn_bccd.py's point by point, in the same
minutes on the same machine. Training is by time here, not by steps: this is the peer's curve on this CPU.
"""
import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from learn_bccd import DEFAULT_DATA, confusion_lines, load  # noqa: E402


class TorchvisionDetector:
    """`detect` in Matterport's result format around a torchvision Mask R-CNN, for `evaluate_dataset`."""

    class config:  # evaluate_dataset reads BATCH_SIZE
        BATCH_SIZE = 1

    def __init__(self, model, torch):
        self.model, self.torch = model, torch

    def detect(self, images, verbose=0):
        torch = self.torch
        self.model.eval()
        results = []
        with torch.no_grad():
            for image in images:
                tensor = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float() / 255
                out = self.model([tensor])[0]
                boxes = out["boxes"].numpy()  # x1, y1, x2, y2 px
                masks = (out["masks"][:, 0].numpy() > 0.5).transpose(1, 2, 0)
                results.append({"rois": np.round(boxes[:, [1, 0, 3, 2]]).astype(np.int32),
                                "class_ids": out["labels"].numpy().astype(np.int32),
                                "scores": out["scores"].numpy().astype(np.float32), "masks": masks})
        self.model.train()
        return results


def training_pairs(dataset, torch):
    """(image tensor, target) per training field, decoded once (227 fields at 640x480: ~0.3 GB)."""
    from mrcnn_tf.utils import extract_bboxes

    pairs = []
    for image_id in dataset.image_ids:
        image = dataset.load_image(image_id)
        masks, class_ids = dataset.load_mask(image_id)
        keep = masks.reshape(-1, masks.shape[-1]).any(0)
        masks, class_ids = masks[..., keep], class_ids[keep]
        boxes = extract_bboxes(masks)[:, [1, 0, 3, 2]]  # y1, x1, y2, x2 -> torchvision's x1, y1, x2, y2
        target = {"boxes": torch.tensor(boxes.astype(np.float32)),
                  "labels": torch.from_numpy(class_ids.astype(np.int64)),
                  "masks": torch.from_numpy(masks.transpose(2, 0, 1).astype(np.uint8))}
        pairs.append((torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255, target))
    return pairs


def flipped(image, target):
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), dict(target, boxes=boxes, masks=target["masks"].flip(-1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--minutes", type=float, default=15.0, help="training minutes (scoring excluded)")
    parser.add_argument("--every", type=float, default=2.5, help="score every this many training minutes")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--clip", type=float, default=10.0, help="gradient norm clip (0: none)")
    parser.add_argument("--warmup", type=int, default=100, help="steps of linear warm-up")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out/bccd_tv")
    parser.add_argument("--min-size", type=int, default=240, help="torchvision's min_size (BCCD: 240, its height)")
    parser.add_argument("--max-size", type=int, default=320, help="torchvision's max_size (BCCD: 320, its width)")
    args = parser.parse_args(argv)

    import torch
    import torchvision
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from mrcnn_tf.evaluation.evaluate import evaluate_dataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, val_set = load(args.data, "train"), load(args.data, "val")
    pairs = training_pairs(train_set, torch)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=train_set.num_classes,
                                  min_size=args.min_size, max_size=args.max_size).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    print(f"bench/learn_bccd_torchvision.py {time.strftime('%Y-%m-%d %H:%M')}  cmd=python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cpus, {args.threads} threads, load {os.getloadavg()[0]:.1f}; torchvision "
          f"{torchvision.__version__} (torch {torch.__version__}); {len(pairs)} training / {val_set.num_images} "
          "validation fields")
    detector, curve = TorchvisionDetector(model, torch), []
    trained, steps, next_score, order = 0.0, 0, args.every, []
    while trained < args.minutes * 60:
        began = time.perf_counter()
        if len(order) < args.batch:
            order += list(rng.permutation(len(pairs)))
        batch = [pairs[i] for i in order[:args.batch]]
        del order[:args.batch]
        batch = [flipped(*pair) if rng.random() < 0.5 else pair for pair in batch]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (steps + 1) / max(1, args.warmup))
        losses = model([image for image, _ in batch], [target for _, target in batch])
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            sys.exit(f"learn_bccd_torchvision: the loss is {float(loss)} at step {steps + 1}: training diverged; "
                     "lower --lr or --clip")
        optimizer.zero_grad()
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        steps += 1
        trained += time.perf_counter() - began
        if trained >= next_score * 60 or trained >= args.minutes * 60:
            scores = evaluate_dataset(detector, val_set)
            point = {"steps": steps, "minutes": round(trained / 60, 2), "mAP50": scores["mAP50"], "AP": scores["AP"],
                     "accuracy": scores["accuracy"], "loss": float(loss), "confusion_matrix": scores["confusion_matrix"]}
            curve.append(point)
            print(f"  {point['minutes']:5.1f} min ({steps} steps)  held-out mAP50 {scores['mAP50']:.3f}  COCO AP "
                  f"{scores['AP']:.3f}  typing accuracy {scores['accuracy']:.3f}  loss {float(loss):.3f}", flush=True)
            next_score += args.every
    print("\n| training minutes (here) | steps | mask mAP50 | COCO segm AP | typing accuracy |")
    print("|---|---|---|---|---|")
    for p in curve:
        print(f"| {p['minutes']:.1f} | {p['steps']} | {p['mAP50']:.3f} | {p['AP']:.3f} | {p['accuracy']:.3f} |")
    print("\n".join(confusion_lines(curve[-1]["confusion_matrix"])))
    final = curve[-1]
    print(f"\nSUMMARY learn_bccd_torchvision {time.strftime('%Y-%m-%d')}: {final['steps']} steps in "
          f"{final['minutes']:.1f} training min, mAP50 {final['mAP50']:.3f}, accuracy {final['accuracy']:.3f}, "
          f"load {os.getloadavg()[0]:.1f}")
    (out / "curve.json").write_text(json.dumps({"args": vars(args), "curve": curve}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
