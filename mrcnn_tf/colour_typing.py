"""Types each detected cell by the colour inside its predicted mask (Config.COLOUR_TYPING).

On BCCD-WBC the network finds and outlines every white cell (Dice 0.93) but its class head, trained from random
weights on 230 cells, calls most Eosinophils Neutrophils; the colour statistics inside the outline tell them apart
(red-orange granules against pale ones): a 5-type softmax regression on 19 such statistics, fitted on the
training cells' hand-drawn masks, typed the validation cells at 0.883 on the network's masks against the class
head's 0.817, and 0.867 in the packaged recipe (bench/RESULTS.md, "Typing by colour inside the predicted masks",
"The recipe with colour typing").

`mrcnn-tf train` fits a `ColourTyper` after training when the config asks for it and writes it beside the
checkpoints (`TYPER_FILE`); `mrcnn-tf evaluate` and `detect` then take the types from it (`typed_model`). The
network's detections, boxes, masks and scores are kept; only `class_ids` change.
"""
import json
import pathlib

import numpy as np

from mrcnn_tf.errors import MrcnnError

TYPER_FILE = "colour_typer.json"  # beside the checkpoints of a run
FEATURE_NAMES = tuple(f"{stat} {channel}" for space in (("R", "G", "B"), ("H", "S", "V"), ("L*", "a*", "b*"))
                      for stat in ("mean", "std") for channel in space) + ("log area",)
L2_CHOICES = (0.001, 0.01, 0.1, 1.0)


def colour_features(image, mask):
    """[19] float64: mean and standard deviation of RGB (0-1), HSV and CIE Lab over the mask, then log pixel count.

    Args:
        image: uint8 [H, W, 3] RGB (an alpha channel is ignored; a grey [H, W] image counts as R = G = B).
        mask: bool [H, W]. An empty mask gives zeros (and log area 0).
    """
    from skimage import color

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(len(FEATURE_NAMES))
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    pixels = image[mask][:, :3]
    pixels = np.repeat(pixels, 3, axis=1) if pixels.shape[1] == 1 else pixels
    rgb = pixels.astype(np.float64)[None] / 255.0  # [1, P, 3]: only the cell's pixels
    features = []
    for pixels in (rgb[0], color.rgb2hsv(rgb)[0], color.rgb2lab(rgb)[0]):
        features += list(pixels.mean(0)) + list(pixels.std(0))
    features.append(np.log(mask.sum()))
    return np.array(features)


def _softmax(logits):
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _fit_weights(z, labels, num_types, l2, steps=4000, rate=0.5):
    """Multinomial logistic regression by full-batch gradient descent on standardised features z [N, F]."""
    weights, bias = np.zeros((z.shape[1], num_types)), np.zeros(num_types)
    onehot = np.eye(num_types)[labels]
    for _ in range(steps):
        grad = (_softmax(z @ weights + bias) - onehot) / len(labels)
        weights -= rate * (z.T @ grad + l2 * weights)
        bias -= rate * grad.sum(0)
    return weights, bias


class ColourTyper:
    """A softmax regression from `colour_features` to the cell types (class ids 1..K-1).

    Args:
        class_names: the model's class names, index 0 the background.
        mean, scale: [F] feature standardisation.
        weights: [F, K-1]; bias: [K-1].
        l2: the L2 factor it was fitted with; cv_accuracy: its cross-validated accuracy on the training cells.
    """

    def __init__(self, class_names, mean, scale, weights, bias, l2, cv_accuracy=None, cells=0):
        self.class_names = [str(n) for n in class_names]
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.weights, self.bias = np.asarray(weights, np.float64), np.asarray(bias, np.float64)
        self.l2, self.cv_accuracy, self.cells = float(l2), cv_accuracy, int(cells)

    @classmethod
    def fit(cls, features, class_ids, class_names, l2_choices=L2_CHOICES, folds=5, seed=0):
        """Fit on training cells; the L2 factor is the one with the best `folds`-fold cross-validated accuracy.

        Args:
            features: [N, F] `colour_features` of the cells; class_ids: [N] their types (1..K-1).
        """
        features, class_ids = np.asarray(features, np.float64), np.asarray(class_ids, np.int64)
        num_types = len(class_names) - 1
        if len(class_ids) < 2 or np.any(class_ids < 1) or np.any(class_ids > num_types):
            raise MrcnnError(f"colour typing needs at least 2 training cells with types 1..{num_types}; got "
                             f"{len(class_ids)} cells (types {sorted(set(class_ids.tolist()))}): add annotated "
                             "cells, or turn it off with --set COLOUR_TYPING=false")
        mean, scale = features.mean(0), features.std(0) + 1e-9
        z, labels = (features - mean) / scale, class_ids - 1
        fold_of = np.random.default_rng(seed).permutation(len(labels)) % max(2, min(folds, len(labels)))
        best = None
        for l2 in l2_choices:
            correct = 0
            for fold in np.unique(fold_of):
                train, held = fold_of != fold, fold_of == fold
                w, b = _fit_weights(z[train], labels[train], num_types, l2)
                correct += int(((z[held] @ w + b).argmax(1) == labels[held]).sum())
            if best is None or correct > best[0]:
                best = (correct, l2)
        weights, bias = _fit_weights(z, labels, num_types, best[1])
        return cls(class_names, mean, scale, weights, bias, best[1], best[0] / len(labels), len(labels))

    def probabilities(self, features):
        """[N, K-1] type probabilities (column j is class id j + 1)."""
        features = np.asarray(features, np.float64).reshape(-1, len(self.mean))
        return _softmax(((features - self.mean) / self.scale) @ self.weights + self.bias)

    def predict(self, features):
        """[N] int class ids (1..K-1)."""
        return self.probabilities(features).argmax(1).astype(np.int32) + 1

    def to_dict(self):
        return {"format": "mrcnn_tf colour typer 1", "features": list(FEATURE_NAMES), "class_names": self.class_names,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias.tolist(), "l2": self.l2, "cv_accuracy": self.cv_accuracy, "cells": self.cells}

    @classmethod
    def from_dict(cls, values, source="colour typer"):
        try:
            typer = cls(values["class_names"], values["mean"], values["scale"], values["weights"], values["bias"],
                        values["l2"], values.get("cv_accuracy"), values.get("cells", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise MrcnnError(f"{source}: not a colour typer file ({exc!r}); delete it, or retrain to write it "
                             "again") from None
        k, f = len(typer.class_names) - 1, len(FEATURE_NAMES)
        if typer.mean.shape != (f,) or typer.scale.shape != (f,) or typer.weights.shape != (f, k) \
                or typer.bias.shape != (k,):
            raise MrcnnError(f"{source}: its arrays do not fit {f} features and {k} types; delete it, or retrain "
                             "to write it again")
        return typer

    def save(self, path):
        from mrcnn_tf.checkpoints import atomic_write_text

        atomic_write_text(pathlib.Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path):
        try:
            values = json.loads(pathlib.Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise MrcnnError(f"{path}: cannot read the colour typer ({exc}); delete it, or retrain to write it "
                             "again") from None
        return cls.from_dict(values, source=str(path))


def fit_colour_typer(dataset, **kwargs):
    """A `ColourTyper` fitted on the hand-drawn masks of every cell of a prepared `Dataset`."""
    features, class_ids = [], []
    for image_id in dataset.image_ids:
        masks, ids = dataset.load_mask(image_id)
        if len(ids):
            image = dataset.load_image(image_id)
            features += [colour_features(image, masks[:, :, i]) for i in range(len(ids))]
            class_ids += [int(c) for c in ids]
    return ColourTyper.fit(np.array(features).reshape(-1, len(FEATURE_NAMES)), class_ids, dataset.class_names,
                           **kwargs)


def retype(result, image, typer):
    """A copy of one `detect` result with `class_ids` from `typer` on the colour inside each predicted mask."""
    result = dict(result)
    masks = result["masks"]
    if masks.shape[-1]:
        features = np.stack([colour_features(image, masks[:, :, i]) for i in range(masks.shape[-1])])
        result["class_ids"] = typer.predict(features).astype(np.asarray(result["class_ids"]).dtype)
    return result


class ColourTypedModel:
    """A `MaskRCNN` whose `detect` types the cells with a `ColourTyper`; every other attribute is the model's."""

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
    """`model` typed by colour if its config asks for it and the run's `TYPER_FILE` is beside `checkpoint`."""
    if not getattr(model.config, "COLOUR_TYPING", False):
        return model
    path = pathlib.Path(checkpoint).parent / TYPER_FILE
    if not path.is_file():
        if echo:
            echo(f"Warning: COLOUR_TYPING is on but {path} is missing: types come from the network's class head")
        return model
    typer = ColourTyper.load(path)
    if len(typer.class_names) != model.config.NUM_CLASSES:
        raise MrcnnError(f"{path}: its {len(typer.class_names)} classes do not match the model's NUM_CLASSES="
                         f"{model.config.NUM_CLASSES}; delete it, or retrain to write it again")
    if echo:
        echo(f"Types from {path} (colour inside each predicted mask; fitted on {typer.cells} cells)")
    return ColourTypedModel(model, typer)
