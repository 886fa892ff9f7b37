"""`MaskRCNN`: Matterport's model facade on Keras 3, plus its module-level helper names.

A Matterport notebook keeps working after changing the import::

    from mrcnn_tf import model as modellib
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=MODEL_DIR)
    model.load_weights(COCO_MODEL_PATH, by_name=True)
    r = model.detect([image], verbose=1)[0]   # rois, class_ids, scores, masks

Unlike Matterport, `detect` takes any number of images of any sizes: images are molded, grouped by
molded shape, run in batches of at most BATCH_SIZE through one compiled function (no retracing per
call), and the results come back one dict per image in input order.
"""
import collections
import datetime
import importlib
import os
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from mrcnn_tf.backend.plan import kernel_plan
from mrcnn_tf.engine.distribute import policy_name, precision_policy, strategy_scope
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.nets.graph import build_inference_graph, build_training_graph, image_input_shape
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors
from mrcnn_tf.ops.boxes import denorm_boxes, norm_boxes
from mrcnn_tf.ops.image import compose_image_meta, mold_image, parse_image_meta, resize_image, unmold_image
from mrcnn_tf.ops.masks import paste_mask

MODES = ("training", "inference")
# Checkpoint file names: mask_rcnn_<name>_<epoch>.weights.h5 (Keras 3 insists on .weights.h5);
# Matterport's .h5 names are recognised too so its checkpoints resume with the right epoch.
CHECKPOINT_RE = re.compile(r"mask_rcnn_(?P<name>[\w-]+?)_(?P<epoch>\d{4,})(\.weights)?\.h5$")
# Run folders: <name><YYYYmmddTHHMM>[SS][_N]. Only a checkpoint inside one is resumed in place.
RUN_DIR_RE = re.compile(r"[\w-]*\d{8}T\d{4}(\d{2})?(_\d+)?$")

# Matterport's model.py also exported these; they live elsewhere now and are imported on first use
# (PEP 562) so that `import mrcnn_tf.model` stays light and free of import cycles.
_LAZY_EXPORTS = {
    "load_image_gt": "mrcnn_tf.data.targets",
    "build_rpn_targets": "mrcnn_tf.data.targets",
    "generate_random_rois": "mrcnn_tf.data.roi_targets",
    "build_detection_targets": "mrcnn_tf.data.roi_targets",
    "DataGenerator": "mrcnn_tf.data.pipeline",
    "data_generator": "mrcnn_tf.data.generator",
    "BatchNorm": "mrcnn_tf.layers.batch_norm",
    "ProposalLayer": "mrcnn_tf.layers.proposal",
    "PyramidROIAlign": "mrcnn_tf.layers.roi_align",
    "DetectionTargetLayer": "mrcnn_tf.layers.detection_target",
    "detection_targets_graph": "mrcnn_tf.layers.detection_target",
    "DetectionLayer": "mrcnn_tf.layers.detection",
    "refine_detections_graph": "mrcnn_tf.layers.detection",
    "resnet_graph": "mrcnn_tf.nets.resnet",
    "identity_block": "mrcnn_tf.nets.resnet",
    "conv_block": "mrcnn_tf.nets.resnet",
    "build_rpn_model": "mrcnn_tf.nets.rpn",
    "rpn_graph": "mrcnn_tf.nets.rpn",
    "fpn_classifier_graph": "mrcnn_tf.nets.heads",
    "build_fpn_mask_graph": "mrcnn_tf.nets.heads",
    "norm_boxes_graph": "mrcnn_tf.ops.graph",
    "denorm_boxes_graph": "mrcnn_tf.ops.graph",
    "parse_image_meta_graph": "mrcnn_tf.ops.graph",
    "trim_zeros_graph": "mrcnn_tf.ops.graph",
    "batch_pack_graph": "mrcnn_tf.ops.graph",
    "apply_box_deltas_graph": "mrcnn_tf.ops.graph",
    "clip_boxes_graph": "mrcnn_tf.ops.graph",
    "overlaps_graph": "mrcnn_tf.ops.graph",
    "log2_graph": "mrcnn_tf.ops.graph",
    "smooth_l1_loss": "mrcnn_tf.nets.losses",
    "rpn_class_loss_graph": "mrcnn_tf.nets.losses",
    "mrcnn_class_loss_graph": "mrcnn_tf.nets.losses",
    "mrcnn_bbox_loss_graph": "mrcnn_tf.nets.losses",
    "mrcnn_mask_loss_graph": "mrcnn_tf.nets.losses",
}
# Names whose Matterport signature differs from the function they come from: name -> (module, attribute).
_RENAMED_EXPORTS = {
    # Matterport's rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox) takes the config first.
    "rpn_bbox_loss_graph": ("mrcnn_tf.nets.losses", "matterport_rpn_bbox_loss_graph"),
}

__all__ = ["MaskRCNN", "log", "compose_image_meta", "parse_image_meta", "mold_image", "unmold_image",
           "compute_backbone_shapes", *_LAZY_EXPORTS, *_RENAMED_EXPORTS]


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    if name in _RENAMED_EXPORTS:
        module, attribute = _RENAMED_EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def log(text, array=None):
    """Print `text`, and for an array its shape, min, max and dtype (Matterport's notebook helper)."""
    if array is not None:
        array = np.asarray(array)
        text = text.ljust(25) + f"shape: {str(array.shape):20}  "
        if array.size:
            text += f"min: {array.min():10.5f}  max: {array.max():10.5f}"
        else:
            text += f"min: {'':10}  max: {'':10}"
        text += f"  {array.dtype}"
    print(text)


def _check_pixel_range(image):
    """Refuse pixel values the network cannot have been trained on (it expects 0..255 RGB)."""
    if image.dtype.kind not in "biuf":
        raise MrcnnError(f"image of dtype {image.dtype}: give a uint8 RGB array (values 0..255)")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise MrcnnError("image holds NaN or infinite values: give a uint8 RGB array (values 0..255)")
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise MrcnnError(f"image values span {low:g}..{high:g}, outside 0..255: convert to 8-bit RGB first "
                         "(16-bit: image // 257; floats in [0, 1]: image * 255)")
    if image.dtype.kind == "f" and 0 < high <= 1:
        # Most likely skimage's img_as_float output: detecting on it sees a black image.
        warnings.warn(f"image is float with values in 0..{high:g}: detect expects 0..255; multiply it by 255",
                      stacklevel=5)


def _find_trainable_layer(layer):
    """The layer that owns the weights: TimeDistributed wrappers are unwrapped (recursively)."""
    while isinstance(layer, keras.layers.TimeDistributed):
        layer = layer.layer
    return layer


class MaskRCNN:
    """Mask R-CNN: the Keras model plus Matterport's molding, detection and training helpers.

    Args:
        mode: "training" or "inference".
        config: a `Config` (sub)class instance.
        model_dir: folder for training logs and checkpoints.

    Attributes:
        keras_model: the `keras.Model` (a `MaskRCNNTrainModel` in training mode).
        config, mode, model_dir: as given.
        epoch: epochs already trained (restored by `load_weights` from a checkpoint name).
        log_dir, checkpoint_path: this run's folder and its checkpoint file pattern.
        anchors: pixel anchors of the last image shape passed to `get_anchors`.
        typer: None, or the colour typer `detect` types with (Config.COLOUR_TYPING: `load_weights` loads the run's
            ``colour_typer.json`` beside a checkpoint in inference mode; set it to None for the class head's types).
    """

    def __init__(self, mode, config, model_dir):
        if mode not in MODES:
            raise MrcnnError(f"MaskRCNN(mode={mode!r}): use 'training' or 'inference'")
        self.mode = mode
        self.config = config
        self.model_dir = str(model_dir)
        self.epoch = 0
        self.anchors = None
        self.typer = None
        self._anchor_cache = {}
        self._predict_fn = None
        self._log_dir_is_ours = False  # True once resumed from, or trained into, by this object
        self.set_log_dir()
        self.keras_model = self.build(mode=mode, config=config)
        # Saved with every checkpoint's config: which kernels, and which precision ("auto" resolved), this run used.
        config.CPU_KERNELS = dict(kernel_plan(), precision=policy_name(config))

    # ------------------------------------------------------------------ building
    def build(self, mode, config):
        """Build the Keras model for `mode` (see docs/architecture.md "Graph contract").

        Returns:
            keras.Model: inference -> inputs [image, image_meta, anchors], a list of 7 outputs (8 with
            NUCLEUS_MASKS); training -> `MaskRCNNTrainModel` with 7 inputs (see `build_training_graph`) and a dict
            of outputs.
        """
        if mode not in MODES:
            raise MrcnnError(f"MaskRCNN.build(mode={mode!r}): use 'training' or 'inference'")
        self._predict_fn = None
        # MIXED_PRECISION is a global Keras policy: set while the layers are made, restored after.
        if mode == "inference":
            with precision_policy(config):
                inputs, outputs = build_inference_graph(config)
                return keras.Model(inputs, outputs, name="mask_rcnn")
        from mrcnn_tf.nets.train_model import MaskRCNNTrainModel

        # GPU_COUNT > 1: variables mirrored on every replica (Keras keeps the strategy for compile/fit).
        with precision_policy(config), strategy_scope(config):
            inputs, outputs = build_training_graph(config)
            return MaskRCNNTrainModel(inputs=inputs, outputs=outputs, name="mask_rcnn",
                                      loss_weights=dict(config.LOSS_WEIGHTS),
                                      weight_decay=float(config.WEIGHT_DECAY))

    # ------------------------------------------------------------------ anchors
    def get_anchors(self, image_shape):
        """Normalized anchors [A, 4] for a molded image shape (cached); pixel anchors go to `self.anchors`."""
        key = tuple(int(v) for v in image_shape[:2])
        if key not in self._anchor_cache:
            backbone_shapes = compute_backbone_shapes(self.config, image_shape)
            pixels = generate_pyramid_anchors(self.config.RPN_ANCHOR_SCALES, self.config.RPN_ANCHOR_RATIOS,
                                              backbone_shapes, self.config.BACKBONE_STRIDES,
                                              self.config.RPN_ANCHOR_STRIDE)
            self._anchor_cache[key] = (pixels, norm_boxes(pixels, key))
        self.anchors, normalized = self._anchor_cache[key]
        return normalized

    # ------------------------------------------------------------------ molding
    def _as_rgb(self, image):
        """`image` with IMAGE_CHANNEL_COUNT channels: grey is repeated, an alpha channel dropped."""
        image = np.asarray(image)
        channels = self.config.IMAGE_CHANNEL_COUNT
        if image.ndim == 2:
            image = np.repeat(image[..., None], channels, axis=-1)
        if image.ndim == 3 and image.shape[-1] == 4 and channels == 3:
            image = image[..., :3]
        if image.ndim != 3 or image.shape[-1] != channels:
            raise MrcnnError(f"image of shape {image.shape}: expected [H, W, {channels}] "
                             f"(Config.IMAGE_CHANNEL_COUNT = {channels})")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise MrcnnError(f"image of shape {image.shape} is empty: give an image at least 1x1 pixels")
        return image

    def _mold_one(self, image):
        """(molded image [h, w, C] float32, image meta [IMAGE_META_SIZE], window (y1, x1, y2, x2) px)."""
        config = self.config
        image = self._as_rgb(image)
        if image.dtype != np.uint8:
            _check_pixel_range(image)
        molded, window, scale, _, _ = resize_image(image, min_dim=config.IMAGE_MIN_DIM,
                                                   min_scale=config.IMAGE_MIN_SCALE, max_dim=config.IMAGE_MAX_DIM,
                                                   mode=config.IMAGE_RESIZE_MODE)
        if molded.shape[0] % 64 or molded.shape[1] % 64:
            raise MrcnnError(f"image of shape {image.shape} molds to {molded.shape[:2]} with IMAGE_RESIZE_MODE="
                             f"{config.IMAGE_RESIZE_MODE!r}: sides must be multiples of 64; use 'square' or 'pad64'")
        molded = mold_image(molded, config)
        meta = compose_image_meta(0, image.shape, molded.shape, window, scale,
                                  np.zeros([config.NUM_CLASSES], dtype=np.int32))
        return molded, meta, np.asarray(window)

    def mold_inputs(self, images):
        """Resize, pad and mean-subtract images for the network (Matterport's `mold_inputs`).

        Args:
            images: list of [H, W, C] images (RGB, any sizes that mold to one shape).

        Returns:
            molded_images [N, h, w, C] float32, image_metas [N, IMAGE_META_SIZE],
            windows [N, 4] int (pixel y1, x1, y2, x2 of the image inside the molded one).
        """
        molded = [self._mold_one(image) for image in images]
        shapes = {m[0].shape for m in molded}
        if len(shapes) > 1:
            raise MrcnnError(f"mold_inputs: images mold to different shapes {sorted(shapes)}; mold them one "
                             "at a time, or use detect(), which groups them")
        return (np.stack([m[0] for m in molded]), np.stack([m[1] for m in molded]),
                np.stack([m[2] for m in molded]))

    # ------------------------------------------------------------------ detection
    def unmold_detections(self, detections, mrcnn_mask, original_image_shape, image_shape, window, nucleus_mask=None):
        """Turn one image's network outputs into boxes, ids, scores and full-size masks.

        Args:
            detections: [D, 6] (y1, x1, y2, x2 normalized to the molded image, class_id, score);
                rows after the first class_id 0 are padding.
            mrcnn_mask: [D, mh, mw, NC] mask probabilities.
            original_image_shape: (H, W, C) of the image before resizing.
            image_shape: (h, w, C) of the molded image.
            window: (y1, x1, y2, x2) pixel box of the real image inside the molded one.
            nucleus_mask: optional [D, mh, mw, 1] nucleus probabilities (Config.NUCLEUS_MASKS).

        Returns:
            boxes int32 [N, 4] (y1, x1, y2, x2 pixels of the original image, y2/x2 exclusive),
            class_ids int32 [N], scores float32 [N], full_masks bool [H, W, N]. Boxes of zero area
            are dropped. With `nucleus_mask` a fifth, nucleus_masks bool [H, W, N]: unmolded as the
            masks, and inside them.
        """
        detections = np.asarray(detections)
        padding = np.where(detections[:, 4] == 0)[0]
        count = padding[0] if padding.size else detections.shape[0]
        boxes = detections[:count, :4].astype(np.float64)
        class_ids = detections[:count, 4].astype(np.int32)
        scores = detections[:count, 5].astype(np.float32)
        masks = np.asarray(mrcnn_mask)[np.arange(count), :, :, class_ids]

        # Boxes are normalized to the molded image; re-express them relative to the window (the
        # image without padding), which maps the window to (0, 0, 1, 1) = the original image.
        wy1, wx1, wy2, wx2 = norm_boxes(np.asarray(window, dtype=np.float64), image_shape[:2]).astype(np.float64)
        shift = np.array([wy1, wx1, wy1, wx1])
        scale = np.array([wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1])
        boxes = denorm_boxes((boxes - shift) / scale, original_image_shape[:2])

        keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
        boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]
        height, width = (int(v) for v in original_image_shape[:2])
        full_masks = np.zeros((height, width, len(boxes)), dtype=bool)
        for i in range(len(boxes)):
            paste_mask(full_masks[:, :, i], masks[i], boxes[i])  # unmold_mask, written into its box only
        if nucleus_mask is None:
            return boxes.astype(np.int32), class_ids, scores, full_masks
        nuclei = np.asarray(nucleus_mask)[:count, :, :, 0][keep]
        nucleus_masks = np.zeros_like(full_masks)
        for i in range(len(boxes)):
            region = paste_mask(nucleus_masks[:, :, i], nuclei[i], boxes[i])
            if region is not None:  # inside the cell's mask, which lies in the same box
                nucleus_masks[region + (i,)] &= full_masks[region + (i,)]
        return boxes.astype(np.int32), class_ids, scores, full_masks, nucleus_masks

    def predict_molded(self, molded_images, image_metas, anchors):
        """The inference graph's raw outputs for one molded batch (Matterport's output order: detections,
        mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois, rpn_class, rpn_bbox; with NUCLEUS_MASKS the nucleus masks
        eighth), through a tf.function traced once for all shapes (`trace_count` says how often it was)."""
        if self._predict_fn is None:
            model = self.keras_model

            @tf.function(input_signature=[
                tf.TensorSpec([None, *image_input_shape(self.config)], tf.float32, name="input_image"),
                tf.TensorSpec([None, self.config.IMAGE_META_SIZE], tf.float32, name="input_image_meta"),
                tf.TensorSpec([None, None, 4], tf.float32, name="input_anchors")])
            def predict(image, image_meta, input_anchors):
                outputs = model([image, image_meta, input_anchors], training=False)
                # Mixed precision leaves some heads in float16; the numpy side wants float32.
                return [tf.cast(o, tf.float32) for o in outputs]

            self._predict_fn = predict
        outputs = self._predict_fn(tf.constant(molded_images, tf.float32), tf.constant(image_metas, tf.float32),
                                   tf.constant(anchors, tf.float32))
        return [o.numpy() for o in outputs]

    def _run_batches(self, molded_images, image_metas, windows, original_shapes, verbose=0):
        """Detections for molded images that share one shape, BATCH_SIZE at a time."""
        self._require_mode("inference", "detect")
        image_shape = molded_images[0].shape
        anchors = self.get_anchors(image_shape)
        if verbose:
            log("molded_images", molded_images)
            log("image_metas", image_metas)
            log("anchors", anchors)
        results = []
        step = max(1, int(self.config.BATCH_SIZE))
        for start in range(0, len(molded_images), step):
            images = molded_images[start:start + step]
            batch_anchors = np.broadcast_to(anchors, (len(images),) + anchors.shape)
            outputs = self.predict_molded(images, image_metas[start:start + step], batch_anchors)
            detections, mrcnn_mask = outputs[0], outputs[3]
            nucleus = outputs[7] if len(outputs) > 7 else None  # Config.NUCLEUS_MASKS: the 8th output
            for j in range(len(images)):
                unmolded = self.unmold_detections(detections[j], mrcnn_mask[j], original_shapes[start + j],
                                                  image_shape, windows[start + j],
                                                  nucleus_mask=None if nucleus is None else nucleus[j])
                result = dict(zip(("rois", "class_ids", "scores", "masks", "nucleus_masks"), unmolded))
                results.append(result)
        return results

    def detect(self, images, verbose=0):
        """Detect instances in images of any sizes and any count.

        Args:
            images: list of [H, W, C] RGB images (a single [H, W, C] array is taken as one image).
            verbose: 1 prints the shapes/ranges of the molded inputs (Matterport's `log`).

        Returns:
            one dict per image, in input order: rois int32 [N, 4] (y1, x1, y2, x2 pixels, y2/x2
            exclusive), class_ids int32 [N], scores float32 [N], masks bool [H, W, N]; with
            Config.NUCLEUS_MASKS also nucleus_masks bool [H, W, N] (each inside its cell's mask). With a colour
            `typer` each cell's class_id is the typer's type from the colour inside its mask and its score the
            typer's probability of that type (`mrcnn_tf.inference.colour_typer.retype`).
        """
        self._require_mode("inference", "detect")
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        images = list(images)
        if verbose:
            log(f"Processing {len(images)} images")
            for image in images:
                log("image", image)
        molded = [self._mold_one(image) for image in images]
        groups = collections.defaultdict(list)
        for i, (m, _, _) in enumerate(molded):
            groups[m.shape].append(i)
        results = [None] * len(images)
        for indices in groups.values():
            outs = self._run_batches(np.stack([molded[i][0] for i in indices]),
                                     np.stack([molded[i][1] for i in indices]),
                                     [molded[i][2] for i in indices],
                                     [self._as_rgb(images[i]).shape for i in indices], verbose=verbose)
            for i, result in zip(indices, outs):
                results[i] = result
        if self.typer is not None:
            from mrcnn_tf.inference.colour_typer import retype

            results = [retype(result, image, self.typer) for result, image in zip(results, images)]
        return results

    _predict = predict_molded  # the name of earlier releases

    def trace_count(self):
        """How many times `predict_molded`'s graph was traced (1 after any number of `detect` calls)."""
        return 0 if self._predict_fn is None else int(self._predict_fn.experimental_get_tracing_count())

    def detect_molded(self, molded_images, image_metas, verbose=0):
        """Detect on images already molded (and of one shape); windows and sizes come from the metas.

        Args:
            molded_images: [N, h, w, C] float32 from `mold_image` / `load_image_gt`.
            image_metas: [N, IMAGE_META_SIZE].

        Returns:
            as `detect`, with coordinates in the original image described by each meta; types from the class head
            (the colour `typer` needs the original images: use `detect`).
        """
        self._require_mode("inference", "detect_molded")
        molded_images = np.asarray(molded_images, dtype=np.float32)
        image_metas = np.asarray(image_metas, dtype=np.float32)
        parsed = parse_image_meta(image_metas)
        if verbose:
            log(f"Processing {len(molded_images)} images")
        return self._run_batches(molded_images, image_metas, list(parsed["window"]),
                                 [tuple(s) for s in parsed["original_image_shape"]], verbose=verbose)

    # ------------------------------------------------------------------ logs and weights
    def set_log_dir(self, model_path=None):
        """Set `log_dir`, `checkpoint_path` and `epoch` (Matterport's layout, `.weights.h5` files).

        With a checkpoint path named ``mask_rcnn_<name>_<epoch>.weights.h5`` the run continues in
        that file's folder from that epoch. Otherwise a new folder ``<name><YYYYmmddTHHMM>`` under
        `model_dir` is chosen; a folder that already exists is never reused (``_2``, ``_3``, ...).
        """
        self.epoch = 0
        name = (self.config.NAME or "mask_rcnn").lower()
        path = os.path.abspath(str(model_path)) if model_path else ""
        match = CHECKPOINT_RE.fullmatch(os.path.basename(path))
        if match and RUN_DIR_RE.fullmatch(os.path.basename(os.path.dirname(path))):
            self.log_dir = os.path.dirname(path)
            # The file's number is the count of finished epochs: training resumes after it.
            self.epoch = int(match.group("epoch"))
            self._log_dir_is_ours = True
        else:
            self._log_dir_is_ours = False
            base = os.path.join(self.model_dir, f"{name}{datetime.datetime.now():%Y%m%dT%H%M}")
            self.log_dir, suffix = base, 1
            while os.path.exists(self.log_dir):
                suffix += 1
                self.log_dir = f"{base}_{suffix}"
        # Keras fills in {epoch}; Matterport's "*epoch*" placeholder becomes this format field.
        self.checkpoint_path = os.path.join(self.log_dir, f"mask_rcnn_{name}_{{epoch:04d}}.weights.h5")

    def find_last(self):
        """Path (str) of the newest checkpoint of this config's NAME under `model_dir`."""
        from mrcnn_tf.engine.checkpoints import find_last

        return str(find_last(self.model_dir, (self.config.NAME or "").lower() or None))

    def load_weights(self, filepath, by_name=False, exclude=None, verbose=1):
        """Load Matterport .h5 or our .weights.h5 weights; returns the loader's `LoadReport`.

        `exclude` (layer names) implies by_name, as in Matterport. Afterwards `set_log_dir(filepath)`
        so that training from one of our checkpoints resumes its folder and epoch count.

        With Config.COLOUR_TYPING in inference mode the run's colour typer beside `filepath` becomes `self.typer`
        (a one-line warning and None when the file is missing), so `detect` types as `mrcnn-tf detect` does.

        Raises:
            MrcnnError: the typer file is damaged or for another NUM_CLASSES (before any weight is loaded).
        """
        from mrcnn_tf.weights.matterport_h5 import load_weights

        typer = self.typer
        if self.mode == "inference" and getattr(self.config, "COLOUR_TYPING", False):
            from mrcnn_tf.inference.colour_typer import load_typer_beside

            typer = load_typer_beside(filepath, self.config.NUM_CLASSES,
                                      missing=lambda message: warnings.warn(message, stacklevel=4))  # the caller's line
        report = load_weights(self.keras_model, str(filepath), by_name=by_name, exclude=exclude, verbose=verbose)
        self.typer = typer
        self.set_log_dir(filepath)
        return report

    # ------------------------------------------------------------------ training
    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers, augmentation=None,
              custom_callbacks=None, no_augmentation_sources=None, **kwargs):
        """Train up to `epochs` (cumulative, from `self.epoch`) the layers matched by `layers`.

        `layers`: "heads", "3+", "4+", "5+", "all" or a regex over layer names. Extra keyword
        arguments (seed, verbose) go to `mrcnn_tf.engine.training.train`.
        """
        self._require_mode("training", "train")
        from mrcnn_tf.engine import training

        if not self._log_dir_is_ours and os.path.exists(self.log_dir):
            # Another run took this folder since set_log_dir() chose it: pick a fresh one.
            epoch = self.epoch
            self.set_log_dir()
            self.epoch = epoch
        self._log_dir_is_ours = True
        return training.train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
                              augmentation=augmentation, custom_callbacks=custom_callbacks,
                              no_augmentation_sources=no_augmentation_sources, **kwargs)

    def compile(self, learning_rate, momentum):
        """Compile the training model: OPTIMIZER (SGD with momentum by default), GRADIENT_CLIP_NORM, the losses."""
        self._require_mode("training", "compile")
        from mrcnn_tf.engine.training import compile_training_model

        compile_training_model(self.keras_model, self.config, learning_rate, momentum)

    def get_imagenet_weights(self):
        """Path of the keras.applications ImageNet weights for this BACKBONE (found or downloaded)."""
        from mrcnn_tf.weights.imagenet import get_imagenet_weights

        return str(get_imagenet_weights(architecture=self.config.BACKBONE))

    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1):
        """Make the layers whose names fully match `layer_regex` trainable, the others frozen."""
        from mrcnn_tf.engine import training

        return training.set_trainable(keras_model or self.keras_model, layer_regex, indent=indent, verbose=verbose)

    def find_trainable_layer(self, layer):
        """The layer that owns `layer`'s weights (TimeDistributed unwrapped)."""
        return _find_trainable_layer(layer)

    def get_trainable_layers(self):
        """Layers that own weights, TimeDistributed wrappers replaced by the layer they wrap."""
        found = []
        for layer in self.keras_model.layers:
            layer = _find_trainable_layer(layer)
            if layer.weights:
                found.append(layer)
        return found

    # ------------------------------------------------------------------ notebooks
    def ancestor(self, tensor, name, checked=None):
        """The tensor Matterport's notebooks find by TF1 op name upstream of `tensor`.

        Keras 3 keeps no TF1 graph, so the names that still mean something are served: a layer name
        ("rpn_class:0") gives that layer's output; the proposal layer's inner steps
        "ROI/pre_nms_anchors:0", "ROI/refined_anchors:0", "ROI/refined_anchors_clipped:0" and
        "ROI/rpn_non_max_suppression:0" (any TF version's spelling) give a stage object that
        `run_graph` computes on demand. Any other name raises `MrcnnError` saying what to ask for.

        Args:
            tensor: a tensor of `keras_model`, e.g. ``keras_model.get_layer("ROI").output``.
            name: the TF1 tensor name.
            checked: unused; Matterport's recursion argument, kept for its signature.

        Returns:
            a Keras tensor, or a `mrcnn_tf.inference.graph_inspection.GraphStage`.
        """
        from mrcnn_tf.inference.graph_inspection import find_ancestor

        return find_ancestor(self.keras_model, tensor, name)

    def run_graph(self, images, outputs, image_metas=None):
        """Values of intermediate tensors for `images` (Matterport's notebook helper).

        Args:
            images: list of [H, W, C] images of one molded shape; with `image_metas`, images already
                molded (resized, padded, mean-subtracted), as in Matterport.
            outputs: list of (name, tensor) pairs, the tensor a layer output of `keras_model` as is
                (e.g. ``model.keras_model.get_layer("input_image").output``; Keras 3 refuses raw tf ops
                such as ``tf.identity`` on it), a layer name, or a stage from `ancestor`.
            image_metas: [N, IMAGE_META_SIZE] of molded `images`.

        Returns:
            OrderedDict name -> numpy array (each also printed with `log`).
        """
        from mrcnn_tf.inference.graph_inspection import as_output, evaluate

        outputs = [(name, as_output(self.keras_model, name, item)) for name, item in outputs]
        if image_metas is None:
            molded_images, metas, _ = self.mold_inputs(images)
        else:
            molded_images, metas = np.asarray(images), np.asarray(image_metas)
        inputs = [molded_images.astype(np.float32), metas.astype(np.float32)]
        if self.mode == "inference":
            anchors = self.get_anchors(molded_images[0].shape)
            inputs.append(np.broadcast_to(anchors, (len(molded_images),) + anchors.shape).astype(np.float32))
        # In training mode only the image and its meta are fed, as Matterport did: a tensor that needs
        # the ground-truth inputs is an error.
        result = evaluate(self.keras_model, inputs, outputs)
        for name, value in result.items():
            log(name, value)
        return result

    def _require_mode(self, mode, what):
        if self.mode != mode:
            raise MrcnnError(f"MaskRCNN.{what} needs a model built with mode={mode!r} (this one is {self.mode!r})")

