"""`mrcnn-tf evaluate`: score a checkpoint on a LISC-layout dataset.

Prints Matterport's mAP50 (mask IoU), COCO segm/bbox AP, AP50, AP75 and AR, per-class AP50, typing
accuracy, Dice and the confusion matrix; ``--json FILE`` writes the same numbers (DESIGN §2 keys).
"""
import json
import pathlib
import sys

import click

from mrcnn_tf.cli._common import load_inference_model, weights_options


@click.command()
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(file_okay=False),
              help="LISC-layout (or WBC-layout) dataset folder.")
@click.option("--subset", type=click.Choice(["train", "val", "all"]), default="val", show_default=True,
              help="Which part of the deterministic split to score ('all': every image).")
@weights_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results to this file.")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images.")
def evaluate(dataset_dir, subset, weights, logs, overrides, json_path, limit):
    """Score a checkpoint: mAP50, COCO AP, per-class AP, accuracy."""
    from mrcnn_tf.errors import DatasetError
    from mrcnn_tf.evaluation.evaluate import evaluate_dataset, format_report
    from mrcnn_tf.lisc import LiscDataset

    dataset = LiscDataset()
    dataset.load_lisc(dataset_dir, subset)
    dataset.prepare()
    if dataset.num_images == 0:
        raise DatasetError(f"{dataset_dir}: no images in the {subset!r} subset; use --subset all, or a dataset "
                           "with at least two images per folder")
    model, checkpoint = load_inference_model(weights, logs, overrides)
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
