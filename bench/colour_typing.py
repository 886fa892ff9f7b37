"""How well colour inside a cell's outline types it: a measurement for the BCCD typing gap (Eosinophils).

    python bench/colour_typing.py --weights logs/bccd.../mask_rcnn_bccd_0012.weights.h5

Fits a 5-type softmax regression on colour statistics (mean and spread of RGB, HSV and Lab, and the log area)
inside the hand-drawn masks of the BCCD-WBC training cells, then types the validation cells three ways and prints
the typing accuracy and confusion of each: (1) the network's own types, (2) the regression on the *network's*
predicted masks, (3) the regression on the hand-drawn masks (an upper bound for the colour statistics). Every cell
is paired with its best-matching detection as in `mrcnn-tf evaluate` (mask IoU >= 0.5). Nothing is trained but the
regression; the checkpoint is any `--config bccd` run's.
"""
import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from learn_bccd import DEFAULT_DATA, load  # noqa: E402


def colour_features(image, mask):
    """[19] mean and standard deviation of RGB (0-1), HSV and Lab over the mask's pixels, and log pixel count."""
    from skimage import color

    rgb = image[..., :3].astype(np.float64) / 255.0
    features = []
    for space in (rgb, color.rgb2hsv(rgb), color.rgb2lab(rgb)):
        pixels = space[mask]
        features += list(pixels.mean(0)) + list(pixels.std(0))
    features.append(np.log(max(int(mask.sum()), 1)))
    return np.array(features)


def fit_softmax(x, y, num_classes, l2, steps=4000, rate=0.5):
    """Multinomial logistic regression by full-batch gradient descent on standardised features."""
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = (x - mean) / scale
    weights, bias = np.zeros((x.shape[1], num_classes)), np.zeros(num_classes)
    onehot = np.eye(num_classes)[y]
    for _ in range(steps):
        logits = z @ weights + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - onehot) / len(y)
        weights -= rate * (z.T @ grad + l2 * weights)
        bias -= rate * grad.sum(0)
    return lambda f: int(np.argmax(((f - mean) / scale) @ weights + bias))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--weights", required=True, help="a checkpoint of a --config bccd run")
    parser.add_argument("--l2", type=float, default=0.01)
    args = parser.parse_args(argv)

    from mrcnn_tf.cli._common import load_inference_model
    from mrcnn_tf.evaluation.classification import TypingScore, format_confusion

    train_set, val_set = load(args.data, "train"), load(args.data, "val")
    features, labels = [], []
    for image_id in train_set.image_ids:
        image = train_set.load_image(image_id)
        masks, class_ids = train_set.load_mask(image_id)
        for i, class_id in enumerate(class_ids):
            features.append(colour_features(image, masks[:, :, i]))
            labels.append(int(class_id))
    classify = fit_softmax(np.array(features), np.array(labels), train_set.num_classes, args.l2)

    model, checkpoint = load_inference_model(args.weights, str(pathlib.Path(args.weights).parent))
    scores = {name: TypingScore(val_set.num_classes) for name in ("network", "colour, predicted masks",
                                                                   "colour, hand-drawn masks")}
    for image_id in val_set.image_ids:
        image = val_set.load_image(image_id)
        masks, class_ids = val_set.load_mask(image_id)
        result = model.detect([image], verbose=0)[0]
        predicted = result["masks"]
        recoloured = np.array([classify(colour_features(image, predicted[:, :, i]))
                               for i in range(predicted.shape[-1])], np.int64)
        scores["network"].add(class_ids, masks, result["class_ids"], predicted)
        scores["colour, predicted masks"].add(class_ids, masks, recoloured, predicted)
        hand = np.array([classify(colour_features(image, masks[:, :, i])) for i in range(len(class_ids))], np.int64)
        scores["colour, hand-drawn masks"].add(class_ids, masks, hand, masks)

    print(f"bench/colour_typing.py  checkpoint {checkpoint}; softmax on {len(labels)} training cells, L2 {args.l2}")
    for name, score in scores.items():
        print(f"\n{name}: typing accuracy {score.accuracy:.3f}")
        print(format_confusion(score.confusion, val_set.class_names))


if __name__ == "__main__":
    main()
