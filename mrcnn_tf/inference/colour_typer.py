"""The colour typer at inference: a cell's colour features inside its mask, `ColourTyper`, and `retype`.

With Config.COLOUR_TYPING a run's `TYPER_FILE` (``colour_typer.json``, beside its checkpoints) holds a softmax
regression from colour statistics inside a cell's mask to its type. `MaskRCNN.load_weights` loads the file beside a
checkpoint into `MaskRCNN.typer` (`load_typer_beside`), and `MaskRCNN.detect` then retypes each detection with it:
its ``class_ids`` become the typer's choice and its ``scores`` the typer's probability of that type; boxes, masks and
the detections' order stay the network's. `export_saved_model` types in the SavedModel's graph with the same
arithmetic (`mrcnn_tf.inference.colour_typer_graph`) and writes the file beside it. Fitting the typer on a dataset
is the application's (`mrcnn_tf.wbc.colour_typing`).

The features (names in `FEATURE_SETS`), for a consumer who applies the file without this package:

- "colour": 19 statistics of the whole cell: mean and population standard deviation over the mask's pixels of RGB
  (0-1), HSV (skimage's ``rgb2hsv``) and CIE Lab (skimage's ``rgb2lab``, D65), then log pixel count;
- "colour+compartments": those 19, the same 18 statistics over the nucleus and over the cytoplasm apart, and the
  nucleus's share of the cell. The nucleus is the mask's pixels whose Lab colour projected on the file's
  ``nucleus_direction`` lies above `otsu_split` (exact Otsu: no histogram) of the projections.

Then ``z = (features - mean) / scale``, ``p = softmax(z @ weights + bias)``; the type is ``argmax(p) + 1`` (an index
into ``class_names``) and its score ``max(p)``.
"""
import json
import pathlib

import numpy as np

from mrcnn_tf.config import COLOUR_TYPING_FEATURE_SETS
from mrcnn_tf.errors import MrcnnError

TYPER_FILE = "colour_typer.json"  # beside the checkpoints of a run
_STATISTICS = tuple(f"{stat} {channel}" for space in (("R", "G", "B"), ("H", "S", "V"), ("L*", "a*", "b*"))
                    for stat in ("mean", "std") for channel in space)
FEATURE_NAMES = _STATISTICS + ("log area",)  # the "colour" set: the whole cell
COMPARTMENT_FEATURE_NAMES = (FEATURE_NAMES + tuple(f"nucleus {name}" for name in _STATISTICS)
                             + tuple(f"cytoplasm {name}" for name in _STATISTICS) + ("nucleus share",))
FEATURE_SETS = dict(zip(COLOUR_TYPING_FEATURE_SETS, (FEATURE_NAMES, COMPARTMENT_FEATURE_NAMES)))  # names: Config
DEFAULT_FEATURE_SET = "colour+compartments"
# Unit direction in CIE Lab (L*, a*, b*) along which nucleus pixels lie above cytoplasm pixels: Fisher's
# discriminant of the nucleus and cytoplasm pixels of the 230 BCCD-WBC training cells (a Giemsa-type stain: the
# nucleus is bluer, lower b*). Used when the training set has no nucleus masks of its own to fit one.
NUCLEUS_DIRECTION = (0.108, -0.346, -0.932)
L2_CHOICES = (0.001, 0.01, 0.1, 1.0)


def check_feature_set(feature_set):
    """Raise a one-line MrcnnError unless `feature_set` is a key of `FEATURE_SETS`."""
    if feature_set not in FEATURE_SETS:
        raise MrcnnError(f"colour typer feature set {feature_set!r} is unknown: use one of {', '.join(FEATURE_SETS)}")


def cell_pixels(image, mask):
    """[P, 3] the mask's RGB pixels, in the image's dtype (an alpha channel is dropped; grey counts as R = G = B)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    pixels = image[np.asarray(mask, bool)][:, :3]
    return np.repeat(pixels, 3, axis=1) if pixels.shape[1] == 1 else pixels


def pixel_spaces(pixels):
    """RGB (0-1), HSV and Lab of uint8 [P, 3] pixels: three [P, 3] float64 arrays."""
    from skimage import color

    rgb = np.asarray(pixels).astype(np.float64)[None] / 255.0  # [1, P, 3]: only the cell's pixels
    return rgb[0], color.rgb2hsv(rgb)[0], color.rgb2lab(rgb)[0]


def _statistics(spaces, keep=None):
    """[18]: mean and standard deviation of each channel of each space over the pixels `keep` (zeros if none)."""
    if keep is not None:
        spaces = [pixels[keep] for pixels in spaces]
    if not len(spaces[0]):
        return np.zeros(len(_STATISTICS))
    return np.concatenate([np.concatenate([pixels.mean(0), pixels.std(0)]) for pixels in spaces])


def otsu_split(values):
    """Otsu's threshold on a 1-D sample, exact (no histogram): the t maximising the between-class variance of
    {v <= t} and {v > t}, t one of the sample's values. None when fewer than two distinct values."""
    values = np.sort(np.asarray(values, np.float64).ravel())
    if len(values) < 2 or values[0] == values[-1]:
        return None
    n = len(values)
    below = np.arange(1, n)  # counts below each split after position i
    sums = np.cumsum(values)[:-1]
    mean_below, mean_above = sums / below, (values.sum() - sums) / (n - below)
    between = below * (n - below) * (mean_below - mean_above) ** 2
    between[values[:-1] == values[1:]] = -1  # a split between equal values is no split
    return float(values[int(np.argmax(between))])


def colour_features(image, mask):
    """[19] float64 ("colour"): mean and standard deviation of RGB (0-1), HSV and CIE Lab over the mask, then log
    pixel count.

    Args:
        image: uint8 [H, W, 3] RGB (an alpha channel is ignored; a grey [H, W] image counts as R = G = B).
        mask: bool [H, W]. An empty mask gives zeros (and log area 0).
    """
    return _colour_features(cell_pixels(image, mask))


def _colour_features(pixels):
    if not len(pixels):
        return np.zeros(len(FEATURE_NAMES))
    return np.append(_statistics(pixel_spaces(pixels)), np.log(len(pixels)))


def compartment_features(image, mask, nucleus_direction=NUCLEUS_DIRECTION):
    """[56] float64 ("colour+compartments"): `colour_features`, then the same 18 statistics over the nucleus and
    over the cytoplasm, then the nucleus's share of the mask's pixels.

    The nucleus is the mask's pixels whose Lab colour projected on `nucleus_direction` lies above `otsu_split` of
    the projections; the cytoplasm is the rest. A mask of one colour has no nucleus (zeros for it, share 0).
    """
    return pixel_compartment_features(cell_pixels(image, mask), nucleus_direction)


def nucleus_pixels(lab, nucleus_direction=NUCLEUS_DIRECTION):
    """bool [P]: which of a cell's CIE Lab pixels [P, 3] are its nucleus, those whose projection on
    `nucleus_direction` lies above `otsu_split` of the projections (none when the cell is of one colour)."""
    projection = np.asarray(lab, np.float64) @ np.asarray(nucleus_direction, np.float64)
    threshold = otsu_split(projection)
    return projection > threshold if threshold is not None else np.zeros(len(projection), bool)


def pixel_compartment_features(pixels, nucleus_direction):
    if not len(pixels):
        return np.zeros(len(COMPARTMENT_FEATURE_NAMES))
    spaces = pixel_spaces(pixels)
    return split_compartment_features(pixels, nucleus_pixels(spaces[2], nucleus_direction), spaces)


def split_compartment_features(pixels, nucleus, spaces=None):
    """The "colour+compartments" features of a cell's [P, 3] uint8 pixels split by a given bool [P] `nucleus`."""
    spaces = pixel_spaces(pixels) if spaces is None else spaces
    return np.concatenate([_statistics(spaces), [np.log(len(pixels))], _statistics(spaces, nucleus),
                           _statistics(spaces, ~nucleus), [nucleus.mean()]])



def softmax(logits):
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def fit_softmax_weights(z, labels, num_types, l2, steps=4000, rate=0.5):
    """Multinomial logistic regression by full-batch gradient descent on standardised features z [N, F]."""
    weights, bias = np.zeros((z.shape[1], num_types)), np.zeros(num_types)
    onehot = np.eye(num_types)[labels]
    for _ in range(steps):
        grad = (softmax(z @ weights + bias) - onehot) / len(labels)
        weights -= rate * (z.T @ grad + l2 * weights)
        bias -= rate * grad.sum(0)
    return weights, bias


class ColourTyper:
    """A softmax regression from a cell's colour features (`FEATURE_SETS`) to its type (class ids 1..K-1).

    Args:
        class_names: the model's class names, index 0 the background.
        mean, scale: [F] feature standardisation.
        weights: [F, K-1]; bias: [K-1].
        l2: the L2 factor it was fitted with; cv_accuracy: its cross-validated accuracy on the training cells.
        cells: how many training cells it was fitted on.
        feature_set: a key of `FEATURE_SETS` ("colour": `colour_features`, "colour+compartments":
            `compartment_features`); F is its length.
        nucleus_direction: [3] the Lab direction "colour+compartments" splits the nucleus along.
        nucleus_source: where that direction came from (reported by `mrcnn-tf train`).
    """

    def __init__(self, class_names, mean, scale, weights, bias, l2, cv_accuracy=None, cells=0, feature_set="colour",
                 nucleus_direction=NUCLEUS_DIRECTION, nucleus_source="default"):
        check_feature_set(feature_set)
        self.class_names = [str(n) for n in class_names]
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.weights, self.bias = np.asarray(weights, np.float64), np.asarray(bias, np.float64)
        self.l2, self.cv_accuracy, self.cells = float(l2), cv_accuracy, int(cells)
        self.feature_set, self.nucleus_source = feature_set, str(nucleus_source)
        self.nucleus_direction = np.asarray(nucleus_direction, np.float64)

    def features(self, image, mask):
        """[F] the features of one cell (`mask` bool [H, W] on `image`) this typer was fitted on."""
        if self.feature_set == "colour":
            return colour_features(image, mask)
        return compartment_features(image, mask, self.nucleus_direction)

    @classmethod
    def fit(cls, features, class_ids, class_names, l2_choices=L2_CHOICES, folds=5, seed=0, **typer_args):
        """Fit on training cells; the L2 factor is the one with the best `folds`-fold cross-validated accuracy.

        Args:
            features: [N, F] features of the cells (`ColourTyper.features`); class_ids: [N] their types (1..K-1).
            typer_args: `feature_set`, `nucleus_direction`, `nucleus_source` the features were computed with.
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
                w, b = fit_softmax_weights(z[train], labels[train], num_types, l2)
                correct += int(((z[held] @ w + b).argmax(1) == labels[held]).sum())
            if best is None or correct > best[0]:
                best = (correct, l2)
        weights, bias = fit_softmax_weights(z, labels, num_types, best[1])
        return cls(class_names, mean, scale, weights, bias, best[1], best[0] / len(labels), len(labels),
                   **typer_args)

    def probabilities(self, features):
        """[N, K-1] type probabilities (column j is class id j + 1)."""
        features = np.asarray(features, np.float64).reshape(-1, len(self.mean))
        return softmax(((features - self.mean) / self.scale) @ self.weights + self.bias)

    predict_proba = probabilities  # scikit-learn's name

    def predict(self, features):
        """[N] int class ids (1..K-1)."""
        return self.probabilities(features).argmax(1).astype(np.int32) + 1

    def to_dict(self):
        return {"format": "mrcnn_tf colour typer 2", "feature_set": self.feature_set,
                "features": list(FEATURE_SETS[self.feature_set]), "nucleus_direction": self.nucleus_direction.tolist(),
                "nucleus_source": self.nucleus_source, "class_names": self.class_names, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(), "bias": self.bias.tolist(),
                "l2": self.l2, "cv_accuracy": self.cv_accuracy, "cells": self.cells}

    @classmethod
    def from_dict(cls, values, source="colour typer"):
        try:
            # A format-1 file (an older typer) has no feature_set: it was fitted on the 19 "colour" features.
            typer = cls(values["class_names"], values["mean"], values["scale"], values["weights"], values["bias"],
                        values["l2"], values.get("cv_accuracy"), values.get("cells", 0),
                        values.get("feature_set", "colour"), values.get("nucleus_direction", NUCLEUS_DIRECTION),
                        values.get("nucleus_source", "default"))
        except MrcnnError as exc:
            raise MrcnnError(f"{source}: {exc}; delete it, or retrain to write it again") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise MrcnnError(f"{source}: not a colour typer file ({exc!r}); delete it, or retrain to write it "
                             "again") from None
        k, f = len(typer.class_names) - 1, len(FEATURE_SETS[typer.feature_set])
        if typer.mean.shape != (f,) or typer.scale.shape != (f,) or typer.weights.shape != (f, k) \
                or typer.bias.shape != (k,) or typer.nucleus_direction.shape != (3,):
            raise MrcnnError(f"{source}: its arrays do not fit {f} features and {k} types; delete it, or retrain "
                             "to write it again")
        return typer

    def save(self, path):
        from mrcnn_tf.engine.checkpoints import atomic_write_text

        atomic_write_text(pathlib.Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path):
        try:
            values = json.loads(pathlib.Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise MrcnnError(f"{path}: cannot read the colour typer ({exc}); delete it, or retrain to write it "
                             "again") from None
        return cls.from_dict(values, source=str(path))


def retype(result, image, typer):
    """A copy of one `detect` result typed by `typer` on the colour inside each predicted mask: ``class_ids`` become
    the typer's types and ``scores`` its probability of each (the class head's score belongs to another class);
    rois, masks and the order are kept."""
    result = dict(result)
    masks = result["masks"]
    if masks.shape[-1]:
        features = np.stack([typer.features(image, masks[:, :, i]) for i in range(masks.shape[-1])])
        probabilities = typer.probabilities(features)
        chosen = probabilities.argmax(1)
        result["class_ids"] = (chosen + 1).astype(np.asarray(result["class_ids"]).dtype)
        # float32 as detect's scores (a result without scores, e.g. hand-drawn masks, gains them).
        dtype = np.asarray(result["scores"]).dtype if "scores" in result else np.float32
        result["scores"] = probabilities[np.arange(len(chosen)), chosen].astype(dtype)
    return result


def typer_path(checkpoint):
    """The `TYPER_FILE` of the run `checkpoint` belongs to (beside it)."""
    return pathlib.Path(checkpoint).parent / TYPER_FILE


def missing_typer_message(path):
    return f"COLOUR_TYPING is on but {path} is missing: types come from the network's class head"


def load_typer_beside(checkpoint, num_classes, missing=None):
    """The `ColourTyper` of `checkpoint`'s run, or None (after `missing(message)`) when there is no `TYPER_FILE`.

    Raises:
        MrcnnError: the file is damaged, or typed for another class count than `num_classes` (one line, its path).
    """
    path = typer_path(checkpoint)
    if not path.is_file():
        if missing is not None:
            missing(missing_typer_message(path))
        return None
    typer = ColourTyper.load(path)
    if len(typer.class_names) != int(num_classes):
        raise MrcnnError(f"{path}: its {len(typer.class_names)} classes do not match the model's NUM_CLASSES="
                         f"{num_classes}; delete it, or retrain to write it again")
    return typer
