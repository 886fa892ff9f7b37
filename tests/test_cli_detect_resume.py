"""`mrcnn-tf detect` at folder scale on a tiny random-weight checkpoint: batches, progress, --no-overlays,
the refusal rules, and a run killed with SIGKILL (a real subprocess) that --resume completes into the
same files as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_model import tiny_config
from PIL import Image

from mrcnn_tf.engine.checkpoints import save_checkpoint
from mrcnn_tf.cli import cli
from mrcnn_tf.cli.detect import DEFAULT_BATCH_SIZE, batch_overrides
from mrcnn_tf.inference.detect_results import JOURNAL_NAME
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.model import MaskRCNN

FINAL = ("detections.json", "images.json", "counts.csv")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    config = tiny_config(NUM_CLASSES=6, DETECTION_MIN_CONFIDENCE=0.0, DETECTION_MAX_INSTANCES=3,
                         MEAN_PIXEL=np.array([211.0, 171.0, 178.0]))
    model = MaskRCNN("inference", config, str(root / "logs"))
    run = root / "logs" / "tiny20250101T0000"
    run.mkdir(parents=True)
    save_checkpoint(model.keras_model, config, run / "mask_rcnn_tiny_0001.weights.h5")
    inputs = root / "smears"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    for k in range(10):
        image = rng.integers(120, 255, (72, 96, 3), dtype=np.uint8)
        image[20:50, 30:60] = rng.integers(40, 90, (30, 30, 3), dtype=np.uint8)  # a dark blob to detect
        Image.fromarray(image).save(inputs / f"field_{k:02d}.png")
    return {"root": root, "logs": root / "logs", "inputs": inputs}


def invoke(world, output, *extra):
    args = ["detect", "--logs", str(world["logs"]), "--input", str(world["inputs"]), "--output", str(output), *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def refusal(world, output, *extra):
    """The one-line error `detect` stops with (before building the model)."""
    with pytest.raises(MrcnnError) as info:
        invoke(world, output, *extra)
    return str(info.value)


def files_of(out):
    found = {name: (out / name).read_bytes() for name in FINAL}
    overlays = sorted(out.glob("*_overlay.png"))
    found.update({p.name: np.asarray(Image.open(p)).tobytes() for p in overlays})
    return found


@pytest.fixture(scope="module")
def uninterrupted(world):
    out = world["root"] / "whole"
    result = invoke(world, out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    return out, result.output


KILLER = textwrap.dedent("""
    import os, signal, sys
    from mrcnn_tf.inference import detect_results
    from mrcnn_tf.cli import main

    append = detect_results.DetectJournal.append
    batches = []

    def append_then_die(self, records):
        append(self, records)
        batches.append(len(records))
        if len(batches) == 2:  # two batches on disk, the next ones read and in the model: kill -9
            os.kill(os.getpid(), signal.SIGKILL)

    detect_results.DetectJournal.append = append_then_die
    main(sys.argv[1:])
""")


def test_killed_run_resumes_to_the_same_files(world, uninterrupted):
    reference, _ = uninterrupted
    out = world["root"] / "killed"
    args = ["detect", "--logs", str(world["logs"]), "--input", str(world["inputs"]), "--output", str(out),
            "--batch-size", "2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    lines = (out / JOURNAL_NAME).read_text().splitlines()
    assert len(lines) == 1 + 4 and not (out / "detections.json").exists()
    # As if the kill had also cut the next journal line and the next overlay mid-write.
    with open(out / JOURNAL_NAME, "a") as f:
        f.write('{"image": {"key": "' + str(world["inputs"] / "field_04.png"))
    (out / "field_04_overlay.png").write_bytes(b"\x89PNG cut")

    assert refusal(world, out, "--batch-size", "2") == (
        f"{out / 'field_00_overlay.png'} already exists (7 result file(s) in --output): choose another --output, "
        "--resume to continue that run, or pass --force to replace them")

    result = invoke(world, out, "--batch-size", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert "Resuming: 4 of 10 images already done" in result.output
    assert "Detected 6 images" in result.output and "10 images" in result.output
    assert files_of(out) == files_of(reference)
    assert len((out / JOURNAL_NAME).read_text().splitlines()) == 1 + 10


def test_folder_run_reports_progress_and_rate(uninterrupted):
    out, output = uninterrupted
    assert "Detecting 10 images" in output  # click's bar (its label only, when stdout is not a terminal)
    assert "images/s)" in output and "10 images, " in output
    records = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]
    assert records[0]["run"]["weights"].endswith("mask_rcnn_tiny_0001.weights.h5")
    assert [r["image"]["file_name"] for r in records[1:]] == [f"field_{k:02d}.png" for k in range(10)]


def test_no_overlays_and_existing_results(world, uninterrupted):
    reference, _ = uninterrupted
    out = world["root"] / "plain"
    result = invoke(world, out, "--no-overlays", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.png")) and "Wrote detections.json, images.json and counts.csv" in result.output
    # Batching does not change what is found: same counts as the batch-2 run with overlays.
    assert (out / "counts.csv").read_bytes() == (reference / "counts.csv").read_bytes()
    fresh = world["root"] / "fresh"
    fresh.mkdir()
    (fresh / "counts.csv").write_text("mine")
    assert refusal(world, fresh, "--resume") == (
        f"{fresh / 'counts.csv'} already exists (1 result file(s) in --output): --resume found no "
        "detections.jsonl to continue; choose another --output or pass --force to replace them")
    assert (fresh / "counts.csv").read_text() == "mine"
    forced = invoke(world, fresh, "--resume", "--force", "--no-overlays")
    assert forced.exit_code == 0 and "Nothing to resume" in forced.output
    assert (fresh / "counts.csv").read_bytes() == (reference / "counts.csv").read_bytes()


def test_batch_size_option_sets_images_per_gpu():
    assert batch_overrides((), None) == (f"IMAGES_PER_GPU={DEFAULT_BATCH_SIZE}",)
    assert batch_overrides(("DETECTION_MIN_CONFIDENCE=0.5",), 2) == ("DETECTION_MIN_CONFIDENCE=0.5", "IMAGES_PER_GPU=2")
    assert batch_overrides(("images_per_gpu = 8",), None) == ("images_per_gpu = 8",)  # --set is kept
    assert batch_overrides(("IMAGES_PER_GPU=8",), 3)[-1] == "IMAGES_PER_GPU=3"  # --batch-size wins
