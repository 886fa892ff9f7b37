"""`mrcnn-tf export`: write a checkpoint as a SavedModel with a serving signature.

The ``serving_default`` signature takes ``image``: uint8 [H, W, 3] (any size) and returns rois,
class_ids, scores and masks exactly as ``model.detect`` (see `mrcnn_tf.inference.export`). A run's colour typer
(COLOUR_TYPING) is written beside it as colour_typer.json, which `load_exported` applies.
"""
import pathlib

import click

from mrcnn_tf.cli._common import load_inference_model, weights_options


@click.command()
@weights_options
@click.option("--output", required=True, type=click.Path(), help="SavedModel folder to create.")
@click.option("--force", is_flag=True, help="Replace --output if it already exists.")
def export(weights, logs, overrides, output, force):
    """Export a checkpoint as a SavedModel with a serving signature."""
    from mrcnn_tf.errors import MrcnnError
    from mrcnn_tf.inference.colour_typer import TYPER_FILE
    from mrcnn_tf.inference.export import export_saved_model

    target = pathlib.Path(output)
    # Refuse before the (slow) model build, not after it.
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise MrcnnError(f"{target} already exists: choose another --output or pass --force to replace it")
    model, checkpoint = load_inference_model(weights, logs, overrides)
    click.echo(f"Weights: {checkpoint}")
    path = export_saved_model(model, target, force=force)
    if model.typer is not None:
        # The SavedModel is the network alone: the colour typer is numpy, in a file beside it.
        click.echo(f"Note: the signature's class_ids and scores are the class head's; {path / TYPER_FILE} types "
                   "the cells by colour (load_exported applies it; its format: mrcnn_tf/inference/colour_typer.py)",
                   err=True)
    click.echo(f"Wrote SavedModel to {path}")
    click.echo("Signature 'serving_default': image uint8 [H, W, 3] -> rois int32 [N, 4] (y1, x1, y2, x2 px), "
               "class_ids int32 [N], scores float32 [N], masks bool [H, W, N]")
    click.echo(f"Load it with tf.saved_model.load({str(path)!r}) or mrcnn_tf.inference.export.load_exported(...)")
