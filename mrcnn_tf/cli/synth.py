"""`mrcnn-tf synth OUT --per-class N [--mixt M] [--seed S] [--force]`: a synthetic LISC set (no TensorFlow needed).

An existing ``OUT/LISC Database`` is never written over: the command refuses unless ``--force``.
"""
import pathlib
import shutil
import time

import click


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, writable=True))
@click.option("--per-class", type=click.IntRange(min=0), required=True,
              help="Images per type folder (Baso, eosi, lymp, mono, neut).")
@click.option("--mixt", type=click.IntRange(min=0), default=0, show_default=True,
              help="Images in 'mixt', each with 2-4 leukocytes of different types.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: the same seed writes the same files.")
@click.option("--force", is_flag=True, help="Replace an existing OUT/LISC Database (and its manifest).")
def synth(out, per_class, mixt, seed, force):
    """Write a synthetic blood-smear set to OUT in exactly LISC's layout and grey coding.

    OUT/LISC Database/Main Dataset/<folder>/<n>.bmp (720x576 RGB), the expert masks under
    OUT/LISC Database/Ground Truth Segmentation/<folder>/areaforexpert1/<n>_expert.bmp (712x568 grey),
    and the truth (instances, types, boxes) in OUT/synth_manifest.json.
    """
    from mrcnn_tf.wbc import synth as generator
    from mrcnn_tf.errors import DatasetError

    database, manifest_path = pathlib.Path(out) / generator.DATABASE, pathlib.Path(out) / generator.MANIFEST_NAME
    # Never write over a dataset (a real LISC copy would be silently mixed with synthetic files).
    if (database.exists() and (not database.is_dir() or any(database.iterdir()))) or manifest_path.exists():
        if not force:
            raise DatasetError(f"{database if database.exists() else manifest_path} already exists: choose "
                               "another OUT or pass --force to replace it")
        try:
            if database.is_dir():
                shutil.rmtree(database)
            else:
                database.unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)
        except OSError as exc:
            raise DatasetError(f"{database}: cannot remove the old set ({exc}); remove it by hand") from None
    start = time.perf_counter()
    try:
        manifest = generator.write_lisc(out, per_class=per_class, mixt=mixt, seed=seed)
    except OSError as exc:
        raise DatasetError(f"{out}: cannot write the synthetic set ({exc}); choose a writable folder") from None
    cells = sum(len(image["instances"]) for image in manifest["images"])
    click.echo(f"wrote {len(manifest['images'])} images ({cells} leukocytes) to "
               f"{out}/{generator.DATABASE} in {time.perf_counter() - start:.1f} s (seed {seed})")
