"""Does the colour typer type better when it splits each cell by its real nucleus instead of its Otsu split?

    python bench/typing_nucleus.py ../shared/data/bccd-wbc ../shared/data/tecom-wbc

Cross-validation on each set's training cells only (hand-drawn cell masks): the packaged "colour+compartments"
features with the nucleus found by the Otsu split along the fitted Lab direction, against the same 56 features
with the nucleus taken from the dataset's nucleus mask, the best a learned nucleus could give (issue 31, item 4).
Each is fitted with the package's own `ColourTyper.fit` (L2 chosen by 5-fold CV) over ten fold seeds.
"""
import sys

import numpy as np


def features_both_ways(dataset):
    from mrcnn_tf.wbc import colour_typing as ct

    typer = ct.fit_colour_typer(dataset)  # its fitted nucleus direction
    otsu, true, labels = [], [], []
    for image_id in dataset.image_ids:
        masks, ids = dataset.load_mask(image_id)
        image, nuclei = dataset.load_image(image_id), dataset.load_nucleus_mask(image_id)[0]
        for i in np.flatnonzero(np.asarray(ids) > 0):
            pixels = ct.cell_pixels(image, masks[:, :, i])
            otsu.append(ct.pixel_compartment_features(pixels, typer.nucleus_direction))
            true.append(ct.split_compartment_features(pixels, nuclei[:, :, i][masks[:, :, i]]))
            labels.append(int(ids[i]))
    return np.array(otsu), np.array(true), np.array(labels), dataset.class_names


def main(argv):
    from mrcnn_tf.wbc.colour_typing import ColourTyper
    from mrcnn_tf.wbc.runs import load_dataset

    print("| set (train cells) | Otsu split: CV accuracy, 10 seeds | true nucleus: CV accuracy, 10 seeds |")
    print("|---|---|---|")
    for data in argv or ["../shared/data/bccd-wbc", "../shared/data/tecom-wbc"]:
        otsu, true, labels, names = features_both_ways(load_dataset(data, "train"))
        scores = {name: [ColourTyper.fit(f, labels, names, seed=s).cv_accuracy for s in range(10)]
                  for name, f in (("otsu", otsu), ("true", true))}
        print(f"| {data.rstrip('/').split('/')[-1]} ({len(labels)}) | "
              + " | ".join(f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in scores.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
