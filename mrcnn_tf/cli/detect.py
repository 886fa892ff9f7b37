"""`mrcnn-tf detect`: find and type leukocytes in an image or a folder of images.

Writes to --output:
    <name>_overlay.png   the image with tinted masks, outlines, boxes and "type score" captions
    detections.json      COCO results (image_id, category_id, bbox [x, y, w, h], score, RLE segmentation)
    images.json          the COCO "images" and "categories" those results refer to
    counts.csv           the differential count: cells of each type per image, the total, and percentages

Result files already in --output are never replaced unless --force is given.
"""
import collections
import csv
import json
import pathlib

import click
import numpy as np

from mrcnn_tf.cli._common import class_names_for, list_images, load_inference_model, weights_options
from mrcnn_tf.errors import MrcnnError


def _overlay_name(path, used, prefer_folder=False):
    """``<stem>_overlay.png``; on a clash the parent folder, then the extension, then a number join the name.

    With `prefer_folder` (the file name occurs in several input folders) the folder comes first.

    Inputs from several folders often share file names (LISC's ``Baso/1.bmp``, ``eosi/1.bmp``...): no
    overlay may be written over another one.
    """
    candidates = [] if prefer_folder else [path.stem]
    candidates += [f"{path.parent.name}_{path.stem}", f"{path.parent.name}_{path.stem}_{path.suffix.lstrip('.')}"]
    candidates += [f"{candidates[-1]}_{n}" for n in range(2, len(used) + 3)]
    name = next(f"{stem}_overlay.png" for stem in candidates if f"{stem}_overlay.png" not in used)
    used.add(name)
    return name


def write_counts(path, rows, class_names):
    """The differential count CSV: one row per image, then "total" and "percent" rows.

    Args:
        path: output .csv.
        rows: list of (image file name, class_ids of its detections).
        class_names: names by class id, 0 = BG.

    Returns:
        int [num_classes - 1] totals per type.
    """
    types = class_names[1:]
    totals = np.zeros(len(types), dtype=np.int64)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image"] + types + ["total"])
        for name, class_ids in rows:
            counts = np.bincount(np.asarray(class_ids, dtype=np.int64), minlength=len(class_names))[1:len(class_names)]
            totals += counts
            writer.writerow([name] + [int(c) for c in counts] + [int(counts.sum())])
        writer.writerow(["total"] + [int(c) for c in totals] + [int(totals.sum())])
        share = totals / totals.sum() * 100 if totals.sum() else np.zeros(len(types))
        writer.writerow(["percent"] + [f"{p:.1f}" for p in share] + ["100.0" if totals.sum() else "0.0"])
    return totals


def existing_results(output, inputs):
    """Names of the files `run_detect` would write to `output` that already exist there."""
    output = pathlib.Path(output)
    if not output.is_dir():
        return []
    used = set()
    counts = collections.Counter(path.name for path in inputs)
    names = [_overlay_name(path, used, prefer_folder=counts[path.name] > 1) for path in inputs]
    names += ["detections.json", "images.json", "counts.csv"]
    return [name for name in names if (output / name).exists()]


def run_detect(model, inputs, output, class_names, echo=click.echo):
    """Detect on every file of `inputs` and write overlays, COCO JSON and the count CSV to `output`.

    Returns:
        dict: per-type totals and the number of images.
    """
    from mrcnn_tf import visualize
    from mrcnn_tf.data.dataset import Dataset
    from mrcnn_tf.evaluation.coco import detections_to_coco

    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    # Dataset.load_image converts grey/RGBA/CMYK/16-bit files to RGB and names bad files.
    reader = Dataset()
    for i, path in enumerate(inputs):
        reader.add_image("input", i, str(path))
    used, results, images, count_rows = set(), [], [], []
    # File names found in several input folders (LISC's Baso/1.bmp, eosi/1.bmp ...) carry their folder.
    names = collections.Counter(path.name for path in inputs)
    for i, path in enumerate(inputs):
        image = reader.load_image(i)
        r = model.detect([image], verbose=0)[0]
        image_id = i + 1
        images.append({"id": image_id, "file_name": path.name, "height": int(image.shape[0]),
                       "width": int(image.shape[1])})
        results.extend(detections_to_coco(image_id, r["rois"], r["class_ids"], r["scores"], r["masks"]))
        overlay = output / _overlay_name(path, used, prefer_folder=names[path.name] > 1)
        visualize.save_instances(overlay, image, r["rois"], r["masks"], r["class_ids"], class_names, r["scores"])
        count_rows.append((f"{path.parent.name}/{path.name}" if names[path.name] > 1 else path.name, r["class_ids"]))
        found = ", ".join(f"{class_names[c]} {s:.2f}" for c, s in zip(r["class_ids"], r["scores"])) or "no cells"
        echo(f"{path.name}: {found}")
    (output / "detections.json").write_text(json.dumps(results))
    categories = [{"id": k, "name": n} for k, n in enumerate(class_names) if k > 0]
    (output / "images.json").write_text(json.dumps({"images": images, "categories": categories}, indent=1))
    totals = write_counts(output / "counts.csv", count_rows, class_names)
    return {"images": len(inputs), "counts": dict(zip(class_names[1:], (int(t) for t in totals)))}


@click.command()
@weights_options
@click.option("--input", "input_path", required=True, type=click.Path(),
              help="An image file or a folder of images.")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Folder for the results.")
@click.option("--force", is_flag=True, help="Write over results already in --output.")
def detect(weights, logs, overrides, input_path, output, force):
    """Find and type cells: overlay PNGs, COCO results JSON and a differential count CSV."""
    inputs = list_images(input_path)
    taken = existing_results(output, inputs)
    # Refuse before the (slow) model build: earlier results are never replaced silently.
    if taken and not force:
        raise MrcnnError(f"{pathlib.Path(output) / taken[0]} already exists ({len(taken)} result file(s) in --output): "
                         "choose another --output or pass --force to replace them")
    model, checkpoint = load_inference_model(weights, logs, overrides)
    click.echo(f"Weights: {checkpoint}")
    summary = run_detect(model, inputs, output, class_names_for(model.config))
    total = sum(summary["counts"].values())
    counts = ", ".join(f"{name} {n}" for name, n in summary["counts"].items())
    click.echo(f"{summary['images']} images, {total} cells: {counts}")
    click.echo(f"Wrote overlays, detections.json, images.json and counts.csv to {output}")
