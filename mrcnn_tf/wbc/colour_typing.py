"""Types each detected cell by the colour inside its predicted mask (Config.COLOUR_TYPING): fitting the typer.

On BCCD-WBC the network finds and outlines every white cell but its class head, trained from random
weights on 230 cells, calls most Eosinophils Neutrophils; the colour statistics inside the outline tell them apart
(red-orange granules against pale ones). A 5-type softmax regression, fitted on the training cells' hand-drawn
masks, types each cell from

- "colour": 19 statistics of the whole cell (mean and spread of RGB, HSV and Lab, log area): it types the
  validation cells better than the class head;
- "colour+compartments" (the default): those 19, the same 18 colour statistics of the nucleus
  and of the cytoplasm apart, and the nucleus's share of the cell. The nucleus is the part of the mask beyond an
  Otsu split along a Lab colour direction (`NUCLEUS_DIRECTION`, or one fitted on the dataset's own nucleus masks):
  an Eosinophil's granules are in its cytoplasm, whose colour the whole-cell mean dilutes with the nucleus's.
  It types both the training cells (cross-validated) and the validation cells better than "colour"
  (measured: bench/RESULTS.md).

`mrcnn-tf train` fits a `ColourTyper` (`fit_colour_typer`) after training when the config asks for it and writes it
beside the checkpoints (`TYPER_FILE`). The typer's inference half (features, `ColourTyper`, `retype`) lives in
`mrcnn_tf.inference.colour_typer`, below the model: `MaskRCNN.load_weights` loads the file beside a checkpoint and
`MaskRCNN.detect` types with it, so `mrcnn-tf evaluate`, `detect` and a Python user get the same types. A typed
detection keeps the network's box and mask; its class id is the typer's and its score the typer's probability of
that class. The names below stay importable from here.
"""
import numpy as np

# The typer's inference half, re-exported under this module's earlier names.
from mrcnn_tf.inference.colour_typer import (COMPARTMENT_FEATURE_NAMES, DEFAULT_FEATURE_SET, FEATURE_NAMES,
                                             FEATURE_SETS, L2_CHOICES, NUCLEUS_DIRECTION, TYPER_FILE, ColourTyper,
                                             _colour_features, cell_pixels, check_feature_set, colour_features,
                                             compartment_features, fit_softmax_weights, load_typer_beside,
                                             nucleus_pixels, otsu_split, pixel_compartment_features, pixel_spaces,
                                             retype, softmax, split_compartment_features, typer_path)

__all__ = ["COMPARTMENT_FEATURE_NAMES", "DEFAULT_FEATURE_SET", "FEATURE_NAMES", "FEATURE_SETS", "L2_CHOICES",
           "NUCLEUS_DIRECTION", "TYPER_FILE", "ColourTyper", "cell_pixels", "check_feature_set", "colour_features",
           "compartment_features", "fit_softmax_weights", "nucleus_pixels", "otsu_split", "pixel_compartment_features",
           "pixel_spaces", "retype", "softmax", "split_compartment_features", "fit_nucleus_direction",
           "fit_colour_typer", "ColourTypedModel", "typed_model"]


def fit_nucleus_direction(lab_nucleus, lab_cytoplasm):
    """Unit [3] Lab direction separating nucleus pixels (above) from cytoplasm pixels: Fisher's discriminant.

    Args:
        lab_nucleus, lab_cytoplasm: [P, 3] CIE Lab pixels of each compartment.
    """
    lab_nucleus, lab_cytoplasm = np.asarray(lab_nucleus, np.float64), np.asarray(lab_cytoplasm, np.float64)
    within = np.cov(lab_nucleus.T) + np.cov(lab_cytoplasm.T) + 1e-6 * np.eye(3)
    direction = np.linalg.solve(within, lab_nucleus.mean(0) - lab_cytoplasm.mean(0))
    return direction / np.linalg.norm(direction)


def fit_colour_typer(dataset, feature_set=DEFAULT_FEATURE_SET, **kwargs):
    """A `ColourTyper` fitted on the hand-drawn masks of every cell of a prepared `Dataset` (crowd regions left out).

    With "colour+compartments" the nucleus direction is fitted on the dataset's own nucleus masks when it has them
    (`CocoDataset` with a ``nucleus`` segmentation on every annotation, as BCCD-WBC), else `NUCLEUS_DIRECTION`.
    """
    check_feature_set(feature_set)  # before reading the dataset
    own_nuclei = feature_set != "colour" and bool(getattr(dataset, "has_nucleus", False))
    cells, class_ids, lab_nucleus, lab_cytoplasm = [], [], [], []
    for image_id in dataset.image_ids:
        masks, ids = dataset.load_mask(image_id)
        if not len(ids):
            continue
        image = dataset.load_image(image_id)
        nuclei = dataset.load_nucleus_mask(image_id)[0] if own_nuclei else None
        for i in np.flatnonzero(np.asarray(ids) > 0):  # a crowd region (negative id, COCO's iscrowd) is no cell
            cells.append(cell_pixels(image, masks[:, :, i]))
            class_ids.append(int(ids[i]))
            if own_nuclei:  # every 4th pixel is plenty for a 3x3 covariance, and converts to Lab 4x faster
                lab = pixel_spaces(cells[-1][::4])[2]
                inside = nuclei[:, :, i][masks[:, :, i]][::4]
                lab_nucleus.append(lab[inside])
                lab_cytoplasm.append(lab[~inside])
    direction, source = NUCLEUS_DIRECTION, "default (BCCD-WBC's stain)"
    if own_nuclei and sum(map(len, lab_nucleus)) > 3 and sum(map(len, lab_cytoplasm)) > 3:
        direction = fit_nucleus_direction(np.concatenate(lab_nucleus), np.concatenate(lab_cytoplasm))
        source = f"fitted on the nucleus masks of {len(cells)} training cells"
    if feature_set == "colour":
        features = [_colour_features(pixels) for pixels in cells]
    else:
        features = [pixel_compartment_features(pixels, direction) for pixels in cells]
    return ColourTyper.fit(np.array(features).reshape(-1, len(FEATURE_SETS[feature_set])), class_ids,
                           dataset.class_names, feature_set=feature_set, nucleus_direction=direction,
                           nucleus_source=source, **kwargs)


class ColourTypedModel:
    """A model whose `detect` types the cells with a `ColourTyper`; every other attribute is the model's.

    For models without a typer of their own: a `MaskRCNN` takes the typer as `MaskRCNN.typer` instead (`typed_model`
    sets it), so that its results are typed once.
    """

    def __init__(self, model, typer):
        self.model, self.typer = model, typer

    def __getattr__(self, name):
        if name in ("model", "typer"):  # not set yet (copy, pickle): no recursion through self.model
            raise AttributeError(name)
        return getattr(self.model, name)

    def detect(self, images, verbose=0):
        # One array is one image (a grey [H, W] one too), a list or a stacked [N, H, W, 3] array is several.
        batch = [images] if isinstance(images, np.ndarray) and images.ndim in (2, 3) else list(images)
        return [retype(r, image, self.typer) for r, image in zip(self.model.detect(batch, verbose=verbose), batch)]


def typed_model(model, checkpoint, echo=None):
    """`model` typed by colour if its config asks for it and the run's `TYPER_FILE` is beside `checkpoint`.

    A `MaskRCNN` (anything with a `typer` attribute) is returned itself with `typer` set (`MaskRCNN.load_weights` has
    already done so); another model is wrapped in `ColourTypedModel`.
    """
    if not getattr(model.config, "COLOUR_TYPING", False):
        return model
    typer = load_typer_beside(checkpoint, model.config.NUM_CLASSES, missing=echo and (lambda m: echo(f"Warning: {m}")))
    if typer is None:
        return model
    if echo:
        echo(f"Types from {typer_path(checkpoint)} ({typer.feature_set} inside each predicted mask; fitted on "
             f"{typer.cells} cells)")
    if hasattr(model, "typer") and not isinstance(model, ColourTypedModel):
        model.typer = typer
        return model
    return ColourTypedModel(model, typer)
