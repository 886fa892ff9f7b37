"""`mrcnn-tf fingerprint DIR`: what `train --weights none` without `--config` would measure and choose."""
import click


@click.command("fingerprint")
@click.argument("dataset_dir", type=click.Path(file_okay=False))
@click.option("--subset", default="train", show_default=True, help="The annotations to measure (COCO: instances_NAME).")
def fingerprint(dataset_dir, subset):
    """Measure the training annotations of DATASET_DIR (COCO or LISC layout) and print the settings derived from
    them: image size, anchors, mean pixel, instance limits, repeat factors, mosaics, steps; and warnings."""
    from mrcnn_tf.wbc.fingerprint import fingerprint as measure, format_plan, plan
    from mrcnn_tf.wbc.runs import load_dataset

    fp = measure(load_dataset(dataset_dir, subset))
    choices, warnings = plan(fp)
    click.echo(format_plan(fp, choices, warnings))
