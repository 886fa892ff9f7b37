"""`mrcnn-tf detect`: find and type leukocytes in an image or a folder of images.

Writes to --output (the formats are described in mrcnn_tf/inference/detect_results.py):
    <name>_overlay.png   the image with tinted masks, outlines, boxes and "type score" captions (not with
                         --no-overlays)
    detections.jsonl     one line per finished image, flushed after every batch (what --resume reads)
    detections.json      COCO results (image_id, category_id, bbox [x, y, w, h], score, RLE segmentation)
    images.json          the COCO "images" and "categories" those results refer to
    counts.csv           the differential count: cells of each type per image, the total, and percentages

Images go through the model --batch-size at a time while the next ones are read and the previous ones
written. Result files already in --output are never replaced unless --force is given; --resume continues
a stopped run there, skipping the images it finished.
"""
import contextlib
import pathlib
import time

import click

from mrcnn_tf.cli._common import class_names_for, list_images, load_inference_model, weights_options
from mrcnn_tf.inference.detect_folder import run_detect
from mrcnn_tf.inference.detect_results import JOURNAL_NAME, existing_results, overlay_name, write_counts
from mrcnn_tf.errors import MrcnnError

# Earlier names of the library functions, for code that imported them from here.
_overlay_name = overlay_name
__all__ = ["detect", "run_detect", "write_counts", "existing_results"]
# Batches of 4 cost no more per image than single images on a 2-core CPU and far less on a GPU.
DEFAULT_BATCH_SIZE = 4


def refuse_existing(output, inputs, overlays, force, resume):
    """Stop before the (slow) model build if --output holds results this run may not replace."""
    taken = existing_results(output, inputs, overlays=overlays)
    journal = pathlib.Path(output) / JOURNAL_NAME
    if not taken or force or (resume and journal.is_file()):
        return
    first = f"{pathlib.Path(output) / taken[0]} already exists ({len(taken)} result file(s) in --output)"
    if resume:
        raise MrcnnError(f"{first}: --resume found no {JOURNAL_NAME} to continue; choose another --output "
                         "or pass --force to replace them")
    resumable = ", --resume to continue that run," if journal.is_file() else ""
    raise MrcnnError(f"{first}: choose another --output{resumable} or pass --force to replace them")


def batch_overrides(overrides, batch_size):
    """--set pairs plus IMAGES_PER_GPU from --batch-size (given, or the default unless --set names it)."""
    named = any(pair.split("=", 1)[0].strip().upper() == "IMAGES_PER_GPU" for pair in overrides)
    if batch_size is None and named:
        return tuple(overrides)
    return tuple(overrides) + (f"IMAGES_PER_GPU={batch_size or DEFAULT_BATCH_SIZE}",)


class _ProgressBar:
    """click's progress bar over the images still to detect, with their rate and the time left."""

    def __init__(self, stack):
        self.stack, self.bar, self.shown = stack, None, 0
        self.started = None

    def __call__(self, done, todo):
        if self.bar is None:
            self.started = time.perf_counter()
            self.bar = self.stack.enter_context(click.progressbar(
                length=todo, label=f"Detecting {todo} images", show_pos=True, show_eta=True,
                item_show_func=lambda rate: rate))
            return
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(done - self.shown, current_item=f"{rate:.2f} images/s")
        self.shown = done


@click.command()
@weights_options
@click.option("--input", "input_path", required=True, type=click.Path(),
              help="An image file or a folder of images.")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help=f"Images per model call, IMAGES_PER_GPU  [default: {DEFAULT_BATCH_SIZE}, or --set IMAGES_PER_GPU]")
@click.option("--no-overlays", is_flag=True, help="Skip the overlay PNGs (faster); JSON and counts are written.")
@click.option("--resume", is_flag=True, help="Continue the stopped run in --output, skipping the images it finished.")
@click.option("--force", is_flag=True, help="Write over results already in --output.")
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), default=None, metavar="UM",
              help="Micrometres per pixel: cells.csv (and --geojson) give lengths in um and areas in um^2.")
@click.option("--geojson", is_flag=True, help="Also write one QuPath-readable GeoJSON file of cells (and nuclei) "
                                              "per image.")
def detect(weights, logs, overrides, input_path, output, batch_size, no_overlays, resume, force, pixel_size,
           geojson):
    """Find and type cells: overlay PNGs, COCO results JSON, the differential count and a per-cell table (cells.csv:
    type, score, box, areas, N:C ratio, shape, nuclear lobes, colours)."""
    from mrcnn_tf.wbc.morphometry import CellTable

    inputs = list_images(input_path)
    refuse_existing(output, inputs, overlays=not no_overlays, force=force, resume=resume)
    model, checkpoint = load_inference_model(weights, logs, batch_overrides(overrides, batch_size))
    click.echo(f"Weights: {checkpoint}")
    class_names = class_names_for(model.config)
    with contextlib.ExitStack() as stack:
        summary = run_detect(model, inputs, output, class_names, echo=click.echo,
                             overlays=not no_overlays, resume=resume, force=force, progress=_ProgressBar(stack),
                             run_info={"weights": str(pathlib.Path(checkpoint).resolve()), "pixel_size": pixel_size,
                                       "geojson": geojson},
                             cell_table=CellTable(class_names, pixel_size=pixel_size, geojson=geojson))
    total = sum(summary["counts"].values())
    counts = ", ".join(f"{name} {n}" for name, n in summary["counts"].items())
    if summary["detected"]:
        click.echo(f"Detected {summary['detected']} images in {summary['seconds']:.1f} s "
                   f"({summary['detected'] / summary['seconds']:.2f} images/s)")
    click.echo(f"{summary['images']} images, {total} cells: {counts}")
    written = "detections.json, images.json and counts.csv" if no_overlays else \
        "overlays, detections.json, images.json and counts.csv"
    click.echo(f"Wrote {written} to {output}")
    unit = "um^2" if pixel_size else "px"
    click.echo(f"Per-cell table (areas in {unit}): {pathlib.Path(output) / CellTable.FILE_NAME}"
               + ("; QuPath GeoJSON: one .geojson per image" if geojson else ""))
