"""The files `run_detect` writes, and the journal that lets a stopped run resume.

Inside the output folder:

    <stem>_overlay.png   one per image (named by `overlay_name`: inputs from several folders share names)
    detections.jsonl     the journal: a first line describing the run, then one line per finished image
                         (its size, overlay, count-row name, class ids and COCO results), appended and
                         flushed to disk after every batch
    counts.csv           rows appended as images finish; rewritten with the "total" and "percent" rows
                         (`write_counts`) when the run completes
    detections.json      COCO results with RLE masks  } assembled from the journal when the run
    images.json          COCO "images" + "categories"  } completes (written atomically)

A run killed at any point leaves a journal whose complete lines are finished images: an overlay is
written before its line, and a torn last line (kill -9 mid-write) is dropped on resume.
"""
import collections
import csv
import json
import os
import pathlib

import numpy as np

from mrcnn_tf.errors import MrcnnError

JOURNAL_NAME = "detections.jsonl"
FINAL_NAMES = ("detections.json", "images.json", "counts.csv")
JOURNAL_FORMAT = 1
# Settings that change how images are grouped into batches, never what is detected in one.
BATCH_KEYS = ("BATCH_SIZE", "IMAGES_PER_GPU", "GPU_COUNT")
# How the machine computes, never what is detected: a run resumed on another CPU kind continues.
MACHINE_KEYS = ("CPU_KERNELS",)


def overlay_name(path, used, prefer_folder=False):
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


def plan_names(inputs):
    """(overlay file name, counts.csv row name) for each input path, in input order.

    File names found in several input folders (LISC's Baso/1.bmp, eosi/1.bmp ...) carry their folder.
    """
    used = set()
    repeated = collections.Counter(path.name for path in inputs)
    return [(overlay_name(path, used, prefer_folder=repeated[path.name] > 1),
             f"{path.parent.name}/{path.name}" if repeated[path.name] > 1 else path.name) for path in inputs]


def existing_results(output, inputs, overlays=True):
    """Names of the files `run_detect` would write to `output` that already exist there."""
    output = pathlib.Path(output)
    if not output.is_dir():
        return []
    names = [overlay for overlay, _ in plan_names(inputs)] if overlays else []
    names += list(FINAL_NAMES) + [JOURNAL_NAME]
    return [name for name in names if (output / name).exists()]


def count_row(name, class_ids, class_names):
    """One counts.csv row: the image name, cells of each type (class ids 1..), their total."""
    counts = np.bincount(np.asarray(class_ids, dtype=np.int64), minlength=len(class_names))[1:len(class_names)]
    return [name] + [int(c) for c in counts] + [int(counts.sum())]


def count_header(class_names):
    return ["image"] + list(class_names[1:]) + ["total"]


def write_counts(path, rows, class_names):
    """The differential count CSV: one row per image, then "total" and "percent" rows (written atomically).

    Args:
        path: output .csv.
        rows: list of (image file name, class_ids of its detections).
        class_names: names by class id, 0 = BG.

    Returns:
        int [num_classes - 1] totals per type.
    """
    path = pathlib.Path(path)
    totals = np.zeros(len(class_names) - 1, dtype=np.int64)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(count_header(class_names))
        for name, class_ids in rows:
            row = count_row(name, class_ids, class_names)
            totals += row[1:-1]
            writer.writerow(row)
        writer.writerow(["total"] + [int(c) for c in totals] + [int(totals.sum())])
        share = totals / totals.sum() * 100 if totals.sum() else np.zeros(len(totals))
        writer.writerow(["percent"] + [f"{p:.1f}" for p in share] + ["100.0" if totals.sum() else "0.0"])
    os.replace(partial, path)
    return totals


def _write_atomically(path, text):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def run_header(config, class_names, **info):
    """What identifies a run in its journal: class names, the detection settings and `info` (e.g. weights)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in BATCH_KEYS + MACHINE_KEYS}
    # A JSON round trip makes tuples lists, as they will read back from the file.
    return json.loads(json.dumps({"format": JOURNAL_FORMAT, "class_names": list(class_names), **info,
                                  "config": settings}))


def _difference(old, new):
    """The first setting that differs between two run headers, as 'KEY was A, now B'."""
    for key in sorted(set(old) | set(new)):
        if key == "config" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            found = _difference(old[key], new[key])
            if found:
                return found
        elif old.get(key) != new.get(key):
            return f"{key} was {old.get(key)!r}, now {new.get(key)!r}"
    return None


class DetectJournal:
    """The append-only JSON Lines record of a detect run (`JOURNAL_NAME` in the output folder).

    Args:
        path: the journal file.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self._file = None

    def start(self, header):
        """Begin a new journal holding only `header` (an earlier one is replaced)."""
        self._file = open(self.path, "w", encoding="utf-8")
        self._append_lines([{"run": header}])

    def read(self):
        """(header, records by input key) of the journal on disk; a torn last line is dropped from the file.

        Raises:
            MrcnnError: a damaged line before the last one, or no run header.
        """
        data = self.path.read_bytes()
        complete = data[:data.rfind(b"\n") + 1]  # a line without its newline was cut by a kill
        if len(complete) < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode("utf-8", errors="replace").splitlines()
        entries = []
        for number, line in enumerate(lines, 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise MrcnnError(f"{self.path}: line {number} is damaged; pass --force to start the run over "
                                 "or choose another --output") from None
        if not entries or not isinstance(entries[0], dict) or "run" not in entries[0]:
            raise MrcnnError(f"{self.path}: not a detect journal (no run line first); pass --force to replace "
                             "it or choose another --output")
        records = {e["image"]["key"]: e["image"] for e in entries[1:] if isinstance(e, dict) and "image" in e}
        return entries[0]["run"], records

    def resume(self, header):
        """Continue the journal on disk if it is of the run `header` describes.

        Returns:
            dict input key -> record of the images already finished.

        Raises:
            MrcnnError: the journal belongs to another run (other weights, settings or classes).
        """
        old, records = self.read()
        different = _difference(old, header)
        if different:
            raise MrcnnError(f"{self.path}: results of another run ({different}); choose another --output, "
                             "or pass --force to replace them")
        self._file = open(self.path, "a", encoding="utf-8")
        return records

    def append(self, records):
        """Add finished images' records and push them to disk (they survive a kill from here on)."""
        self._append_lines([{"image": record} for record in records])

    def _append_lines(self, entries):
        self._file.write("".join(json.dumps(entry) + "\n" for entry in entries))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class CountsWriter:
    """counts.csv while a run goes on: the header and the rows of finished images, appended per batch.

    Args:
        path: the counts.csv file.
        class_names: names by class id, 0 = BG.
        rows: (name, class_ids) of images finished before (a resumed run), written first.
    """

    def __init__(self, path, class_names, rows=()):
        self.class_names = list(class_names)
        self._file = open(path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(count_header(self.class_names))
        self.append(rows)

    def append(self, rows):
        for name, class_ids in rows:
            self._writer.writerow(count_row(name, class_ids, self.class_names))
        self._file.flush()

    def close(self):
        self._file.close()


def assemble(output, inputs, names, records, class_names):
    """Write detections.json, images.json and the final counts.csv from the journal's records.

    Image ids are input positions + 1, so the files are the same whether the run went in one go or
    was resumed.

    Args:
        output: the output folder.
        inputs: input paths, in order.
        names: `plan_names(inputs)`.
        records: dict input key -> journal record, one for each input.
        class_names: names by class id, 0 = BG.

    Returns:
        int [num_classes - 1] totals per type.
    """
    output = pathlib.Path(output)
    results, images, rows = [], [], []
    for position, (path, (_, count_name)) in enumerate(zip(inputs, names)):
        record = records[input_key(path)]
        image_id = position + 1
        images.append({"id": image_id, "file_name": record["file_name"], "height": record["height"],
                       "width": record["width"]})
        results.extend(dict(r, image_id=image_id) for r in record["results"])
        rows.append((count_name, record["class_ids"]))
    _write_atomically(output / "detections.json", json.dumps(results))
    categories = [{"id": k, "name": n} for k, n in enumerate(class_names) if k > 0]
    _write_atomically(output / "images.json", json.dumps({"images": images, "categories": categories}, indent=1))
    return write_counts(output / "counts.csv", rows, class_names)


def input_key(path):
    """How the journal names an input: its absolute path (the same from any working directory)."""
    return str(pathlib.Path(path).resolve())
