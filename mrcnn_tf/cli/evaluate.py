"""`mrcnn-tf evaluate`: score a checkpoint on a LISC- or COCO-layout dataset.

Prints Matterport's mAP50 (mask IoU), COCO segm/bbox AP, AP50, AP75 and AR, per-class AP50, typing
accuracy with its 95 % interval, Dice and the confusion matrix (and, for a NUCLEUS_MASKS model on a dataset with
nucleus masks, ``nucleus_dice`` and ``nc_ratio_mae``); ``--json FILE`` writes the same numbers (the keys the README
lists).
``--subset`` is train, val or all of a LISC folder's deterministic split, or any NAME of a COCO
folder's ``annotations/instances_NAME.json`` (a held-out folder with only instances_test.json:
``--subset test``).
"""
import json
import pathlib
import sys

import click

from mrcnn_tf.cli._common import load_dataset, load_inference_model, weights_options


@click.command()
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(file_okay=False),
              help="LISC-layout (or WBC-layout) folder, or a COCO layout (annotations/instances_NAME.json, images/).")
@click.option("--subset", default="val", show_default=True, metavar="NAME",
              help="LISC folder: train, val or all (every image) of the deterministic split; COCO folder: the NAME "
                   "of annotations/instances_NAME.json (train, val, test ...).")
@weights_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results to this file.")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images.")
def evaluate(dataset_dir, subset, weights, logs, overrides, json_path, limit):
    """Score a checkpoint: mAP50, COCO AP, per-class AP, accuracy."""
    from mrcnn_tf.errors import ConfigError, DatasetError
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report

    dataset = load_dataset(dataset_dir, subset)
    if dataset.num_images == 0:
        raise DatasetError(f"{dataset_dir}: no images in the {subset!r} subset; use --subset all, or a dataset "
                           "with at least two images per folder")
    model, checkpoint = load_inference_model(weights, logs, overrides)
    if model.config.NUM_CLASSES != dataset.num_classes:
        # Class ids beyond the dataset's would index past its class names.
        raise ConfigError(f"{checkpoint}: the model has NUM_CLASSES={model.config.NUM_CLASSES} but the dataset "
                          f"{dataset.num_classes} ({', '.join(dataset.class_names)}); evaluate with weights trained "
                          "on these classes")
    click.echo(f"Weights: {checkpoint}")
    image_ids = list(dataset.image_ids)[:limit] if limit else None
    total = len(image_ids) if image_ids is not None else dataset.num_images
    with click.progressbar(length=total, label=f"Evaluating {total} images", file=sys.stderr) as bar:
        results = evaluate_dataset(model, dataset, image_ids=image_ids, progress=lambda done, n: bar.update(1))
    results.update(subset=subset, dataset=str(dataset_dir), weights=str(checkpoint))
    click.echo(format_report(results))
    if json_path:
        path = pathlib.Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
        click.echo(f"Wrote {path}")
