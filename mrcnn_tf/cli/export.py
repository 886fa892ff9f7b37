"""`mrcnn-tf export`: write a checkpoint as a SavedModel with a serving signature.

The ``serving_default`` signature takes ``image``: uint8 [H, W, 3] (any size) and returns rois,
class_ids, scores and masks exactly as ``model.detect`` (see `mrcnn_tf.inference.export`). A run's colour typer
(COLOUR_TYPING) types the cells in the graph (the class head's types become head_class_ids and head_scores) and is
also written beside it as colour_typer.json.
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
    click.echo(f"Wrote SavedModel to {path}")
    click.echo("Signature 'serving_default': image uint8 [H, W, 3] -> rois int32 [N, 4] (y1, x1, y2, x2 px), "
               "class_ids int32 [N], scores float32 [N], masks bool [H, W, N]")
    if model.typer is not None:
        click.echo(f"class_ids and scores are the colour typer's (also written as {path / TYPER_FILE}); "
                   "head_class_ids int32 [N] and head_scores float32 [N] are the class head's")
    click.echo(f"Load it with tf.saved_model.load({str(path)!r}) or mrcnn_tf.inference.export.load_exported(...)")
