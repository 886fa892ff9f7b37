"""What else could type a cell better than the packaged colour typer: feature variants and a crop CNN, measured.

    python bench/typing_variants.py                  # feature variants, repeated CV + validation cells
    python bench/typing_variants.py --cnn 64 96 128  # also a small CNN on cell crops of these sizes

Every variant is a 5-type softmax regression (the package's own `colour_typing.fit_softmax_weights`) on features of the
hand-drawn masks of BCCD-WBC's 230 training cells, scored two ways: repeated 5-fold cross-validation on the
training cells (--repeats seeds, each L2 of --l2; mean and spread over the seeds of the best L2), then fitted on all
training cells with that L2 and applied to the 60 validation cells' hand-drawn masks. Variants: the packaged
"colour+compartments" 56 (`base`), and that plus one of

- `hist`: a 6 x 5 histogram of the cytoplasm's pixels in a* x b* (shares of its pixels; fixed bin edges),
- `texture`: gradient magnitude and high-pass spread of L*, a*, b* over the cell and over its cytoplasm,
- `quantiles`: 5 / 25 / 50 / 75 / 95 % of L*, a*, b* over the nucleus and over the cytoplasm,
- `field`: the cell's, nucleus's and cytoplasm's mean Lab minus the field's median Lab (a per-field stain reference),
- `eroded`: the base features of the mask eroded by 2 px (the outline's pixels mix cell and background).

--cnn trains a small CNN (four conv blocks, 16-128 channels, BatchNorm, global pooling) from random weights on the
training cells' square crops (RGB + mask channel, dihedral turns and brightness/contrast jitter, Adam with cosine
decay) and scores the validation cells with and without 8-fold dihedral test-time averaging, alone and averaged with
the base typer's probabilities. No network of the package is trained; this typer study needs the data only.
"""
import argparse
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from learn_bccd import DEFAULT_DATA, load  # noqa: E402

VARIANTS = ("base", "hist", "texture", "quantiles", "field", "eroded")


class Cell:
    """One annotated cell: its pixels' Lab, the estimated nucleus, the packaged features, its crop and its field's
    median Lab."""

    def __init__(self, image, mask, class_id, direction):
        from mrcnn_tf.wbc import colour_typing as ct
        from skimage import color

        self.class_id, self.image, self.mask, self.direction = int(class_id), image, mask, direction
        pixels = ct.cell_pixels(image, mask)
        self.lab = ct.pixel_spaces(pixels)[2]
        self.nucleus = ct.nucleus_pixels(self.lab, direction)  # the packaged typer's split
        self.base = ct.pixel_compartment_features(pixels, direction)  # the packaged typer's 56
        self.field_lab = np.median(color.rgb2lab(image[::4, ::4]).reshape(-1, 3), 0)

    def crop(self, margin=8):
        ys, xs = np.nonzero(self.mask)
        y0, x0 = max(0, ys.min() - margin), max(0, xs.min() - margin)
        y1, x1 = ys.max() + margin + 1, xs.max() + margin + 1
        return self.image[y0:y1, x0:x1], self.mask[y0:y1, x0:x1]


def features(cell, variant):
    from mrcnn_tf.wbc import colour_typing as ct
    from scipy import ndimage
    from skimage import color

    base = cell.base
    if variant == "base":
        return base
    lab, nucleus = cell.lab, cell.nucleus
    if variant == "hist":
        cytoplasm = lab[~nucleus]
        a = np.digitize(cytoplasm[:, 1], [5, 10, 15, 20, 25])
        b = np.digitize(cytoplasm[:, 2], [-20, -10, 0, 10])
        counts = np.zeros((6, 5))
        np.add.at(counts, (a, b), 1)
        return np.append(base, counts.ravel() / max(1, len(cytoplasm)))
    if variant == "quantiles":
        parts = [lab[part] if part.any() else np.zeros((1, 3)) for part in (nucleus, ~nucleus)]
        return np.append(base, [np.percentile(part, [5, 25, 50, 75, 95], axis=0).ravel() for part in parts])
    if variant == "field":
        parts = [lab, lab[nucleus] if nucleus.any() else lab, lab[~nucleus] if (~nucleus).any() else lab]
        return np.append(base, [part.mean(0) - cell.field_lab for part in parts])
    if variant == "eroded":
        eroded = ndimage.binary_erosion(cell.mask, iterations=2)
        return ct.pixel_compartment_features(ct.cell_pixels(cell.image, eroded if eroded.any() else cell.mask),
                                        cell.direction)
    if variant == "texture":
        crop, mask = cell.crop()
        lab_crop = color.rgb2lab(crop)
        cytoplasm = mask.copy()
        cytoplasm[mask] = ~nucleus  # the crop's mask pixels come in the same order as the cell's
        values = []
        for channel in range(3):
            gradient = ndimage.gaussian_gradient_magnitude(lab_crop[..., channel], 1.0)
            high_pass = lab_crop[..., channel] - ndimage.gaussian_filter(lab_crop[..., channel], 2.0)
            for part in (mask, cytoplasm):
                values += [gradient[part].mean(), high_pass[part].std()] if part.any() else [0.0, 0.0]
        return np.append(base, values)
    raise ValueError(variant)


def repeated_cv(x, labels, l2_values, repeats):
    """{l2: [accuracy of each repeat]} of 5-fold CV, the folds seeded by the repeat."""
    from mrcnn_tf.wbc.colour_typing import fit_softmax_weights

    z = (x - x.mean(0)) / (x.std(0) + 1e-9)  # the package standardises on all training cells the same way
    results = {}
    for l2 in l2_values:
        results[l2] = []
        for repeat in range(repeats):
            fold_of = np.random.default_rng(100 + repeat).permutation(len(labels)) % 5
            correct = 0
            for fold in range(5):
                train, held = fold_of != fold, fold_of == fold
                weights, bias = fit_softmax_weights(z[train], labels[train], 5, l2, steps=2000)
                correct += int(((z[held] @ weights + bias).argmax(1) == labels[held]).sum())
            results[l2].append(correct / len(labels))
    return results


def fit_and_apply(x_train, labels, x_val, l2):
    from mrcnn_tf.wbc.colour_typing import fit_softmax_weights, softmax

    mean, scale = x_train.mean(0), x_train.std(0) + 1e-9
    weights, bias = fit_softmax_weights((x_train - mean) / scale, labels, 5, l2, steps=2000)
    return softmax((x_val - mean) / scale @ weights + bias)


def cnn_probabilities(train_cells, val_cells, size, epochs, seed):
    """Validation cells' [N, 5] type probabilities from a small CNN trained on the training cells' crops, and the
    same averaged over the 8 dihedral turns of each crop."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    from skimage import transform

    def square(cell):
        crop, mask = cell.crop()
        side = max(mask.shape)
        pad = ((0, side - mask.shape[0]), (0, side - mask.shape[1]))
        stacked = np.concatenate([np.pad(crop / 255.0, pad + ((0, 0),), mode="edge"), np.pad(mask, pad)[..., None]],
                                 -1)
        return transform.resize(stacked, (size, size), order=1, anti_aliasing=True).astype(np.float32)

    x_train, x_val = np.stack([square(c) for c in train_cells]), np.stack([square(c) for c in val_cells])
    y_train = np.array([c.class_id - 1 for c in train_cells])
    keras.utils.set_random_seed(seed)

    def augment(x, y):
        x = tf.image.random_flip_left_right(tf.image.rot90(x, tf.random.uniform([], 0, 4, tf.int32)))
        rgb = x[..., :3] * tf.random.uniform([1, 1, 3], 0.9, 1.1) + tf.random.uniform([1, 1, 1], -0.05, 0.05)
        return tf.concat([rgb, x[..., 3:]], -1), y

    batches = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(256, seed=seed).map(augment)
               .batch(16).repeat())
    inputs = keras.Input((size, size, 4))
    x = inputs
    for filters in (16, 32, 64, 128):
        for _ in range(2):
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(
                keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)))
        x = keras.layers.MaxPool2D()(x)
    outputs = keras.layers.Dense(5)(keras.layers.Dropout(0.3)(keras.layers.GlobalAveragePooling2D()(x)))
    model = keras.Model(inputs, outputs)
    steps = len(x_train) // 16
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, epochs * steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(batches, steps_per_epoch=steps, epochs=epochs, verbose=0)
    plain = tf.nn.softmax(model.predict(x_val, verbose=0)).numpy()
    turned = np.mean([tf.nn.softmax(model.predict(np.ascontiguousarray(
        np.rot90(x_val, k, axes=(1, 2))[:, :, ::-1] if flip else np.rot90(x_val, k, axes=(1, 2))),
        verbose=0)).numpy() for k in range(4) for flip in (False, True)], axis=0)
    return plain, turned


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=10, help="seeds of the 5-fold cross-validation")
    parser.add_argument("--l2", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--cnn", type=int, nargs="*", default=[], help="crop sizes of the CNN runs (none: no CNN)")
    parser.add_argument("--cnn-epochs", type=int, default=80)
    parser.add_argument("--cnn-seed", type=int, default=0)
    args = parser.parse_args(argv)

    from mrcnn_tf.wbc.colour_typing import fit_colour_typer

    started = time.time()
    train_set, val_set = load(args.data, "train"), load(args.data, "val")
    direction = fit_colour_typer(train_set).nucleus_direction  # the packaged typer's, fitted on the nucleus masks

    def cells(dataset):
        found = []
        for image_id in dataset.image_ids:
            image = dataset.load_image(image_id)
            masks, class_ids = dataset.load_mask(image_id)
            found += [Cell(image, masks[:, :, i], class_ids[i], direction) for i in range(len(class_ids))
                      if class_ids[i] > 0]
        return found

    train_cells, val_cells = cells(train_set), cells(val_set)
    labels = np.array([c.class_id - 1 for c in train_cells])
    val_labels = np.array([c.class_id - 1 for c in val_cells])
    print(f"bench/typing_variants.py {time.strftime('%Y-%m-%d %H:%M')}  cmd=python {' '.join(sys.argv)}")
    print(f"{len(train_cells)} training cells, {len(val_cells)} validation cells (hand-drawn masks); "
          f"{args.repeats} x 5-fold CV, L2 from {args.l2}\n")
    print("| variant | features | CV accuracy (mean ± sd over seeds, best L2) | L2 | validation cells |")
    print("|---|---|---|---|---|")
    base_val = None
    for variant in args.variants:
        x_train = np.stack([features(c, variant) for c in train_cells])
        x_val = np.stack([features(c, variant) for c in val_cells])
        results = repeated_cv(x_train, labels, args.l2, args.repeats)
        l2 = max(results, key=lambda k: np.mean(results[k]))
        probabilities = fit_and_apply(x_train, labels, x_val, l2)
        if variant == "base":
            base_val = probabilities
        print(f"| {variant} | {x_train.shape[1]} | {np.mean(results[l2]):.3f} ± {np.std(results[l2]):.3f} | {l2:g} | "
              f"{np.mean(probabilities.argmax(1) == val_labels):.3f} |", flush=True)
    for size in args.cnn:
        began = time.time()
        plain, turned = cnn_probabilities(train_cells, val_cells, size, args.cnn_epochs, args.cnn_seed)
        line = (f"CNN on {size} px crops ({args.cnn_epochs} epochs, seed {args.cnn_seed}, {time.time() - began:.0f} s):"
                f" validation cells {np.mean(plain.argmax(1) == val_labels):.3f}, with 8 turns averaged "
                f"{np.mean(turned.argmax(1) == val_labels):.3f}")
        if base_val is not None:
            for share in (0.3, 0.5):
                mixed = (1 - share) * base_val + share * turned
                line += f"; {share:g} of it with the base typer {np.mean(mixed.argmax(1) == val_labels):.3f}"
        print(line, flush=True)
    print(f"\nwall {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
