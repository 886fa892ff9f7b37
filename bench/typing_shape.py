"""Does the typer type better with the nucleus's shape (lobes, solidity, circularity) beside the colours?

    python bench/typing_shape.py ../shared/data/bccd-wbc ../shared/data/tecom-wbc

A haematologist tells a Neutrophil (2-5 lobes) from a Monocyte (one kidney-shaped nucleus) and a Lymphocyte (one
round nucleus filling the cell) by the nucleus's shape; the packaged typer sees colours, the log area and the
nucleus's share only. Cross-validation on each set's training cells only (hand-drawn cell masks), the package's own
`ColourTyper.fit` (L2 by 5-fold CV) over ten fold seeds, for

- `base`: the packaged "colour+compartments" 56 (nucleus = the Otsu split along the fitted Lab direction);
- `+shape (Otsu)`: those and `SHAPE_NAMES` measured on the Otsu nucleus as a 2-D mask;
- `+shape (true)`: the same measured on the dataset's nucleus mask, what a learned nucleus (NUCLEUS_MASKS) could
  give at best.

Besides the mean accuracy it prints the paired comparison with `base` (same folds, same L2 rule): the seeds on which
the variant is ahead, and the cells typed right by one and wrong by the other (each cell's majority over the
seeds), with a two-sided sign test on those.
"""
import sys

import numpy as np

SHAPE_NAMES = ("cell circularity", "cell solidity", "cell eccentricity", "nucleus circularity", "nucleus solidity",
               "nucleus eccentricity", "nucleus lobes", "nucleus parts", "nucleus thickness")


def shape_features(cell, nucleus):
    """[9] shape measures of a bool cell mask and its bool nucleus mask (inside it)."""
    from scipy import ndimage
    from skimage import measure

    from mrcnn_tf.wbc.morphometry import measure_cell

    measured = measure_cell(np.zeros(cell.shape + (3,), np.uint8), cell, nucleus)
    whole = measure.regionprops(cell.astype(np.uint8))[0]
    parts = measure.label(nucleus)
    if nucleus.any():
        inner = measure.regionprops(nucleus.astype(np.uint8))[0]
        solidity, eccentricity = inner.solidity, inner.eccentricity
        # Mean distance to the nucleus's edge over sqrt(area): thin lobes score low, a round nucleus high.
        thickness = ndimage.distance_transform_edt(nucleus)[nucleus].mean() / np.sqrt(nucleus.sum())
    else:
        solidity = eccentricity = thickness = 0.0
    return np.array([measured["cell_circularity"] or 0.0, whole.solidity, whole.eccentricity,
                     measured.get("nucleus_circularity") or 0.0, solidity, eccentricity,
                     measured.get("nucleus_lobes") or 0, parts.max(), thickness], np.float64)


def features(dataset):
    from mrcnn_tf.wbc import colour_typing as ct

    typer = ct.fit_colour_typer(dataset)  # its fitted nucleus direction
    base, otsu, true, labels = [], [], [], []
    for image_id in dataset.image_ids:
        masks, ids = dataset.load_mask(image_id)
        image, nuclei = dataset.load_image(image_id), dataset.load_nucleus_mask(image_id)[0]
        for i in np.flatnonzero(np.asarray(ids) > 0):
            cell = masks[:, :, i].astype(bool)
            pixels = ct.cell_pixels(image, cell)
            lab = ct.pixel_spaces(pixels)[2]
            split = np.zeros_like(cell)
            split[cell] = ct.nucleus_pixels(lab, typer.nucleus_direction)
            base.append(ct.pixel_compartment_features(pixels, typer.nucleus_direction))
            otsu.append(shape_features(cell, split))
            true.append(shape_features(cell, nuclei[:, :, i].astype(bool) & cell))
            labels.append(int(ids[i]))
    base = np.array(base)
    return {"base": base, "+shape (Otsu)": np.hstack([base, otsu]), "+shape (true)": np.hstack([base, true])}, \
        np.array(labels), dataset.class_names


def cv_correct(features, labels, num_types, seed, folds=5):
    """bool [N]: each cell typed right in `ColourTyper.fit`'s cross-validation (its folds, its best L2)."""
    from mrcnn_tf.inference.colour_typer import L2_CHOICES, fit_softmax_weights

    z = (features - features.mean(0)) / (features.std(0) + 1e-9)
    fold_of = np.random.default_rng(seed).permutation(len(labels)) % folds
    best = None
    for l2 in L2_CHOICES:
        right = np.zeros(len(labels), bool)
        for fold in range(folds):
            train, held = fold_of != fold, fold_of == fold
            w, b = fit_softmax_weights(z[train], labels[train] - 1, num_types, l2)
            right[held] = (z[held] @ w + b).argmax(1) == labels[held] - 1
        if best is None or right.sum() > best.sum():
            best = right
    return best


def sign_test(wins, losses):
    """Two-sided exact sign test p-value."""
    from math import comb

    n, k = wins + losses, min(wins, losses)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def main(argv, seeds=10):
    from mrcnn_tf.wbc.runs import load_dataset

    for data in argv or ["../shared/data/bccd-wbc", "../shared/data/tecom-wbc"]:
        variants, labels, names = features(load_dataset(data, "train"))
        right = {name: np.array([cv_correct(f, labels, len(names) - 1, s) for s in range(seeds)])
                 for name, f in variants.items()}
        print(f"\n{data.rstrip('/').split('/')[-1]}, {len(labels)} training cells, {seeds} CV seeds")
        print("| features | CV accuracy (mean, min-max over seeds) | seeds ahead of base / behind | cells right only "
              "here / only in base | sign test p |")
        print("|---|---|---|---|---|")
        base_seed, base_cell = right["base"].mean(1), right["base"].mean(0) > 0.5
        for name, r in right.items():
            acc, cell = r.mean(1), r.mean(0) > 0.5
            wins, losses = int((cell & ~base_cell).sum()), int((~cell & base_cell).sum())
            print(f"| {name} | {acc.mean():.3f} ({acc.min():.3f}-{acc.max():.3f}) | {int((acc > base_seed).sum())} / "
                  f"{int((acc < base_seed).sum())} | {wins} / {losses} | {sign_test(wins, losses):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
