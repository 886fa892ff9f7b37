"""How well colour inside a cell's outline types it (`COLOUR_TYPING`), beside the network's class head.

    python bench/colour_typing.py --weights logs/bccd.../mask_rcnn_bccd_0012.weights.h5

Fits `mrcnn_tf.wbc.colour_typing.ColourTyper` (a 5-type softmax regression on the colour features of --feature-set:
"colour", 19 statistics of the whole cell, or "colour+compartments", those and the nucleus's and the cytoplasm's
apart; its L2 chosen by 5-fold cross-validation, or fixed with --l2) on the hand-drawn masks of the BCCD-WBC training
cells, then types the validation cells three ways and prints the typing accuracy and confusion of each: (1) the
network's class head, (2) the typer on the network's predicted masks (what `mrcnn-tf evaluate` reports with
COLOUR_TYPING on), (3) the typer on the hand-drawn masks (the statistics' own limit). Every cell is paired with
its best-matching detection as in `mrcnn-tf evaluate` (mask IoU >= 0.5). The checkpoint is any `--config bccd`
run's; nothing is trained but the typer.
"""
import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from learn_bccd import DEFAULT_DATA, load  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--weights", required=True, help="a checkpoint of a --config bccd run")
    parser.add_argument("--l2", type=float, default=None, help="fixed L2 (default: chosen by cross-validation)")
    parser.add_argument("--feature-set", default=None, help="colour or colour+compartments (default: the package's)")
    args = parser.parse_args(argv)

    from mrcnn_tf.wbc.runs import load_inference_model
    from mrcnn_tf.wbc.colour_typing import DEFAULT_FEATURE_SET, L2_CHOICES, fit_colour_typer, retype
    from mrcnn_tf.evaluation.classification import TypingScore, format_confusion

    train_set, val_set = load(args.data, "train"), load(args.data, "val")
    typer = fit_colour_typer(train_set, feature_set=args.feature_set or DEFAULT_FEATURE_SET,
                             l2_choices=L2_CHOICES if args.l2 is None else (args.l2,))
    model, checkpoint = load_inference_model(args.weights, str(pathlib.Path(args.weights).parent),
                                             colour_typing=False)
    scores = {name: TypingScore(val_set.num_classes)
              for name in ("class head", "colour, predicted masks", "colour, hand-drawn masks")}
    for image_id in val_set.image_ids:
        image = val_set.load_image(image_id)
        masks, class_ids = val_set.load_mask(image_id)
        result = model.detect([image], verbose=0)[0]
        predicted = result["masks"]
        scores["class head"].add(class_ids, masks, result["class_ids"], predicted)
        scores["colour, predicted masks"].add(class_ids, masks, retype(result, image, typer)["class_ids"], predicted)
        hand = retype({"masks": masks, "class_ids": class_ids}, image, typer)["class_ids"]
        scores["colour, hand-drawn masks"].add(class_ids, masks, hand, masks)

    print(f"bench/colour_typing.py  checkpoint {checkpoint}; {typer.feature_set} typer on {typer.cells} training "
          f"cells, L2 {typer.l2:g} (cross-validated accuracy {typer.cv_accuracy:.3f}), nucleus direction "
          f"{typer.nucleus_source}")
    for name, score in scores.items():
        print(f"\n{name}: typing accuracy {score.accuracy:.3f}")
        print(format_confusion(score.confusion, val_set.class_names))


if __name__ == "__main__":
    main()
