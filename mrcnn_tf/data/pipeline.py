"""`DataGenerator`: the training-input pipeline as a `keras.utils.PyDataset` (Matterport's data_generator).

Keras 3 moved workers and prefetching from `fit` to the dataset; this class yields the seven graph
inputs of the training model (docs/architecture.md "Graph contract"), seeded so that a batch is a
function of (seed, epoch, batch index) alone, whatever the number of workers or their timing.
"""
import math

import keras
import numpy as np

from mrcnn_tf.data.dataset import check_nucleus_masks
from mrcnn_tf.data.image_cache import cache_for
from mrcnn_tf.data.mosaic import load_mosaic_gt
from mrcnn_tf.data.sampling import RepeatFactorOrder, image_class_ids, repeat_factors
from mrcnn_tf.data.roi_targets import generate_random_rois
from mrcnn_tf.data.targets import build_rpn_targets, load_image_gt
from mrcnn_tf.errors import DatasetError
from mrcnn_tf.ops.anchors import compute_backbone_shapes, generate_pyramid_anchors
from mrcnn_tf.ops.image import mold_image


class DataGenerator(keras.utils.PyDataset):
    """Batches of Mask R-CNN training inputs, for `fit` (training) or validation.

    Each item is ``(x,)``: a 1-tuple holding ``x``, a tuple of seven numpy arrays in Matterport's order.
    Keras reads a 1-tuple as "inputs only, no targets", so ``train_step(data)`` receives ``data`` with
    ``x, _, _ = keras.utils.unpack_x_y_sample_weight(data)`` (or ``(x,) = data``); the losses are computed
    from x inside the model. ``x`` is:

        images          float32 [B, H, W, 3]  molded (MEAN_PIXEL subtracted)
        image_meta      float32 [B, IMAGE_META_SIZE]
        rpn_match       int32   [B, A, 1]     1 / -1 / 0 per anchor (A anchors of the molded image shape)
        rpn_bbox        float32 [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4]
        gt_class_ids    int32   [B, MAX_GT_INSTANCES]          zero-padded
        gt_boxes        float32 [B, MAX_GT_INSTANCES, 4]       pixels (y1, x1, y2, x2), zero-padded
        gt_masks        bool    [B, mh, mw, MAX_GT_INSTANCES]  MINI_MASK_SHAPE with USE_MINI_MASK, else H, W

    With ``random_rois > 0`` an eighth array follows: ``rpn_rois`` float32 [B, random_rois, 4], whole
    pixels (for ``USE_RPN_ROIS = False``; the model's ``input_roi``). With Config.NUCLEUS_MASKS one more array comes
    last: ``gt_nucleus_masks`` bool, the layout of gt_masks (each cell's nucleus; the model's
    ``input_gt_nucleus_masks``). Images without instances are skipped (the next image in the order takes
    their place); images with more than MAX_GT_INSTANCES are randomly sub-sampled.

    Order and randomness: the image order of each pass over the dataset is a permutation seeded by
    (seed, pass) (no shuffling with ``shuffle=False``), and every random draw for an image (crop, augmentation,
    anchor sampling) comes from a generator seeded by (seed, epoch, position) (epoch left out when neither
    shuffling nor augmenting, so validation batches repeat exactly). Keras calls `on_epoch_end`,
    which advances the epoch; pass ``shuffle=False`` to ``fit`` so Keras does not also shuffle batch
    indices with Python's unseeded `random`. For validation use ``shuffle=False, augmentation=None``: the
    batches are then the same every epoch.

    Args:
        dataset: a prepared `Dataset`.
        config: a `Config`.
        shuffle: shuffle the image order every pass.
        augmentation: imgaug augmenter or None (see `augment.lisc_augmentation`).
        augment: Matterport's old flag (random horizontal flips).
        random_rois: if > 0, also yield that many random ROIs per image.
        batch_size: images per batch (default config.BATCH_SIZE).
        steps: batches per epoch (default: one pass, ceil(images / batch_size)); an epoch may span passes.
        seed: seed of the order and of all random draws (None: a random one).
        no_augmentation_sources: dataset sources whose images are never augmented.
        mosaic_tiles: k > 1 makes every image a k x k mosaic of the next k * k images of the stream, each
            cropped around its cells (data/mosaic.py); default Config.MOSAIC_TILES when shuffling, else 1.
        workers, use_multiprocessing, max_queue_size: as `keras.utils.PyDataset` (workers > 1 prefetch
            in threads or processes; with workers = 1 tf.data prefetches).
    """

    def __init__(self, dataset, config, shuffle=True, augmentation=None, augment=False, random_rois=0,
                 batch_size=None, steps=None, seed=0, no_augmentation_sources=None, workers=1,
                 use_multiprocessing=False, max_queue_size=10, mosaic_tiles=None):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.dataset = dataset
        self.config = config
        self.shuffle = bool(shuffle)
        self.augmentation = augmentation
        self.augment = bool(augment)
        self.random_rois = int(random_rois)
        self.batch_size = int(batch_size or config.BATCH_SIZE)
        # seed=None: a fresh random stream (still repeatable within the run: the drawn seed is kept).
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self.no_augmentation_sources = set(no_augmentation_sources or ())
        self.epoch = 0
        if mosaic_tiles is None:
            mosaic_tiles = getattr(config, "MOSAIC_TILES", 1) if self.shuffle else 1
        self.mosaic_tiles = int(mosaic_tiles)
        # Images known to have no instance (a verified LiscDataset records class_ids) never enter the order.
        self.image_ids = np.array([i for i in dataset.image_ids
                                   if dataset.image_info[i].get("class_ids", None) != []], dtype=np.int64)
        if self.image_ids.size == 0:
            raise DatasetError("the dataset has no image with an instance: check the masks (or call "
                               "dataset.prepare() after loading)")
        check_nucleus_masks(dataset, getattr(config, "NUCLEUS_MASKS", False))  # at once, not in the first batch
        self.steps = int(steps) if steps else math.ceil(self.image_ids.size / self.batch_size)
        self._anchors = {}
        # Loaded and resized images by id between epochs (Config.IMAGE_CACHE_MB; data/image_cache.py).
        self.image_cache = cache_for(config)
        # Class-balanced passes over the training images (Config.REPEAT_FACTOR_THRESHOLD > 0, shuffled only).
        self._repeat_order = None
        self.repeat_factors = None  # per image of `image_ids` when repeat-factor sampling is on
        threshold = float(getattr(config, "REPEAT_FACTOR_THRESHOLD", 0.0) or 0.0)
        if self.shuffle and threshold > 0:
            factors = repeat_factors([image_class_ids(dataset, i) for i in self.image_ids], threshold)
            self._repeat_order = RepeatFactorOrder(self.image_ids, factors, self.seed)
            self.repeat_factors = factors

    # ------------------------------------------------------------------ PyDataset API
    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    def set_epoch(self, epoch):
        """Continue the seeded stream at `epoch` (when resuming training from a checkpoint)."""
        self.epoch = int(epoch)

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range 0..{self.steps - 1}")
        return (self.inputs(index),)

    # ------------------------------------------------------------------ batches
    def anchors(self, image_shape):
        """Pixel anchors [A, 4] for a molded image shape (cached; the order the RPN head expects)."""
        key = tuple(int(s) for s in image_shape[:2])
        if key not in self._anchors:
            shapes = compute_backbone_shapes(self.config, key)
            self._anchors[key] = generate_pyramid_anchors(self.config.RPN_ANCHOR_SCALES, self.config.RPN_ANCHOR_RATIOS,
                                                          shapes, self.config.BACKBONE_STRIDES,
                                                          self.config.RPN_ANCHOR_STRIDE)
        return self._anchors[key]

    def _image_at(self, position):
        """Internal image id at a position of the epoch's stream (passes over the dataset back to back)."""
        return self._stream_image(self._stream_position(position))

    def _stream_position(self, position):
        """Position in the whole run's stream of a position in this epoch's."""
        return self.epoch * self.steps * self.batch_size + position

    def _stream_image(self, stream):
        """Internal image id at a position of the whole run's stream."""
        n = self.image_ids.size
        if self._repeat_order is not None:
            return self._repeat_order.image_at(stream)
        pass_index, offset = divmod(stream, n)
        if not self.shuffle:
            return int(self.image_ids[offset])
        order = np.random.default_rng([self.seed, pass_index]).permutation(n)
        return int(self.image_ids[order[offset]])

    def sample(self, position):
        """Training targets of the image at `position` of this epoch's stream, or None if it has no instance.

        Returns:
            dict with image, image_meta, class_ids, boxes, masks, rpn_match, rpn_bbox (and rpn_rois; and
            nucleus_masks with Config.NUCLEUS_MASKS).
        """
        config = self.config
        nucleus = bool(getattr(config, "NUCLEUS_MASKS", False))
        # Draws vary by epoch for training; a validation generator (no shuffle, no augmentation) gives the
        # same batches, RPN anchor samples included, every epoch so its losses are comparable.
        varying = self.shuffle or self.augment or self.augmentation is not None
        rng = np.random.default_rng([self.seed, self.epoch if varying else 0, position, 1])
        if self.mosaic_tiles > 1:
            # Mosaic i holds the stream's images k*k*i .. k*k*i + k*k - 1: each pass still shows every image.
            tiles = self.mosaic_tiles ** 2
            stream = self._stream_position(position)
            image_ids = [self._stream_image(stream * tiles + j) for j in range(tiles)]
            image, meta, class_ids, boxes, masks, *nuclei = load_mosaic_gt(
                self.dataset, config, image_ids, self.mosaic_tiles, self._augmentation_for, augment=self.augment,
                use_mini_mask=config.USE_MINI_MASK, rng=rng, cache=self.image_cache, nucleus_masks=nucleus)
        else:
            image_id = self._image_at(position)
            image, meta, class_ids, boxes, masks, *nuclei = load_image_gt(
                self.dataset, config, image_id, augment=self.augment, augmentation=self._augmentation_for(image_id),
                use_mini_mask=config.USE_MINI_MASK, rng=rng, cache=self.image_cache, nucleus_masks=nucleus)
        if not np.any(class_ids > 0):
            return None
        if class_ids.shape[0] > config.MAX_GT_INSTANCES:
            keep = np.sort(rng.choice(class_ids.shape[0], config.MAX_GT_INSTANCES, replace=False))
            class_ids, boxes, masks = class_ids[keep], boxes[keep], masks[:, :, keep]
            nuclei = [n[:, :, keep] for n in nuclei]
        rpn_match, rpn_bbox = build_rpn_targets(image.shape, self.anchors(image.shape), class_ids, boxes, config,
                                                rng=rng)
        out = dict(image=image, image_meta=meta, class_ids=class_ids, boxes=boxes, masks=masks,
                   rpn_match=rpn_match, rpn_bbox=rpn_bbox)
        if self.random_rois:
            out["rpn_rois"] = generate_random_rois(image.shape, self.random_rois, class_ids, boxes, rng=rng)
        if nucleus:
            out["nucleus_masks"] = nuclei[0]
        return out

    def _augmentation_for(self, image_id):
        source = self.dataset.image_info[image_id]["source"]
        return None if source in self.no_augmentation_sources else self.augmentation

    def inputs(self, index):
        """The input tuple of batch `index` (see the class docstring)."""
        config = self.config
        n, b = self.image_ids.size, self.batch_size
        samples, position = [], index * b
        # Scan forward from the batch's first position; an image left without instances (e.g. all cells
        # cropped away) gives its slot to the next one, as Matterport's generator does.
        limit = position + b + n
        while len(samples) < b:
            if position >= limit:
                raise DatasetError(f"batch {index}: no image with instances found in {n} tries; check the masks "
                                   "and that the augmentation or crop does not remove every cell")
            sample = self.sample(position)
            position += 1
            if sample is not None:
                samples.append(sample)
        shape = samples[0]["image"].shape
        if any(s["image"].shape != shape for s in samples):
            raise DatasetError(f"batch {index}: images of different molded shapes "
                               f"{sorted({s['image'].shape for s in samples})}; use IMAGE_RESIZE_MODE 'square' "
                               "or 'crop', or batch size 1")
        m = config.MAX_GT_INSTANCES
        mask_shape = samples[0]["masks"].shape[:2]
        images = mold_image(np.stack([s["image"] for s in samples]), config).astype(np.float32)
        image_meta = np.stack([s["image_meta"] for s in samples]).astype(np.float32)
        rpn_match = np.stack([s["rpn_match"] for s in samples])[:, :, None].astype(np.int32)
        rpn_bbox = np.stack([s["rpn_bbox"] for s in samples]).astype(np.float32)
        gt_class_ids = np.zeros((b, m), dtype=np.int32)
        gt_boxes = np.zeros((b, m, 4), dtype=np.float32)
        gt_masks = np.zeros((b,) + tuple(mask_shape) + (m,), dtype=bool)
        for i, s in enumerate(samples):
            k = s["class_ids"].shape[0]
            gt_class_ids[i, :k] = s["class_ids"]
            gt_boxes[i, :k] = s["boxes"]
            gt_masks[i, :, :, :k] = s["masks"]
        x = (images, image_meta, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks)
        if self.random_rois:
            x = x + (np.stack([s["rpn_rois"] for s in samples]).astype(np.float32),)
        if "nucleus_masks" in samples[0]:
            gt_nucleus_masks = np.zeros_like(gt_masks)
            for i, s in enumerate(samples):
                gt_nucleus_masks[i, :, :, :s["class_ids"].shape[0]] = s["nucleus_masks"]
            x = x + (gt_nucleus_masks,)
        return x
