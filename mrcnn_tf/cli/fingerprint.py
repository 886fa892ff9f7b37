"""`mrcnn-tf fingerprint DIR`: what `train` without `--config` would measure and choose (`--weights none` by default;
`--weights coco` or `imagenet` for a pretrained start)."""
import click


@click.command("fingerprint")
@click.argument("dataset_dir", type=click.Path(file_okay=False))
@click.option("--subset", default="train", show_default=True, help="The annotations to measure (COCO: instances_NAME).")
@click.option("--weights", "start", type=click.Choice(["none", "coco", "imagenet"]), default="none", show_default=True,
              help="The start the plan is for: random, COCO or ImageNet weights.")
def fingerprint(dataset_dir, subset, start):
    """Measure the training annotations of DATASET_DIR (COCO or LISC layout) and print the settings derived from
    them: image size, anchors, mean pixel, instance limits, repeat factors, mosaics, steps; and warnings."""
    from mrcnn_tf.wbc.fingerprint import fingerprint as measure, format_plan, planned_config
    from mrcnn_tf.wbc.runs import load_dataset

    fp = measure(load_dataset(dataset_dir, subset))
    _, _, choices, warnings = planned_config(fp, start=start)  # the base recipe's step size and kept values
    click.echo(format_plan(fp, choices, warnings))
