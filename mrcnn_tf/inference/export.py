"""Export an inference `MaskRCNN` as a TensorFlow SavedModel with a one-image serving signature.

The signature takes a uint8 RGB image ``[H, W, 3]`` of any size and returns Matterport's detect
dict: ``rois`` int32 [N, 4] (pixel y1, x1, y2, x2 of the input image, y2/x2 exclusive),
``class_ids`` int32 [N], ``scores`` float32 [N], ``masks`` bool [H, W, N] (and, from a model with
Config.NUCLEUS_MASKS, ``nucleus_masks`` bool [H, W, N], each inside its mask). Everything that
``model.detect`` does in numpy happens in the graph, with the same arithmetic:

- resize: ``skimage.transform.resize(order=1)`` is scipy's ``zoom(grid_mode=True)`` with
  "grid-constant" borders (samples beyond the edge blend with 0); `_resize_bilinear` computes the
  same half-pixel bilinear weights in float64 and rounds like ``resize_image``;
- padding, window, scale and image meta as ``resize_image`` / ``compose_image_meta``;
- anchors: the numpy anchors of ``model.get_anchors`` as a constant in "square" mode (one molded
  size), `generate_pyramid_anchors_graph` otherwise;
- unmolding: ``unmold_detections``' window arithmetic in float64, and each 28x28 mask resized
  into its box by interpolation matrices equivalent to ``unmold_mask``.

Load with ``tf.saved_model.load(path)`` and call ``.signatures["serving_default"](image=...)``, or
use `load_exported(path).detect(images)` for Matterport-style result dicts.

Colour typing (Config.COLOUR_TYPING): a model with a colour typer (`MaskRCNN.typer`) is exported with the typer in
the graph (`mrcnn_tf.inference.colour_typer_graph`, float64): the signature's ``class_ids`` and ``scores`` are the
typer's, as `MaskRCNN.detect` gives them (`retype`), and two more outputs, ``head_class_ids`` int32 [N] and
``head_scores`` float32 [N], are the class head's. The typer is also written as ``colour_typer.json`` beside
``saved_model.pb`` (format and features: `mrcnn_tf.inference.colour_typer`). `load_exported(path).detect` takes the
graph's types; a SavedModel exported before the graph typed (the file beside it, no ``head_class_ids``) is typed
by `retype` in numpy from that file.
"""
import pathlib
import shutil

import numpy as np
import tensorflow as tf

from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference.colour_typer import TYPER_FILE, ColourTyper, retype
from mrcnn_tf.inference.colour_typer_graph import GraphTyper
from mrcnn_tf.ops.graph import generate_pyramid_anchors_graph

SIGNATURE = "serving_default"
OUTPUT_KEYS = ("rois", "class_ids", "scores", "masks")
NUCLEUS_KEY = "nucleus_masks"  # the signature's fifth output when the model has the nucleus head
HEAD_KEYS = ("head_class_ids", "head_scores")  # the class head's, when class_ids and scores are the colour typer's


def _interpolation_matrices(out_size, in_size, starts, lengths):
    """[N, out_size, in_size] float64 weights of half-pixel bilinear resampling with zero borders.

    For box n, output index ``o`` reads input coordinate ``(o - start + 0.5) * in_size / length - 0.5``;
    the two neighbouring input cells share the weight and a neighbour outside ``[0, in_size)``
    contributes 0 (scipy's "grid-constant" mode, which skimage's resize uses). Rows with
    ``o - start`` outside ``[0, length)`` are zero, which pastes the resized mask into its box.

    Args:
        out_size: int, rows (or columns) of the full image.
        in_size: int, rows (or columns) of the mask.
        starts, lengths: [N] box start and extent along this axis, in pixels.
    """
    starts = tf.cast(starts, tf.float64)[:, None]
    lengths = tf.cast(lengths, tf.float64)[:, None]
    local = tf.cast(tf.range(out_size), tf.float64)[None, :] - starts
    coordinate = (local + 0.5) * (tf.cast(in_size, tf.float64) / lengths) - 0.5
    low = tf.floor(coordinate)
    fraction = (coordinate - low)[..., None]
    low = tf.cast(low, tf.int32)
    # one_hot of an index outside [0, in_size) is an all-zero row: exactly the zero border.
    weights = (tf.one_hot(low, in_size, dtype=tf.float64) * (1.0 - fraction)
               + tf.one_hot(low + 1, in_size, dtype=tf.float64) * fraction)
    inside = tf.logical_and(local >= 0, local < lengths)
    return weights * tf.cast(inside, tf.float64)[..., None]


def _axis_weights(out_size, in_size):
    """Neighbour indices (into the input padded by one zero cell each side) and weights per output cell."""
    coordinate = ((tf.cast(tf.range(out_size), tf.float64) + 0.5)
                  * (tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)) - 0.5)
    low = tf.floor(coordinate)
    fraction = coordinate - low
    low = tf.cast(low, tf.int32)
    # Index shift by one for the zero padding; anything further out also reads a zero cell.
    return (tf.clip_by_value(low + 1, 0, in_size + 1), tf.clip_by_value(low + 2, 0, in_size + 1),
            1.0 - fraction, fraction)


def _resize_bilinear(image, height, width):
    """``skimage.transform.resize(image, (height, width), order=1, preserve_range=True)``, rounded
    and clipped back to uint8 as ``resize_image`` does.

    The four neighbours are summed as scipy's zoom does, ((x * wy) * wx) in row-major neighbour
    order, so that values landing exactly on .5 round the same way.
    """
    shape = tf.shape(image)
    padded = tf.pad(tf.cast(image, tf.float64), [[1, 1], [1, 1], [0, 0]])
    y0, y1, wy0, wy1 = _axis_weights(height, shape[0])
    x0, x1, wx0, wx1 = _axis_weights(width, shape[1])
    wy0, wy1 = wy0[:, None, None], wy1[:, None, None]
    wx0, wx1 = wx0[None, :, None], wx1[None, :, None]
    top, bottom = tf.gather(padded, y0, axis=0), tf.gather(padded, y1, axis=0)
    resized = (tf.gather(top, x0, axis=1) * wy0 * wx0 + tf.gather(top, x1, axis=1) * wy0 * wx1
               + tf.gather(bottom, x0, axis=1) * wy1 * wx0 + tf.gather(bottom, x1, axis=1) * wy1 * wx1)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _pad_to_64(size):
    extra = tf.math.floormod(64 - tf.math.floormod(size, 64), 64)
    return extra // 2, extra - extra // 2


class DetectionModule(tf.Module):
    """A `tf.Module` holding the inference Keras model and a one-image detection function.

    Args:
        mrcnn: an inference-mode `MaskRCNN` (its config, keras_model and colour `typer` are used).

    Call arguments (``detect``):
        image: uint8 [H, W, 3] RGB image, any H and W.

    Returns:
        dict with rois int32 [N, 4], class_ids int32 [N], scores float32 [N], masks bool [H, W, N]; with
        the nucleus head (Config.NUCLEUS_MASKS) also nucleus_masks bool [H, W, N]. With a colour typer class_ids and
        scores are the typer's, and head_class_ids int32 [N] and head_scores float32 [N] the class head's.
    """

    def __init__(self, mrcnn):
        super().__init__(name="mrcnn_detection_module")
        if mrcnn.mode != "inference":
            raise MrcnnError("export needs MaskRCNN(mode='inference', ...): build an inference model")
        config = mrcnn.config
        self.mode = str(config.IMAGE_RESIZE_MODE)
        if self.mode == "crop":
            raise MrcnnError("IMAGE_RESIZE_MODE 'crop' is for training only: export with --set "
                             "IMAGE_RESIZE_MODE=pad64 (or square)")
        self.keras_model = mrcnn.keras_model
        self.min_dim = int(config.IMAGE_MIN_DIM or 0)
        self.max_dim = int(config.IMAGE_MAX_DIM or 0)
        self.min_scale = float(config.IMAGE_MIN_SCALE or 0)
        self.num_classes = int(config.NUM_CLASSES)
        self.nucleus = bool(getattr(config, "NUCLEUS_MASKS", False))
        self.mean_pixel = tf.constant(np.asarray(config.MEAN_PIXEL, dtype=np.float32))
        self.anchor_args = (list(config.RPN_ANCHOR_SCALES), list(config.RPN_ANCHOR_RATIOS),
                            list(config.BACKBONE_STRIDES), int(config.RPN_ANCHOR_STRIDE))
        typer = getattr(mrcnn, "typer", None)
        self.typer = None if typer is None else GraphTyper(typer)
        self.square_anchors = None
        if self.mode == "square":
            # One molded size: use exactly the anchors model.detect uses.
            self.square_anchors = tf.constant(mrcnn.get_anchors(config.IMAGE_SHAPE).astype(np.float32))
        self.detect = tf.function(self._detect, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, "image")])

    # ------------------------------------------------------------------ molding
    def _scale(self, height, width):
        h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
        scale = tf.constant(1.0, tf.float64)
        if self.mode == "none":
            return scale
        if self.min_dim:
            scale = tf.maximum(scale, self.min_dim / tf.minimum(h, w))  # scale up only
        if self.min_scale:
            scale = tf.maximum(scale, self.min_scale)
        if self.mode == "square" and self.max_dim:
            longest = tf.maximum(h, w)
            scale = tf.where(tf.round(longest * scale) > self.max_dim, self.max_dim / longest, scale)
        return scale

    def mold(self, image):
        """uint8 [H, W, 3] -> (molded float32 [1, h, w, 3], meta float32 [1, META], window int32 [4])."""
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        scale = self._scale(height, width)
        new_h = tf.cast(tf.round(tf.cast(height, tf.float64) * scale), tf.int32)
        new_w = tf.cast(tf.round(tf.cast(width, tf.float64) * scale), tf.int32)
        resized = tf.cond(tf.equal(scale, 1.0), lambda: image, lambda: _resize_bilinear(image, new_h, new_w))
        if self.mode == "square":
            top, left = (self.max_dim - new_h) // 2, (self.max_dim - new_w) // 2
            bottom, right = self.max_dim - new_h - top, self.max_dim - new_w - left
        elif self.mode == "pad64":
            (top, bottom), (left, right) = _pad_to_64(new_h), _pad_to_64(new_w)
        else:  # none: detect refuses sides that are not multiples of 64; so does the graph
            top = bottom = left = right = tf.constant(0, tf.int32)
            tf.debugging.assert_equal(tf.math.floormod(tf.stack([new_h, new_w]), 64), 0, message=(
                "IMAGE_RESIZE_MODE 'none' needs image sides that are multiples of 64"))
        padded = tf.pad(resized, [[top, bottom], [left, right], [0, 0]])
        molded = tf.cast(padded, tf.float32) - self.mean_pixel
        window = tf.stack([top, left, top + new_h, left + new_w])
        molded_shape = tf.shape(padded)
        meta = tf.concat([
            tf.zeros([1], tf.float32),
            tf.cast(tf.stack([height, width, 3, molded_shape[0], molded_shape[1], 3]), tf.float32),
            tf.cast(window, tf.float32), tf.cast(scale, tf.float32)[None], tf.zeros([self.num_classes], tf.float32)],
            axis=0)
        return molded[None], meta[None], window

    def _anchors(self, molded_shape):
        if self.square_anchors is not None:
            return self.square_anchors
        return generate_pyramid_anchors_graph(self.anchor_args[0], self.anchor_args[1], molded_shape,
                                              self.anchor_args[2], self.anchor_args[3])

    # ------------------------------------------------------------------ unmolding
    def unmold(self, detections, mrcnn_mask, original_shape, molded_shape, window, nucleus_mask=None):
        """``MaskRCNN.unmold_detections`` in the graph (float64 box maths, same rounding); with
        `nucleus_mask` [D, mh, mw, 1] a fifth result, the nucleus masks bool [H, W, N] inside the masks."""
        class_ids = tf.cast(detections[:, 4], tf.int32)
        count = tf.reduce_min(tf.concat([tf.where(tf.equal(class_ids, 0))[:, 0],
                                         tf.shape(detections, out_type=tf.int64)[:1]], axis=0))
        boxes = tf.cast(detections[:count, :4], tf.float64)
        class_ids, scores = class_ids[:count], detections[:count, 5]
        masks = tf.gather(tf.transpose(mrcnn_mask[:count], [0, 3, 1, 2]), class_ids, batch_dims=1)

        molded = tf.cast(molded_shape, tf.float64)
        norm_scale = tf.stack([molded[0] - 1, molded[1] - 1, molded[0] - 1, molded[1] - 1])
        # numpy's norm_boxes returns float32: round the window the same way before using it.
        norm_window = tf.cast(tf.cast((tf.cast(window, tf.float64) - [0.0, 0.0, 1.0, 1.0]) / norm_scale,
                                      tf.float32), tf.float64)
        shift = tf.stack([norm_window[0], norm_window[1], norm_window[0], norm_window[1]])
        span = tf.stack([norm_window[2] - norm_window[0], norm_window[3] - norm_window[1]])
        boxes = (boxes - shift) / tf.concat([span, span], axis=0)
        original = tf.cast(original_shape, tf.float64)
        boxes = tf.round(boxes * tf.stack([original[0] - 1, original[1] - 1, original[0] - 1, original[1] - 1])
                         + [0.0, 0.0, 1.0, 1.0])
        keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
        boxes = tf.cast(tf.boolean_mask(boxes, keep), tf.int32)
        class_ids, scores = tf.boolean_mask(class_ids, keep), tf.boolean_mask(scores, keep)
        masks = self._paste_masks(tf.boolean_mask(masks, keep), boxes, original_shape)
        if nucleus_mask is None:
            return boxes, class_ids, scores, masks
        nuclei = tf.boolean_mask(nucleus_mask[:count, :, :, 0], keep)
        return boxes, class_ids, scores, masks, tf.logical_and(self._paste_masks(nuclei, boxes, original_shape), masks)

    @staticmethod
    def _paste_masks(masks, boxes, original_shape):
        """[N, mh, mw] mask scores -> bool [H, W, N]: each resized into its box, thresholded at 0.5."""
        rows = _interpolation_matrices(original_shape[0], tf.shape(masks)[1], boxes[:, 0], boxes[:, 2] - boxes[:, 0])
        cols = _interpolation_matrices(original_shape[1], tf.shape(masks)[2], boxes[:, 1], boxes[:, 3] - boxes[:, 1])
        values = tf.matmul(tf.matmul(rows, tf.cast(masks, tf.float64)), cols, transpose_b=True)  # [N, H, W]
        # skimage returns float32 for a float32 mask: threshold at that precision.
        return tf.transpose(tf.cast(values, tf.float32) >= 0.5, [1, 2, 0])

    # ------------------------------------------------------------------ the signature
    def _detect(self, image):
        molded, meta, window = self.mold(image)
        molded_shape = tf.shape(molded)[1:3]
        anchors = self._anchors(molded_shape)[None]
        outputs = self.keras_model([molded, meta, anchors], training=False)
        detections, mrcnn_mask = tf.cast(outputs[0][0], tf.float32), tf.cast(outputs[3][0], tf.float32)
        nucleus_mask = tf.cast(outputs[7][0], tf.float32) if self.nucleus else None
        unmolded = self.unmold(detections, mrcnn_mask, tf.shape(image)[:2], molded_shape, window,
                               nucleus_mask=nucleus_mask)
        outputs = dict(zip(OUTPUT_KEYS + (NUCLEUS_KEY,), unmolded))
        if self.typer is not None:  # retype on the original image, as MaskRCNN.detect does
            outputs.update(zip(HEAD_KEYS, (outputs["class_ids"], outputs["scores"])))
            outputs["class_ids"], outputs["scores"] = self.typer.type_cells(image, outputs["masks"])
        return outputs


def export_saved_model(mrcnn, output_dir, force=False):
    """Write a SavedModel of `mrcnn` (inference mode) with the ``serving_default`` signature; with a colour typer
    (`mrcnn.typer`) the signature types the cells by it (and gives the class head's as `HEAD_KEYS`), and the typer
    is written as `TYPER_FILE` beside it too.

    Args:
        mrcnn: an inference `MaskRCNN` with its weights loaded.
        output_dir: folder to create.
        force: replace `output_dir` if it exists; otherwise an existing non-empty folder is an error.

    Returns:
        pathlib.Path of the SavedModel folder.
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        if not force:
            raise MrcnnError(f"{output_dir} already exists: choose another --output or pass --force to replace it")
        if output_dir.is_dir():
            shutil.rmtree(output_dir)
        else:
            output_dir.unlink()
    module = DetectionModule(mrcnn)
    signature = module.detect.get_concrete_function()
    tf.saved_model.save(module, str(output_dir), signatures={SIGNATURE: signature})
    if getattr(mrcnn, "typer", None) is not None:
        mrcnn.typer.save(output_dir / TYPER_FILE)  # for consumers who read the typer itself (format: colour_typer)
    return output_dir


class ExportedModel:
    """A loaded SavedModel with Matterport's ``detect(images)`` interface (numpy results).

    Args:
        path: a folder written by `export_saved_model`.

    Attributes:
        typer: the colour typer exported beside the SavedModel (`TYPER_FILE`), or None. `detect` types as
            `MaskRCNN.detect` does: with the graph's own types when the signature has them (`typed_in_graph`) and
            `typer` is still the one loaded, else by `retype` in numpy with `typer` (an export from before the graph
            typed). Set it to None for the class head's types (a graph-typed export whose file is gone loads
            None and keeps the graph's types).
        typed_in_graph: whether the signature's class_ids and scores are the colour typer's (it has `HEAD_KEYS`).
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        if not (self.path / "saved_model.pb").is_file():
            raise MrcnnError(f"{self.path}: not a SavedModel folder (no saved_model.pb); run `mrcnn-tf export`")
        self.module = tf.saved_model.load(str(self.path))
        self.signature = self.module.signatures[SIGNATURE]
        typer_file = self.path / TYPER_FILE
        self.typer = ColourTyper.load(typer_file) if typer_file.is_file() else None
        self.typed_in_graph = all(key in self.signature.structured_outputs for key in HEAD_KEYS)
        self._graph_typer = self.typer  # the typer the graph holds (None when the JSON file is gone)

    def detect(self, images, verbose=0):
        """One dict per uint8 RGB image: rois, class_ids, scores, masks (and nucleus_masks when exported
        with them), as `MaskRCNN.detect`, typed by the exported colour `typer` when there is one."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        results = []
        for image in images:
            out = self.signature(image=tf.constant(np.asarray(image, dtype=np.uint8)))
            result = {key: out[key].numpy() for key in OUTPUT_KEYS + (NUCLEUS_KEY,) if key in out}
            if self.typed_in_graph and self.typer is self._graph_typer:
                results.append(result)  # typed in the graph already
                continue
            if self.typed_in_graph:  # the class head's, then retyped by another typer if one was set
                result["class_ids"], result["scores"] = (out[key].numpy() for key in HEAD_KEYS)
            results.append(result if self.typer is None else retype(result, image, self.typer))
        return results


def load_exported(path):
    """`ExportedModel` for a SavedModel folder written by `export_saved_model`."""
    return ExportedModel(path)
