"""Detection over a folder of images, written as it goes: the core of `mrcnn-tf detect` and of the demo.

    from mrcnn_tf.inference.detect_folder import class_names_for, list_images, run_detect
    summary = run_detect(model, list_images("smears/"), "results/", class_names_for(model.config))

Images go through `MaskRCNN.detect` in batches of `model.config.BATCH_SIZE`. A reader thread loads the
next batches while the model runs, and a writer thread writes the previous batch's overlays, journal
lines and count rows, so neither disk nor PNG encoding waits for the model, nor the model for them.
Everything a finished batch produced is on disk before its progress is reported; `resume=True` skips
the images the journal (detections.jsonl, see `mrcnn_tf.inference.detect_results`) already holds, so a run stopped
in any way, kill -9 included, ends with the same files as one that never stopped.
"""
import collections
import concurrent.futures
import pathlib
import time

from mrcnn_tf.inference.detect_results import (JOURNAL_NAME, CountsWriter, DetectJournal, assemble, existing_results,
                                               input_key, overlay_name, plan_names, run_header, write_counts)
from mrcnn_tf.errors import MrcnnError

__all__ = ["IMAGE_EXTENSIONS", "list_images", "class_names_for", "run_detect", "write_counts", "existing_results",
           "overlay_name", "JOURNAL_NAME"]

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
READ_AHEAD_BATCHES = 2
OVERLAY_FILL = 0.15  # opacity of a detected cell's tint in the overlays


def list_images(path):
    """Image files of FILE_OR_DIR: the file itself, or the folder's images sorted by name (not recursive)."""
    path = pathlib.Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MrcnnError(f"--input {path}: no such file or folder; give an image file or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise MrcnnError(f"--input {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return files


def class_names_for(config, dataset=None):
    """Class names indexed by class id (0 = BG): the dataset's, LISC's for 6 classes, else class_<id>."""
    if dataset is not None:
        return list(dataset.class_names)
    from mrcnn_tf.data.lisc_format import CLASS_NAMES

    if config.NUM_CLASSES == 1 + len(CLASS_NAMES):
        return ["BG"] + list(CLASS_NAMES)
    return ["BG"] + [f"class_{i}" for i in range(1, config.NUM_CLASSES)]


def geojson_name(overlay_name):
    """``a_overlay.png`` -> ``a.geojson``: an image's QuPath objects beside its overlay."""
    return overlay_name[:-len("_overlay.png")] + ".geojson" if overlay_name.endswith("_overlay.png") else \
        overlay_name + ".geojson"


def _is_done(record, names, overlays, output, cell_table=None):
    """Whether a journal record finishes an input: same row name and, where wanted, its overlay, its cell rows and
    its GeoJSON file."""
    if record is None or record.get("count_name") != names[1]:
        return False
    if cell_table is not None and ("cells" not in record or (
            cell_table.geojson and not (output / geojson_name(names[0])).is_file())):
        return False
    return not overlays or (record.get("overlay") == names[0] and (output / names[0]).is_file())


class _BatchWriter:
    """Writes one batch's results (runs on the writer thread, one batch at a time, in order)."""

    def __init__(self, output, inputs, names, class_names, overlays, journal, counts, cell_table=None):
        self.output, self.inputs, self.names = output, inputs, names
        self.class_names, self.overlays = class_names, overlays
        self.journal, self.counts, self.cell_table = journal, counts, cell_table

    def __call__(self, indices, images, detections):
        from mrcnn_tf import visualize
        from mrcnn_tf.evaluation.coco import detections_to_coco

        records = []
        for i, image, r in zip(indices, images, detections):
            overlay, count_name = self.names[i]
            # Files before the journal line: a journal line promises its overlay and GeoJSON are complete.
            if self.overlays:
                # A light fill keeps the cell visible under its outline; the nucleus is outlined inside it.
                visualize.save_instances(self.output / overlay, image, r["rois"], r["masks"], r["class_ids"],
                                         self.class_names, r["scores"], nucleus_masks=r.get("nucleus_masks"),
                                         mask_alpha=OVERLAY_FILL)
            record = {"key": input_key(self.inputs[i]), "file_name": self.inputs[i].name,
                      "height": int(image.shape[0]), "width": int(image.shape[1]),
                      "overlay": overlay if self.overlays else None, "count_name": count_name,
                      "class_ids": [int(c) for c in r["class_ids"]],
                      "results": detections_to_coco(i + 1, r["rois"], r["class_ids"], r["scores"], r["masks"])}
            if self.cell_table is not None:
                record["cells"] = self.cell_table.rows(count_name, image, r)
                if self.cell_table.geojson:
                    self.cell_table.write_geojson(self.output / geojson_name(overlay), r, record["cells"])
            records.append(record)
        self.journal.append(records)
        self.counts.append((rec["count_name"], rec["class_ids"]) for rec in records)
        return records


def _start_journal(output, header, resume, force, echo):
    """The journal for this run and the records it already holds (empty for a new run)."""
    journal = DetectJournal(output / JOURNAL_NAME)
    if resume and journal.path.is_file():
        try:
            return journal, journal.resume(header)
        except MrcnnError:
            if not force:
                raise
            echo(f"{journal.path}: another run's results; starting over (--force)")
    elif resume:
        echo(f"Nothing to resume in {output} (no {JOURNAL_NAME}): starting a new run")
    journal.start(header)
    return journal, {}


def run_detect(model, inputs, output, class_names, echo=print, batch_size=None, overlays=True, resume=False,
               force=False, progress=None, run_info=None, cell_table=None):
    """Detect on every file of `inputs` and write overlays, the journal, COCO JSON and the count CSV to `output`.

    Args:
        model: an inference `MaskRCNN`.
        inputs: image paths (any mix of folders; clashing names get their folder in the overlay name).
        output: results folder (created). The caller checks that nothing there may not be replaced
            (`existing_results`).
        class_names: names by class id, 0 = BG.
        echo: takes one line of news (resume notes).
        batch_size: images per `model.detect` call; default `model.config.BATCH_SIZE`.
        overlays: False skips the overlay PNGs (the JSON and CSV files are still written).
        resume: continue the run whose journal is in `output`, skipping the images it finished.
        force: with `resume`, a journal of another run (other weights or settings) is replaced instead
            of refused.
        progress: called as ``progress(done, todo)`` once before the first batch (done 0) and after each
            batch is on disk, `done` of the `todo` images this call detects.
        run_info: JSON-able facts that identify the run besides its config (e.g. ``{"weights": path}``).
        cell_table: measures each cell and writes the per-cell table (``cell_table.FILE_NAME``, in input order) and,
            with its `geojson`, one GeoJSON file per image (`mrcnn_tf.wbc.morphometry.CellTable`); None: neither.

    Returns:
        dict: images, counts (type name -> cells), skipped (finished before: resumed), detected,
        seconds (of this call).

    Raises:
        MrcnnError / DatasetError: an unreadable image (the batches before it are kept: fix the file and
        resume), or a journal of another run when resuming.
    """
    from mrcnn_tf.data.dataset import Dataset

    started = time.perf_counter()
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    inputs = [pathlib.Path(p) for p in inputs]
    names = plan_names(inputs)
    header = run_header(model.config, class_names, **(run_info or {}))
    journal, records = _start_journal(output, header, resume, force, echo)
    todo = [i for i, path in enumerate(inputs) if not _is_done(records.get(input_key(path)), names[i], overlays,
                                                                 output, cell_table)]
    if resume and len(todo) < len(inputs):
        echo(f"Resuming: {len(inputs) - len(todo)} of {len(inputs)} images already done")
    remaining = set(todo)
    finished = [(names[i][1], records[input_key(p)]["class_ids"]) for i, p in enumerate(inputs) if i not in remaining]
    counts = CountsWriter(output / "counts.csv", class_names, finished)
    try:
        # Dataset.load_image converts grey/RGBA/CMYK/16-bit files to RGB and names bad files.
        reader = Dataset()
        for i, path in enumerate(inputs):
            reader.add_image("input", i, str(path))
        write = _BatchWriter(output, inputs, names, class_names, overlays, journal, counts, cell_table)
        step = max(1, int(batch_size or model.config.BATCH_SIZE))
        batches = [todo[s:s + step] for s in range(0, len(todo), step)]
        detected = _detect_batches(model, batches, reader.load_image, write, len(todo), progress)
        try:
            for record in detected:
                records[record["key"]] = record
        finally:
            detected.close()  # even on Ctrl-C here: the batch being written is finished before the files close
    finally:
        journal.close()
        counts.close()
    totals = assemble(output, inputs, names, records, class_names)
    if cell_table is not None:
        cell_table.write(output / cell_table.FILE_NAME, [row for path in inputs
                                                         for row in records[input_key(path)]["cells"]])
    return {"images": len(inputs), "counts": dict(zip(class_names[1:], (int(t) for t in totals))),
            "skipped": len(inputs) - len(todo), "detected": len(todo), "seconds": time.perf_counter() - started}


def _detect_batches(model, batches, load_image, write, todo, progress):
    """Run `batches` (lists of input indices) through the model, reading ahead and writing behind.

    Yields the journal records of each batch once they are on disk. On any error (or Ctrl-C) the batch
    being written is finished first, so everything detected before the error is kept.
    """
    reading = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect-read")
    writing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect-write")
    ahead = collections.deque()
    pending, done = None, 0

    def finish(future):
        nonlocal done
        records = future.result()  # raises the writer's error here, in the caller's thread
        done += len(records)
        if progress is not None:
            progress(done, todo)
        return records

    if progress is not None and todo:
        progress(0, todo)
    try:
        for batch in batches[:READ_AHEAD_BATCHES]:
            ahead.append(reading.submit(lambda b=batch: [load_image(i) for i in b]))
        for n, batch in enumerate(batches):
            images = ahead.popleft().result()  # a bad file's DatasetError surfaces here, in order
            if n + READ_AHEAD_BATCHES < len(batches):
                later = batches[n + READ_AHEAD_BATCHES]
                ahead.append(reading.submit(lambda b=later: [load_image(i) for i in b]))
            detections = model.detect(images, verbose=0)
            if pending is not None:
                yield from finish(pending)
            pending = writing.submit(write, batch, images, detections)
        if pending is not None:
            current, pending = pending, None
            yield from finish(current)
    finally:
        reading.shutdown(wait=True, cancel_futures=True)
        writing.shutdown(wait=True)  # the batch in hand reaches the disk even when stopping on an error
