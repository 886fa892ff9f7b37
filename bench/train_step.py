"""Training-step latency, peak memory and achieved GFLOP/s (ResNet-50 FPN, 512x512, batch 1).

    python bench/train_step.py                  # 2 threads, 5 timed steps
    python bench/train_step.py --runs 9 --xla   # also try jit_compile=True (Config.XLA)
    python bench/train_step.py --mixed-precision mixed_bfloat16

One `train_on_batch` of the training model (all layers trainable, frozen BatchNorm as Matterport's
default TRAIN_BN=False, SGD momentum + global-norm clipping, the five losses + L2 decay) on a fixed
synthetic 512x512 image with 12 instances; Matterport's training defaults otherwise
(POST_NMS_ROIS_TRAINING 2000, TRAIN_ROIS_PER_IMAGE 200, 81 classes). Ratios against torchvision come only
from bench/compare_torchvision.py (both timed in one run). MRCNN_TF_CONV_FILTER_GRAD=native|matmul compares
the kernel-gradient paths (ops/conv_filter_grad.py). FLOPs: the forward training graph counted by the TF profiler, times 3 for forward
+ backward (the usual estimate; the backward of a convolution costs about twice its forward).
"""
import argparse
import datetime
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from infer import (bench_config, graph_flops, header, load, peak_gflops,  # noqa: E402
                   peak_rss_mb, print_timings, rss_mb, set_threads, synthetic_image, timed)


def synthetic_batch(config, seed=0):
    """The 7 training inputs for one 512x512 image with disc-shaped instances."""
    import numpy as np

    from mrcnn_tf.data.targets import build_rpn_targets
    from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors
    from mrcnn_tf.ops.boxes import extract_bboxes
    from mrcnn_tf.ops.image import compose_image_meta, mold_image
    from mrcnn_tf.ops.masks import minimize_mask

    rng = np.random.default_rng(seed)
    size = int(config.IMAGE_SHAPE[0])
    image = synthetic_image(size, seed)
    yy, xx = np.mgrid[:size, :size]
    count = min(12, config.MAX_GT_INSTANCES)
    # Discs of radius 12-40 px at 512 px, scaled with the image (bench/first_step.py runs 64 px).
    margin, low, high = min(40, size // 8), max(3, 12 * size // 512), max(5, 40 * size // 512)
    masks = np.zeros((size, size, count), bool)
    for i in range(count):
        cy, cx, r = rng.integers(margin, size - margin), rng.integers(margin, size - margin), rng.integers(low, high)
        masks[..., i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    class_ids = rng.integers(1, config.NUM_CLASSES, size=count).astype(np.int32)
    boxes = extract_bboxes(masks)
    anchors = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                       compute_backbone_shapes(config, image.shape), config.BACKBONE_STRIDES,
                                       config.RPN_ANCHOR_STRIDE)
    rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors, class_ids, boxes, config, rng=rng)
    g = config.MAX_GT_INSTANCES
    ids = np.zeros(g, np.int32)
    ids[:count] = class_ids
    padded_boxes = np.zeros((g, 4), np.float32)
    padded_boxes[:count] = boxes
    mini = minimize_mask(boxes, masks, config.MINI_MASK_SHAPE)
    padded_masks = np.zeros((*mini.shape[:2], g), bool)
    padded_masks[..., :count] = mini
    meta = compose_image_meta(0, image.shape, image.shape, (0, 0, size, size), 1.0,
                              np.ones(config.NUM_CLASSES, np.int32))
    return [mold_image(image, config)[None].astype(np.float32), meta[None].astype(np.float32),
            rpn_match[None, :, None].astype(np.int32), rpn_bbox[None].astype(np.float32), ids[None],
            padded_boxes[None], padded_masks[None]]


def run(args):
    set_threads(args.threads)
    import tensorflow as tf

    from mrcnn_tf import model as modellib

    print(header("bench/train_step.py", args))
    rss_start = rss_mb()
    config = bench_config(mixed_precision=args.mixed_precision or False, size=args.size)
    batch = synthetic_batch(config)
    with tempfile.TemporaryDirectory() as logs:
        mrcnn = modellib.MaskRCNN(mode="training", config=config, model_dir=logs)
    model = mrcnn.keras_model
    mrcnn.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
    results = {"tf.function": timed(lambda: model.train_on_batch(batch), args.runs)}
    losses = model.train_on_batch(batch, return_dict=True)
    rss_peak = peak_rss_mb()
    if args.xla:
        model.compile(optimizer=model.optimizer, jit_compile=True)
        try:
            results["xla"] = timed(lambda: model.train_on_batch(batch), args.runs)
        except Exception as exc:  # XLA refuses the dynamic-shape ops (NMS, tf.where in the target layer)
            results["xla"] = f"not compilable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    forward = tf.function(lambda *x: model(list(x), training=True))
    flops = 3 * graph_flops(forward, *[tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in batch])
    peak = peak_gflops()
    print(f"losses after the timed steps: {', '.join(f'{k}={v:.3f}' for k, v in sorted(losses.items()))}")
    print(f"RSS MiB: start {rss_start:.0f}, peak through training steps {rss_peak:.0f}")
    print(f"step: {flops / 1e9:.1f} GFLOP (3x forward, TF profiler); machine float32 matmul peak {peak:.1f} GFLOP/s")
    print_timings(results, flops, peak, width=11)
    step = results["tf.function"][0]
    print(f"SUMMARY train_step {datetime.date.today()} threads={args.threads} size={args.size} "
          f"mp={args.mixed_precision or 'float32'}: step {step:.3f} s, {flops / step / 1e9:.1f} GFLOP/s of {peak:.1f} peak "
          f"({flops / step / 1e9 / peak:.0%}), peak RSS {rss_peak:.0f} MiB, load {load():.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--xla", action="store_true", help="also try the train step under jit_compile")
    parser.add_argument("--mixed-precision", default=None, choices=["mixed_float16", "mixed_bfloat16"])
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
