"""`mrcnn-tf demo [--output DIR] [--synthetic]`: train from scratch on real smears, score held-out fields, detect."""
import click


@click.command("demo")
@click.option("--output", type=click.Path(file_okay=False), default="demo_output", show_default=True,
              help="Folder for checkpoints, metrics, overlays and counts (must be new or empty).")
@click.option("--synthetic", is_flag=True,
              help="Train the CPU-sized DemoConfig on synthetic LISC-like smears instead of real BCCD-WBC fields.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of 50 steps to train (default: 7 on real smears, 8 with --synthetic).")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(output, synthetic, epochs, seed):
    """Train Mask R-CNN from random weights on real blood smears, evaluate on held-out fields, detect and count.

    The default trains the BCCD-WBC recipe (ResNet-18 FPN at 320 px, 350 seeded steps) on the BCCD-WBC fields
    shipped with the package (MIT) and scores its held-out val fields; --synthetic runs the lighter synthetic-smear
    demo. Training is a fixed amount of seeded work, so the result does not depend on the CPU's speed; after each
    epoch it prints how long the rest will take here. It prints where everything was written and the held-out
    mask mAP50 it reached.
    """
    from mrcnn_tf.wbc.demo import DEMO_EPOCHS, check_output, run_demo, run_synthetic_demo

    path = check_output(output)
    if synthetic:
        run_synthetic_demo(path, epochs=epochs or DEMO_EPOCHS, seed=seed, echo=click.echo)
    else:
        run_demo(path, epochs=epochs, seed=seed, echo=click.echo)
