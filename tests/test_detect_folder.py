"""`run_detect` and its files (mrcnn_tf/inference/detect_folder.py, detect_results.py) without TensorFlow.

A stand-in model answers `detect` with detections computed from each image's pixels (so results are
checkable and the same on every call) and records how it was called; the files written are checked
against plain references: counts by a Counter, COCO records by pycocotools, resumed runs against one
uninterrupted run.
"""
import collections
import csv
import json
import threading

import numpy as np
import pytest
from helpers_model import tiny_config
from PIL import Image
from pycocotools import mask as mask_utils

from mrcnn_tf.inference import detect_results
from mrcnn_tf.inference.detect_folder import class_names_for, list_images, run_detect
from mrcnn_tf.inference.detect_results import (JOURNAL_NAME, DetectJournal, count_row, existing_results, plan_names,
                                               run_header, write_counts)
from mrcnn_tf.errors import DatasetError, MrcnnError

CLASS_NAMES = ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
FINAL = ("detections.json", "images.json", "counts.csv")


class StandInModel:
    """`detect` like MaskRCNN's, from pixel sums: image k gets k % 3 cells (boxes and masks inside it)."""

    def __init__(self, images_per_gpu=2, before_detect=None):
        self.config = tiny_config(NUM_CLASSES=6, IMAGES_PER_GPU=images_per_gpu)
        self.calls = []
        self.before_detect = before_detect

    def detect(self, images, verbose=0):
        self.calls.append(len(images))
        if self.before_detect:
            self.before_detect(len(self.calls))
        results = []
        for image in images:
            h, w = image.shape[:2]
            seed = int(image[..., 0].astype(np.int64).sum())
            n = int(image[0, 0, 1]) % 3
            rois = np.array([[k * 4, k * 5, h // 2 + k * 4, w // 2 + k * 5] for k in range(n)], np.int32).reshape(-1, 4)
            masks = np.zeros((h, w, n), bool)
            for k, (y1, x1, y2, x2) in enumerate(rois):
                masks[y1 + 1:y2 - 1, x1 + 1:x2 - 1, k] = True
            results.append({"rois": rois, "class_ids": np.array([1 + (seed + k) % 5 for k in range(n)], np.int32),
                            "scores": np.array([0.5 + 0.1 * k for k in range(n)], np.float32), "masks": masks})
        return results


def write_images(folder, count, size=(40, 56)):
    """`count` PNGs whose pixel [0, 0, 1] (the stand-in's cell count) is the image number."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for k in range(count):
        image = rng.integers(0, 255, size + (3,), dtype=np.uint8)
        image[0, 0, 1] = k
        path = folder / f"img{k:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def final_files(out):
    return {name: (out / name).read_bytes() for name in FINAL}


def test_list_images_and_class_names(tmp_path):
    paths = write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert list_images(tmp_path / "in") == paths
    assert list_images(paths[1]) == [paths[1]]
    with pytest.raises(MrcnnError, match="no such file or folder"):
        list_images(tmp_path / "absent")
    assert class_names_for(tiny_config(NUM_CLASSES=6)) == CLASS_NAMES
    assert class_names_for(tiny_config(NUM_CLASSES=3)) == ["BG", "class_1", "class_2"]


def test_overlay_and_row_names_never_clash(tmp_path):
    inputs = [tmp_path / "Baso" / "1.bmp", tmp_path / "eosi" / "1.bmp", tmp_path / "eosi" / "1.png",
              tmp_path / "eosi" / "2.bmp"]
    names = plan_names(inputs)
    assert [n for n, _ in names] == ["Baso_1_overlay.png", "eosi_1_overlay.png", "1_overlay.png", "2_overlay.png"]
    assert [r for _, r in names] == ["Baso/1.bmp", "eosi/1.bmp", "1.png", "2.bmp"]
    assert len({n for n, _ in names}) == len(inputs)


def test_counts_match_a_plain_reference(tmp_path, rng):
    rows = [(f"i{k}", rng.integers(1, 6, size=rng.integers(0, 6)).tolist()) for k in range(7)] + [("empty", [])]
    totals = write_counts(tmp_path / "c.csv", rows, CLASS_NAMES)
    with open(tmp_path / "c.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["image"] + CLASS_NAMES[1:] + ["total"]
    reference = collections.Counter()
    for (name, ids), row in zip(rows, table[1:]):
        per = collections.Counter(ids)
        assert row == [name] + [str(per[c]) for c in range(1, 6)] + [str(len(ids))]
        reference.update(ids)
    assert totals.tolist() == [reference[c] for c in range(1, 6)]
    assert table[-2] == ["total"] + [str(reference[c]) for c in range(1, 6)] + [str(sum(reference.values()))]
    share = [float(v) for v in table[-1][1:-1]]
    assert share == pytest.approx([100 * reference[c] / sum(reference.values()) for c in range(1, 6)], abs=0.051)
    assert count_row("none", [], CLASS_NAMES) == ["none", 0, 0, 0, 0, 0, 0]
    write_counts(tmp_path / "z.csv", [("a", [])], CLASS_NAMES)  # no cells at all: zero percentages
    assert (tmp_path / "z.csv").read_text().splitlines()[-1] == "percent,0.0,0.0,0.0,0.0,0.0,0.0"


def test_journal_torn_line_damage_and_other_run(tmp_path):
    header = run_header(tiny_config(NUM_CLASSES=6), CLASS_NAMES, weights="/w/a.h5")
    journal = DetectJournal(tmp_path / JOURNAL_NAME)
    journal.start(header)
    journal.append([{"key": "/x/1.png", "class_ids": [1]}, {"key": "/x/2.png", "class_ids": []}])
    journal.close()
    with open(journal.path, "a") as f:
        f.write('{"image": {"key": "/x/3.png", "clas')  # what kill -9 in the middle of a write leaves
    records = DetectJournal(journal.path).resume(header)
    assert sorted(records) == ["/x/1.png", "/x/2.png"]
    assert journal.path.read_text().endswith("}\n")  # the torn line is gone, appends start on a fresh line
    # The batch size is not part of the run; weights and detection settings are.
    assert DetectJournal(journal.path).read()[0] == run_header(tiny_config(NUM_CLASSES=6, IMAGES_PER_GPU=3),
                                                               CLASS_NAMES, weights="/w/a.h5")
    other = run_header(tiny_config(NUM_CLASSES=6, DETECTION_MIN_CONFIDENCE=0.3), CLASS_NAMES, weights="/w/a.h5")
    with pytest.raises(MrcnnError, match=r"results of another run \(DETECTION_MIN_CONFIDENCE was 0.7, now 0.3\)"):
        DetectJournal(journal.path).resume(other)
    with pytest.raises(MrcnnError, match="weights was '/w/a.h5', now '/w/b.h5'"):
        DetectJournal(journal.path).resume(run_header(tiny_config(NUM_CLASSES=6), CLASS_NAMES, weights="/w/b.h5"))
    lines = journal.path.read_text().splitlines()
    journal.path.write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    with pytest.raises(MrcnnError, match="line 2 is damaged; pass --force"):
        DetectJournal(journal.path).resume(header)
    journal.path.write_text('{"image": {}}\n')
    with pytest.raises(MrcnnError, match="not a detect journal"):
        DetectJournal(journal.path).resume(header)


def test_batches_files_and_coco_records(tmp_path):
    inputs = write_images(tmp_path / "in", 5)
    model = StandInModel(images_per_gpu=2)
    progress = []
    summary = run_detect(model, inputs, tmp_path / "out", CLASS_NAMES, progress=lambda d, t: progress.append((d, t)))
    out = tmp_path / "out"
    assert model.calls == [2, 2, 1]  # BATCH_SIZE images per detect call
    assert progress == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert summary["images"] == 5 and summary["detected"] == 5 and summary["skipped"] == 0
    images = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in images["images"]] == [1, 2, 3, 4, 5]
    assert images["images"][0] == {"id": 1, "file_name": "img00.png", "height": 40, "width": 56}
    results = json.loads((out / "detections.json").read_text())
    expected = [model.detect([np.asarray(Image.open(p))])[0] for p in inputs]
    assert len(results) == sum(len(r["class_ids"]) for r in expected) == sum(summary["counts"].values())
    by_image = collections.defaultdict(list)
    for record in results:
        by_image[record["image_id"]].append(record)
    for image_id, r in enumerate(expected, 1):
        got = by_image[image_id]
        assert [g["category_id"] for g in got] == r["class_ids"].tolist()
        for g, k in zip(got, range(len(got))):
            y1, x1, y2, x2 = r["rois"][k]
            assert g["bbox"] == [x1, y1, x2 - x1, y2 - y1] and g["score"] == pytest.approx(r["scores"][k])
            np.testing.assert_array_equal(mask_utils.decode(g["segmentation"]).astype(bool), r["masks"][..., k])
    rows = list(csv.reader(open(out / "counts.csv", newline="")))
    assert [row[0] for row in rows[1:]] == [p.name for p in inputs] + ["total", "percent"]
    assert sorted(p.name for p in out.glob("*_overlay.png")) == [f"img{k:02d}_overlay.png" for k in range(5)]
    journal = (out / JOURNAL_NAME).read_text().splitlines()
    assert len(journal) == 6 and "run" in json.loads(journal[0])


def test_reads_ahead_and_writes_behind(tmp_path, monkeypatch):
    """Batch 2 is read while batch 1 is in the model; journal lines are written on the writer thread."""
    inputs = write_images(tmp_path / "in", 6)
    loaded = {}
    second_batch_read = threading.Event()
    from mrcnn_tf.data.dataset import Dataset

    original = Dataset.load_image

    def load_image(self, image_id):
        loaded[image_id] = threading.current_thread().name
        if image_id == 3:
            second_batch_read.set()
        return original(self, image_id)

    writers = []
    original_append = DetectJournal.append

    def append(self, records):
        writers.append(threading.current_thread().name)
        original_append(self, records)

    monkeypatch.setattr(Dataset, "load_image", load_image)
    monkeypatch.setattr(DetectJournal, "append", append)
    waited = []
    model = StandInModel(images_per_gpu=2, before_detect=lambda n: waited.append(second_batch_read.wait(5)))
    run_detect(model, inputs, tmp_path / "out", CLASS_NAMES)
    assert waited[0], "the second batch was not read while the first one was in the model"
    assert set(loaded.values()) == {"detect-read_0"}
    assert writers == ["detect-write_0"] * 3


def test_no_overlays_and_resume_adds_them(tmp_path):
    inputs = write_images(tmp_path / "in", 4)
    out = tmp_path / "out"
    run_detect(StandInModel(), inputs, out, CLASS_NAMES, overlays=False)
    assert not list(out.glob("*.png"))
    without = final_files(out)
    model = StandInModel()
    summary = run_detect(model, inputs, out, CLASS_NAMES, resume=True)
    assert summary["detected"] == 4 and len(list(out.glob("*_overlay.png"))) == 4  # redone for their overlays
    assert final_files(out) == without
    model = StandInModel()
    summary = run_detect(model, inputs, out, CLASS_NAMES, resume=True)
    assert model.calls == [] and summary["skipped"] == 4 and final_files(out) == without


def test_stop_on_bad_image_keeps_earlier_batches_then_resume_matches(tmp_path):
    inputs = write_images(tmp_path / "in", 7)
    run_detect(StandInModel(images_per_gpu=2), inputs, tmp_path / "whole", CLASS_NAMES)
    reference = final_files(tmp_path / "whole")
    good = inputs[5].read_bytes()
    inputs[5].write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="img05.png"):
        run_detect(StandInModel(images_per_gpu=2), inputs, out, CLASS_NAMES)
    records = (out / JOURNAL_NAME).read_text().splitlines()[1:]
    assert [json.loads(line)["image"]["file_name"] for line in records] == [f"img{k:02d}.png" for k in range(4)]
    rows = (out / "counts.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [f"img{k:02d}.png" for k in range(4)]  # no totals yet
    assert not (out / "detections.json").exists()
    inputs[5].write_bytes(good)
    model = StandInModel(images_per_gpu=2)
    summary = run_detect(model, inputs, out, CLASS_NAMES, resume=True)
    assert model.calls == [2, 1] and summary["skipped"] == 4
    assert final_files(out) == reference
    for k in range(7):
        name = f"img{k:02d}_overlay.png"
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(tmp_path / "whole" / name)))


def test_resume_with_other_inputs_redoes_only_what_changed(tmp_path):
    inputs = write_images(tmp_path / "in", 4)
    out = tmp_path / "out"
    run_detect(StandInModel(), inputs[:3], out, CLASS_NAMES)
    model = StandInModel()
    run_detect(model, inputs, out, CLASS_NAMES, resume=True)
    assert model.calls == [1]  # only the new image
    run_detect(StandInModel(), inputs, tmp_path / "whole", CLASS_NAMES)
    assert final_files(out) == final_files(tmp_path / "whole")


def test_resume_refuses_another_run_unless_forced(tmp_path):
    inputs = write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_detect(StandInModel(), inputs, out, CLASS_NAMES, run_info={"weights": "a.h5"})
    before = final_files(out)
    with pytest.raises(MrcnnError, match="results of another run"):
        run_detect(StandInModel(), inputs, out, CLASS_NAMES, resume=True, run_info={"weights": "b.h5"})
    assert final_files(out) == before  # nothing touched
    lines = []
    model = StandInModel()
    run_detect(model, inputs, out, CLASS_NAMES, resume=True, force=True, run_info={"weights": "b.h5"},
               echo=lines.append)
    assert model.calls == [2] and "starting over (--force)" in lines[0]
    assert existing_results(out, inputs) == ["img00_overlay.png", "img01_overlay.png", *FINAL, JOURNAL_NAME]
    assert existing_results(out, inputs, overlays=False) == [*FINAL, JOURNAL_NAME]
    assert detect_results.input_key(inputs[0]) == str(inputs[0].resolve())
