"""Checks of the sample script `lisc.py`: it offers train / evaluate / detect, delegates them to the
project's commands with --logs defaulting to <repository>/logs, and reports user errors in one line.

Run with the notebooks: ``python -m pytest -q --nbmake samples/lisc``.
"""
import csv
import importlib.util
import os
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = pathlib.Path(__file__).resolve().parent


def _load_script():
    # Loaded from its path under its own module name: "lisc" alone would be ambiguous.
    spec = importlib.util.spec_from_file_location("lisc_sample_script", HERE / "lisc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def test_help_lists_exactly_the_sample_commands():
    result = CliRunner().invoke(script.cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:")[1].split()
    assert [word for word in listed if word in ("train", "evaluate", "detect", "synth", "demo", "export")] == \
        ["train", "evaluate", "detect"]


def test_other_project_commands_are_not_offered(capsys):
    assert script.main(["export", "--help"]) == 2
    assert "No such command 'export'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "detect"])
def test_logs_default_to_the_repository_logs_folder(command):
    result = CliRunner().invoke(script.cli, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert script.DEFAULT_LOGS_DIR == HERE.parents[1] / "logs"
    assert f"[default: {script.DEFAULT_LOGS_DIR}]" in result.output


def test_user_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = script.main(["evaluate", "--dataset", str(empty), "--weights", "last", "--logs", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("Error: ") and len(err.splitlines()) == 1, err
    assert str(empty) in err


def test_train_runs_the_project_command(tmp_path, capsys):
    # The project's train command checks its schedule before touching data or TensorFlow: a
    # heads-first schedule from random weights is refused with its one-line message.
    code = script.main(["train", "--dataset", str(tmp_path), "--weights", "none", "--schedule", "heads:1",
                        "--logs", str(tmp_path / "logs")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("Error: --weights none") and len(err.splitlines()) == 1, err


def test_detect_runs_the_project_command_with_the_saved_checkpoint(tmp_path, capsys):
    from mrcnn_tf.wbc import synth
    from mrcnn_tf.engine.checkpoints import checkpoint_name, new_run_dir, save_checkpoint
    from mrcnn_tf.lisc import LiscConfig
    from mrcnn_tf.model import MaskRCNN

    class TinyConfig(LiscConfig):
        NAME = "lisc_tiny"
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = 128
        IMAGE_MAX_DIM = 128
        RPN_ANCHOR_SCALES = (12, 24, 48, 96, 192)
        PRE_NMS_LIMIT = 500
        POST_NMS_ROIS_INFERENCE = 20
        FPN_CLASSIF_FC_LAYERS_SIZE = 64
        TOP_DOWN_PYRAMID_SIZE = 32
        DETECTION_MIN_CONFIDENCE = 0.0  # an untrained head: keep whatever it finds

    # An untrained checkpoint with its config JSON, where training would have written it.
    config = TinyConfig()
    logs = tmp_path / "logs"
    model = MaskRCNN("inference", config, str(logs))
    checkpoint = save_checkpoint(model.keras_model, config, new_run_dir(logs, config.NAME) / checkpoint_name(
        config.NAME, 1))
    synth.write_lisc(tmp_path / "data", per_class=0, mixt=2, seed=3)
    images = tmp_path / "data" / synth.DATABASE / "Main Dataset" / "mixt"

    out = tmp_path / "out"
    code = script.main(["detect", "--weights", "last", "--logs", str(logs), "--input", str(images),
                        "--output", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert str(checkpoint) in printed.out  # "last" found the checkpoint under the given --logs
    assert sorted(p.name for p in out.glob("*_overlay.png")) == ["1_overlay.png", "2_overlay.png"]
    with open(out / "counts.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil", "total"]
    assert [row[0] for row in rows[1:]] == ["1.bmp", "2.bmp", "total", "percent"]
    per_image = np.array([[int(v) for v in row[1:]] for row in rows[1:3]])
    assert np.array_equal(per_image[:, :-1].sum(axis=1), per_image[:, -1])
