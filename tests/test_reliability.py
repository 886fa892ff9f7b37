"""Bad input as a user meets it, through `mrcnn-tf` (in process, and once as a real subprocess).

Every case must end in ONE line ``Error: <file or value>: <what>; <fix>`` on stderr and exit 2, with
no traceback unless ``mrcnn-tf --debug``; warnings are one ``Warning: ...`` line; nothing existing is
written over. docs/errors.md lists the same cases with these messages; the Python API side is in
test_reliability_api.py.
"""
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import warnings
import zipfile

import click
import numpy as np
import pytest
from helpers_model import tiny_config
from PIL import Image

from mrcnn_tf.engine import checkpoints
from mrcnn_tf.cli import COMMANDS, main
from mrcnn_tf.data import lisc_format as fmt
from mrcnn_tf.errors import DatasetError, MrcnnError
from mrcnn_tf.inference.export import export_saved_model
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.wbc.synth import write_lisc

MAIN, TRUTH = "LISC Database/Main Dataset", "LISC Database/Ground Truth Segmentation"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A pristine synthetic set and a tiny 6-class checkpoint, under paths with spaces and non-ASCII letters."""
    root = tmp_path_factory.mktemp("rel") / "dossier données ü"
    write_lisc(root / "data", per_class=1)
    config = tiny_config(NUM_CLASSES=6, DETECTION_MIN_CONFIDENCE=0.0)
    model = MaskRCNN("inference", config, str(root / "my logs"))
    run = root / "my logs" / "tiny20250101T0000"
    run.mkdir(parents=True)
    checkpoint = checkpoints.save_checkpoint(model.keras_model, config, run / "mask_rcnn_tiny_0001.weights.h5")
    return {"root": root, "data": root / "data", "logs": root / "my logs", "checkpoint": checkpoint, "model": model,
            "image": root / "data" / MAIN / "Baso" / "1.bmp"}


def run_cli(capsys, *args):
    """`mrcnn-tf ARGS` in process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]


def copy_data(world, tmp_path):
    target = tmp_path / "copie ü"
    shutil.copytree(world["data"], target)
    return target


def mask_of(root, folder="Baso"):
    return root / TRUTH / folder / "areaforexpert1" / "1_expert.bmp"


# ------------------------------------------------------------------------------------- dataset
def _truncate(root):
    path = root / MAIN / "Baso" / "1.bmp"
    path.write_bytes(path.read_bytes()[:5000])
    return path, "cannot read image (OSError: image file is truncated", "replace the file or remove it"


def _text_as_bmp(root):
    path = root / MAIN / "Baso" / "1.bmp"
    path.write_text("not an image")
    return path, "cannot read image (UnidentifiedImageError", "replace the file or remove it"


def _corrupt_mask(root):
    path = mask_of(root)
    path.write_bytes(path.read_bytes()[:3000])
    return path, "cannot read mask", "replace the file or remove it"


def _mask_wrong_size(root):
    fmt.write_bmp(mask_of(root), np.zeros((80, 100), np.uint8))
    return mask_of(root), "mask is 100x80 but its image is 720x576", "must be 712x568"


def _unknown_grey(root):
    grey = fmt.read_grey_mask(mask_of(root))
    grey[10, 20] = 77
    fmt.write_bmp(mask_of(root), grey)
    return mask_of(root), "unknown grey level(s) 77 (first at row 10, column 20)", "fix or re-export the mask"


def _colour_mask(root):
    grey = fmt.read_grey_mask(mask_of(root))
    fmt.write_bmp(mask_of(root), np.stack([grey, grey // 2, grey], axis=-1))
    return mask_of(root), "mask is a colour image", "save it as an 8-bit grey BMP"


def _no_main(root):
    shutil.rmtree(root / MAIN)
    return root / "LISC Database", "no 'Main Dataset' folder", "copy the whole LISC Database folder"


def _no_truth(root):
    shutil.rmtree(root / TRUTH)
    return root / "LISC Database", "no 'Ground Truth Segmentation' folder", "copy the whole LISC Database folder"


def _no_masks(root):
    for folder in (root / TRUTH).iterdir():
        shutil.rmtree(folder)
    return root / MAIN, "no image with a mask found", "masks belong in"


def _missing(root):
    shutil.rmtree(root)
    return root, "dataset folder not found", "mrcnn-tf synth DIR"


def _nothing_inside(root):
    shutil.rmtree(root / "LISC Database")
    return root, "no LISC data found", "expected 'LISC Database/Main Dataset/<class>/<n>.bmp'"


DATASET_CASES = [_truncate, _text_as_bmp, _corrupt_mask, _mask_wrong_size, _unknown_grey, _colour_mask, _no_main,
                 _no_truth, _no_masks, _missing, _nothing_inside]


@pytest.mark.parametrize("damage", DATASET_CASES, ids=[f.__name__.strip("_") for f in DATASET_CASES])
def test_bad_dataset_is_one_line_naming_the_file(world, tmp_path, capsys, damage):
    root = copy_data(world, tmp_path)
    path, what, fix = damage(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # _no_masks warns once per image before its error
        code, _, err = run_cli(capsys, "evaluate", "--dataset", root, "--subset", "all", "--logs", world["logs"])
    err = "\n".join(line for line in err.splitlines() if not line.startswith("Warning: "))
    assert_one_line_error(code, err, f"Error: {path}", what, fix)


def test_empty_subset(world, capsys):
    code, _, err = run_cli(capsys, "evaluate", "--dataset", world["data"], "--logs", world["logs"])  # 1 per folder
    assert_one_line_error(code, err, f"Error: {world['data']}: no images in the 'val' subset", "use --subset all")


def test_odd_but_usable_inputs_run_with_one_line_warnings(world, tmp_path, capsys):
    """Thumbs.db, grey / RGBA / 16-bit images, an image without mask, an empty mask, non-ASCII paths."""
    root = copy_data(world, tmp_path)
    for folder in (root / MAIN / "Baso", mask_of(root).parent):
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 thumbnail cache")
        (folder / "desktop.ini").write_text("[.ShellClassInfo]")
    rgb = fmt.read_image(root / MAIN / "Baso" / "1.bmp")
    Image.fromarray(rgb.mean(axis=2).astype(np.uint8), "L").save(root / MAIN / "Baso" / "1.bmp", format="BMP")
    (root / MAIN / "eosi" / "1.bmp").unlink()
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])).save(root / MAIN / "eosi" / "1.png")
    (root / MAIN / "lymp" / "1.bmp").unlink()
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(root / MAIN / "lymp" / "1.png")
    mask_of(root, "mono").unlink()
    fmt.write_bmp(mask_of(root, "neut"), np.zeros((568, 712), np.uint8))

    code, out, err = run_cli(capsys, "evaluate", "--dataset", root, "--subset", "all", "--logs", world["logs"])
    assert code == 0, err
    assert "Evaluating 4 images" in err and "mAP50" in out
    assert "Traceback" not in err and "UserWarning" not in err and "Thumbs.db" not in err + out
    warned = [line for line in err.splitlines() if line.startswith("Warning: ")]
    assert len(warned) == 2, err
    assert f"{root / MAIN / 'mono' / '1.bmp'}: no mask at {mask_of(root, 'mono')}" in warned[0]
    assert "add the mask or remove the image (image skipped)" in warned[0]
    assert f"{mask_of(root, 'neut')}: mask holds no cell" in warned[1] and "fix the mask" in warned[1]


# ------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("pair, message", [
    ("DETECTION_MIN_CONFIDENCE=2", "Config.DETECTION_MIN_CONFIDENCE = 2.0 is invalid: use a number between 0 and 1"),
    ("IMAGE_MAX_DIM=100", "Config.IMAGE_MAX_DIM = 100 is invalid: image sizes must be divisible by 64 (try 128)"),
    ("IMAGE_MAX_DIM=abc", "--set IMAGE_MAX_DIM=abc: expected int ('abc' is not a whole number)"),
    ("LEARNING_RATE=NaN", "Config.LEARNING_RATE = nan is invalid: use a positive number"),
    ("RPN_ANCHOR_SCALES=null", "Config.RPN_ANCHOR_SCALES = None is invalid: give one scale per pyramid level"),
    ("BACKBONE=vgg16", "Config.BACKBONE = 'vgg16' is invalid: use one of resnet50, resnet101"),
    ("DETECTON_MIN_CONFIDENCE=0.5", "--set DETECTON_MIN_CONFIDENCE: unknown config key"),
    ("IMAGE_SHAPE=[64,64,3]", "--set IMAGE_SHAPE: derived from other settings"),
    ("NUM_CLASSES", "--set 'NUM_CLASSES': write KEY=VALUE"),
    ("LEARNING_RATE_SCHEDULE=linear", "Config.LEARNING_RATE_SCHEDULE = 'linear' is invalid: use constant (Matterport) or cosine"),
])
def test_invalid_settings(world, tmp_path, capsys, pair, message):
    code, _, err = run_cli(capsys, "detect", "--logs", world["logs"], "--input", world["image"],
                           "--output", tmp_path / "out", "--set", pair)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable, message", [
    ("MRCNN_TF_CONV_FILTER_GRAD", "MRCNN_TF_CONV_FILTER_GRAD='fast' is not a known setting: use auto, matmul or native"),
    ("MRCNN_TF_CONV_BANDS", "MRCNN_TF_CONV_BANDS='fast' is not a known setting: use auto or off")])
def test_unknown_conv_setting(world, tmp_path, capsys, monkeypatch, variable, message):
    monkeypatch.setenv(variable, "fast")
    code, _, err = run_cli(capsys, "detect", "--logs", world["logs"], "--input", world["image"],
                           "--output", tmp_path / "out")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_damaged_config_beside_the_checkpoint(world, tmp_path, capsys):
    run = tmp_path / "logs" / "tiny20250102T0000"
    run.mkdir(parents=True)
    checkpoint = run / world["checkpoint"].name
    shutil.copy(world["checkpoint"], checkpoint)
    beside = checkpoints.config_path_for(checkpoint)
    beside.write_text("{not json")
    code, _, err = run_cli(capsys, "export", "--logs", tmp_path / "logs", "--output", tmp_path / "exported")
    assert_one_line_error(code, err, f"Error: {beside}: not a JSON config", "re-create it or remove it")
    values = json.loads(checkpoints.config_path_for(world["checkpoint"]).read_text())
    beside.write_text(json.dumps(dict(values, POOL_SIZE=0)))
    code, _, err = run_cli(capsys, "export", "--logs", tmp_path / "logs", "--output", tmp_path / "exported")
    assert_one_line_error(code, err, f"{beside}: Config.POOL_SIZE = 0 is invalid: use a whole number >= 1")


# ------------------------------------------------------------------------------------- weights
def _exploit(marker):
    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Exploit())


def _weights_cases(world, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("these are not weights")
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(_exploit(tmp_path / "unpickled"))
    truncated = tmp_path / "cut.weights.h5"
    truncated.write_bytes(world["checkpoint"].read_bytes()[:30000])
    archive = tmp_path / "other.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", "{}")
    (tmp_path / "empty logs").mkdir()
    return [
        (["--weights", text], f"{text} is not an HDF5 weight file", "pickled checkpoints such as .pkl/.pth are never"),
        (["--weights", pickled], f"{pickled} is not an HDF5 weight file", "give a Keras .h5 / .weights.h5 / .keras"),
        (["--weights", truncated], f"{truncated} is truncated or damaged (30,000 bytes", "download or copy it again"),
        (["--weights", archive], f"{archive} is a zip archive without model.weights.h5", "give a .keras model file"),
        (["--weights", tmp_path / "nope.h5"], f"--weights {tmp_path / 'nope.h5'}: no such file; give last or a "
                                              "weight file path", ""),  # only what detect takes
        (["--weights", "coco"], "--weights coco: not accepted by this command; give last or a weight file path", ""),
        (["--weights", "last", "--logs", tmp_path / "empty logs"], f"No checkpoint (mask_rcnn_*.weights.h5) under "
                                                                    f"{tmp_path / 'empty logs'}", "train first"),
        (["--logs", tmp_path / "no logs"], f"No checkpoint under {tmp_path / 'no logs'}: the folder does not exist",
         "or pass --weights PATH"),
    ]


def test_bad_weight_files(world, tmp_path, capsys):
    for args, message, fix in _weights_cases(world, tmp_path):
        logs = [] if "--logs" in args else ["--logs", world["logs"]]
        code, _, err = run_cli(capsys, "detect", *args, *logs, "--input", world["image"], "--output", tmp_path / "o")
        assert_one_line_error(code, err, message, fix)
    assert not (tmp_path / "unpickled").exists()


def test_weights_for_another_class_count(world, tmp_path, capsys):
    code, _, err = run_cli(capsys, "detect", "--logs", world["logs"], "--input", world["image"],
                           "--output", tmp_path / "o", "--set", "NUM_CLASSES=4")
    assert_one_line_error(code, err, f"Error: {world['checkpoint']}: 3 layer(s) do not fit (mrcnn_class_logits:",
                          "the file is for NUM_CLASSES=6, the model for 4", "pass --set NUM_CLASSES=6")
    assert not (tmp_path / "o").exists()


def test_detect_bad_input_and_existing_results(world, tmp_path, capsys):
    inputs = tmp_path / "entrées"
    inputs.mkdir()
    (inputs / "a scan.png").write_text("not a png")
    code, _, err = run_cli(capsys, "detect", "--logs", world["logs"], "--input", tmp_path / "absent.png",
                           "--output", tmp_path / "out")
    assert_one_line_error(code, err, f"--input {tmp_path / 'absent.png'}: no such file or folder",
                          "give an image file or a folder of images")
    out = tmp_path / "out"
    out.mkdir()
    (out / "counts.csv").write_text("earlier results")
    code, _, err = run_cli(capsys, "detect", "--logs", world["logs"], "--input", inputs, "--output", out)
    assert_one_line_error(code, err, f"{out / 'counts.csv'} already exists", "pass --force to replace them")
    assert (out / "counts.csv").read_text() == "earlier results"
    # --force passes the check; the next problem is the non-image file, named with the fix.
    code, _, err = run_cli(capsys, "detect", "--logs", world["logs"], "--input", inputs, "--output", out, "--force")
    assert_one_line_error(code, err, f"{inputs / 'a scan.png'}: not an image file", "save it as PNG, BMP, JPEG")


# ------------------------------------------------------------------------------------- nothing overwritten
def test_export_refuses_to_overwrite(world, tmp_path, capsys):
    target = tmp_path / "saved model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", "--logs", world["logs"], "--output", target)
    assert_one_line_error(code, err, f"{target} already exists", "pass --force to replace it")
    with pytest.raises(MrcnnError, match="pass --force"):
        export_saved_model(world["model"], target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "jeu ü"
    assert run_cli(capsys, "synth", out, "--per-class", "2")[0] == 0
    image = out / MAIN / "Baso" / "2.bmp"
    before = image.read_bytes()
    code, _, err = run_cli(capsys, "synth", out, "--per-class", "1", "--seed", "5")
    assert_one_line_error(code, err, f"{out / 'LISC Database'} already exists", "pass --force to replace it")
    assert image.read_bytes() == before
    assert run_cli(capsys, "synth", out, "--per-class", "1", "--force")[0] == 0
    assert not image.exists() and (out / MAIN / "Baso" / "1.bmp").is_file()  # replaced, no stale files


# ------------------------------------------------------------------------------------- the CLI itself
def _raise_permission():
    raise PermissionError(13, "Permission denied", "/data/read only/out.csv")


def _raise_bug():
    raise ZeroDivisionError("a bug")


def _warn():
    warnings.warn("first part\nsecond part", UserWarning)
    click.echo("done")


_permission, _bug, _warning = (click.Command(name, callback=f) for name, f in
                               (("permission", _raise_permission), ("bug", _raise_bug), ("warning", _warn)))


@pytest.fixture
def test_commands(monkeypatch):
    # The lazy group imports commands by module name: this test module is one.
    for name in ("permission", "bug", "warning"):
        monkeypatch.setitem(COMMANDS, name, (__name__, f"_{name}", ""))


def test_os_errors_warnings_and_bugs(test_commands, capsys):
    code, _, err = run_cli(capsys, "permission")
    assert_one_line_error(code, err, "Error: /data/read only/out.csv: permission denied; choose a location you can "
                          "write to")
    code, out, err = run_cli(capsys, "warning")
    assert code == 0 and out == "done\n" and err == "Warning: first part second part\n"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main(["bug"])


def test_debug_raises_with_the_traceback(world, tmp_path, test_commands):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        main(["--debug", "evaluate", "--dataset", str(tmp_path / "none"), "--logs", str(world["logs"])])
    with pytest.raises(PermissionError):
        main(["--debug", "permission"])


def test_subprocess_exit_codes_and_debug(tmp_path):
    """The real entry point: exit 2 and one line; with --debug the traceback (Python's exit 1)."""
    out = tmp_path / "set ü"
    write_lisc(out, per_class=0)
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-m", "mrcnn_tf"]
    plain = subprocess.run(command + ["synth", str(out), "--per-class", "1"], capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == f"Error: {out / 'LISC Database'} already exists: choose another OUT or pass --force to " \
                           "replace it\n"
    debug = subprocess.run(command + ["--debug", "synth", str(out), "--per-class", "1"], capture_output=True,
                           text=True, env=env)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "mrcnn_tf.errors.DatasetError: " in debug.stderr


@pytest.mark.parametrize("debug", [False, True])
def test_tensorflow_log_lines_are_muted_unless_debugging(tmp_path, monkeypatch, debug):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with pytest.raises((SystemExit, Exception)):
        main((["--debug"] if debug else []) + ["detect", str(tmp_path / "missing.bmp")])
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == (None if debug else "3")
