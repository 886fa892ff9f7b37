"""`mrcnn-tf synth OUT --per-class N [--mixt M] [--seed S]`: a synthetic LISC set (no TensorFlow needed)."""
import time

import click


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, writable=True))
@click.option("--per-class", type=click.IntRange(min=0), required=True,
              help="Images per type folder (Baso, eosi, lymp, mono, neut).")
@click.option("--mixt", type=click.IntRange(min=0), default=0, show_default=True,
              help="Images in 'mixt', each with 2-4 leukocytes of different types.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: the same seed writes the same files.")
def synth(out, per_class, mixt, seed):
    """Write a synthetic blood-smear set to OUT in exactly LISC's layout and grey coding.

    OUT/LISC Database/Main Dataset/<folder>/<n>.bmp (720x576 RGB), the expert masks under
    OUT/LISC Database/Ground Truth Segmentation/<folder>/areaforexpert1/<n>_expert.bmp (712x568 grey),
    and the truth (instances, types, boxes) in OUT/synth_manifest.json.
    """
    from mrcnn_tf import synth as generator
    from mrcnn_tf.errors import DatasetError

    start = time.perf_counter()
    try:
        manifest = generator.write_lisc(out, per_class=per_class, mixt=mixt, seed=seed)
    except OSError as exc:
        raise DatasetError(f"{out}: cannot write the synthetic set ({exc}); choose a writable folder") from None
    cells = sum(len(image["instances"]) for image in manifest["images"])
    click.echo(f"wrote {len(manifest['images'])} images ({cells} leukocytes) to "
               f"{out}/{generator.DATABASE} in {time.perf_counter() - start:.1f} s (seed {seed})")
