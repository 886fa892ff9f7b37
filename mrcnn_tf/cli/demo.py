"""`mrcnn-tf demo [--output DIR]`: synthetic smears -> training -> held-out metrics -> detections, on the CPU."""
import pathlib

import click

from mrcnn_tf.errors import MrcnnError


@click.command("demo")
@click.option("--output", type=click.Path(file_okay=False), default="demo_output", show_default=True,
              help="Folder for data, checkpoints, metrics, overlays and counts (must be new or empty).")
@click.option("--minutes", type=click.FloatRange(min=0.5), default=8.0, show_default=True,
              help="Training budget; the whole demo takes about a minute more.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(output, minutes, seed):
    """Synthesize blood smears, train a CPU-sized Mask R-CNN from scratch, evaluate and detect.

    Uses a lighter configuration than `train` (ResNet-18, 256 px images, 64-channel FPN) so that
    it runs in about 10 minutes on 2 CPU cores; it prints where everything was written and the
    held-out mask mAP50 it reached.
    """
    from mrcnn_tf.demo import run_demo

    path = pathlib.Path(output)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MrcnnError(f"--output {output}: already exists and is not empty; choose a new folder so "
                         "nothing there is overwritten")
    run_demo(path, minutes=minutes, seed=seed, echo=click.echo)
