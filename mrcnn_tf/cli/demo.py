"""`mrcnn-tf demo [--output DIR]`: synthetic smears -> training -> held-out metrics -> detections, on the CPU."""
import pathlib

import click

from mrcnn_tf.errors import MrcnnError


@click.command("demo")
@click.option("--output", type=click.Path(file_okay=False), default="demo_output", show_default=True,
              help="Folder for data, checkpoints, metrics, overlays and counts (must be new or empty).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of 50 steps to train (default 8: the recorded results; the time depends on the CPU).")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(output, epochs, seed):
    """Synthesize blood smears, train a CPU-sized Mask R-CNN from scratch, evaluate and detect.

    Uses a lighter configuration than `train` (ResNet-18, 256 px images, 64-channel FPN, narrow heads)
    so that it runs in under 10 minutes on 2 CPU cores. Training is a fixed amount of seeded work, so
    the result does not depend on the CPU's speed; after the first epoch it prints how long the rest
    will take here. It prints where everything was written and the held-out mask mAP50 it reached.
    """
    from mrcnn_tf.wbc.demo import DEMO_EPOCHS, run_demo

    path = pathlib.Path(output)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MrcnnError(f"--output {output}: already exists and is not empty; choose a new folder so "
                         "nothing there is overwritten")
    run_demo(path, epochs=epochs or DEMO_EPOCHS, seed=seed, echo=click.echo)
