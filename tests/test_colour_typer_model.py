"""The colour typer travels with the model: `MaskRCNN.load_weights` takes the run's colour_typer.json, `detect` types
with it exactly as `mrcnn-tf evaluate` / `detect` do, and the exported SavedModel types with it in its graph.

A tiny random-weight 4-class checkpoint with COLOUR_TYPING on (foreground favoured, masks filling their boxes, so
there are cells to type) and a typer of random weights beside it: its probabilities differ from the class head's.
"""
import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from helpers_model import favour_foreground, tiny_config

from mrcnn_tf.cli import cli
from mrcnn_tf.engine.checkpoints import save_checkpoint
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference.colour_typer import (COMPARTMENT_FEATURE_NAMES, TYPER_FILE, ColourTyper,
                                             missing_typer_message)
from mrcnn_tf.model import MaskRCNN
from mrcnn_tf.wbc.runs import load_inference_model

SETTINGS = dict(NUM_CLASSES=4, DETECTION_MIN_CONFIDENCE=0.0, DETECTION_MAX_INSTANCES=5, COLOUR_TYPING=True)
NAMES = ["BG", "Eosinophil", "Lymphocyte", "Neutrophil"]


def random_typer(names, seed=0):
    rng = np.random.default_rng(seed)
    f, k = len(COMPARTMENT_FEATURE_NAMES), len(names) - 1
    return ColourTyper(names, np.zeros(f), np.full(f, 100.0), rng.normal(0, 1, (f, k)), rng.normal(0, 0.3, k), l2=0.1,
                       feature_set="colour+compartments")


def write_run(model, folder, typer=None):
    folder.mkdir(parents=True)
    checkpoint = save_checkpoint(model.keras_model, model.config, folder / "mask_rcnn_tiny_0001.weights.h5")
    if typer is not None:
        typer.save(folder / TYPER_FILE)
    return checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("typed")
    keras.utils.set_random_seed(5)
    model = favour_foreground(MaskRCNN("inference", tiny_config(**SETTINGS), str(root / "logs")))
    for layer in model.keras_model.layers:
        if layer.name == "mrcnn_bbox_fc":  # anchor-sized boxes
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        if layer.name == "mrcnn_mask":  # masks fill their boxes
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.full_like(bias, 3.0)])
    checkpoint = write_run(model, root / "logs" / "tiny20250101T0000", random_typer(NAMES))
    untyped = write_run(model, root / "logs" / "tiny20250101T0001")
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image[16:48, 16:48] = (200, 80, 90)  # a reddish cell with a dark nucleus, so the masks hold two colours
    image[26:38, 26:38] = (60, 40, 140)
    return root, checkpoint, untyped, image


def python_model(root):
    return MaskRCNN("inference", tiny_config(**SETTINGS), str(root / "logs"))


def test_load_weights_takes_the_typer_and_detect_types_as_the_cli_path(run):
    root, checkpoint, _, image = run
    model = python_model(root)
    model.load_weights(str(checkpoint), by_name=True, verbose=0)
    assert isinstance(model.typer, ColourTyper) and model.typer.class_names == NAMES
    typed = model.detect([image])[0]
    said = []
    cli_model, _ = load_inference_model(str(checkpoint), str(root / "logs"), echo=said.append)
    assert type(cli_model) is MaskRCNN and isinstance(cli_model.typer, ColourTyper)  # typed once, not wrapped
    assert any("Types from" in line and TYPER_FILE in line for line in said)
    cli_typed = cli_model.detect([image])[0]
    assert len(typed["class_ids"]) > 0
    np.testing.assert_array_equal(cli_typed["class_ids"], typed["class_ids"])
    np.testing.assert_array_equal(cli_typed["scores"], typed["scores"])
    # The scores are the typer's probability of the type it chose, not the class head's score.
    features = np.stack([model.typer.features(image, typed["masks"][:, :, i]) for i in range(len(typed["scores"]))])
    probabilities = model.typer.predict_proba(features)
    np.testing.assert_array_equal(typed["class_ids"], probabilities.argmax(1) + 1)
    np.testing.assert_allclose(typed["scores"], probabilities.max(1), rtol=1e-6)
    assert typed["scores"].max() < 0.99  # an unsaturated typer: its scores say something
    assert typed["scores"].dtype == np.float32 and typed["class_ids"].dtype == np.int32
    model.typer = None  # the class head's types and scores, boxes and masks unchanged
    head = model.detect([image])[0]
    np.testing.assert_array_equal(head["rois"], typed["rois"])
    np.testing.assert_array_equal(head["masks"], typed["masks"])
    assert not np.allclose(head["scores"], typed["scores"])
    untyped_model, _ = load_inference_model(str(checkpoint), str(root / "logs"), colour_typing=False)
    assert untyped_model.typer is None


def test_missing_typer_file_warns_once_and_leaves_the_class_head(run):
    root, _, untyped, image = run
    model = python_model(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(str(untyped), by_name=True, verbose=0)
        result = model.detect([image])[0]
        model.detect([image])
    messages = [str(w.message) for w in caught if "colour_typer" in str(w.message)]
    assert messages == [missing_typer_message(untyped.parent / TYPER_FILE)]
    assert model.typer is None and len(result["scores"]) > 0


def test_typing_off_is_matterports_detect(run):
    root, checkpoint, _, image = run
    model = MaskRCNN("inference", tiny_config(**dict(SETTINGS, COLOUR_TYPING=False)), str(root / "logs"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(str(checkpoint), by_name=True, verbose=0)
    assert model.typer is None and not [w for w in caught if "colour_typer" in str(w.message)]
    typed = python_model(root)
    typed.load_weights(str(checkpoint), by_name=True, verbose=0)
    typed.typer = None
    expected, got = typed.detect([image])[0], model.detect([image])[0]
    for key in ("rois", "class_ids", "scores", "masks"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_a_typer_of_another_class_count_is_a_one_line_error(run, tmp_path):
    root, checkpoint, _, _ = run
    model = python_model(root)
    other = tmp_path / "tiny20250101T0002"
    other.mkdir()
    (other / checkpoint.name).write_bytes(checkpoint.read_bytes())
    random_typer(NAMES + ["Monocyte", "Basophil"]).save(other / TYPER_FILE)
    with pytest.raises(MrcnnError) as info:
        model.load_weights(str(other / checkpoint.name), by_name=True, verbose=0)
    message = str(info.value)
    assert message.startswith(f"{other / TYPER_FILE}: its 6 classes do not match the model's NUM_CLASSES=4")
    assert "delete it, or retrain to write it again" in message and "\n" not in message
    assert model.typer is None


@pytest.mark.slow
def test_export_types_in_the_graph_and_load_exported_types_as_detect(run, tmp_path):
    from mrcnn_tf.inference.export import load_exported

    root, checkpoint, _, image = run
    result = CliRunner().invoke(cli, ["export", "--weights", str(checkpoint), "--logs", str(root / "logs"),
                                      "--output", str(tmp_path / "saved")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "saved" / TYPER_FILE).is_file()
    assert "class_ids and scores are the colour typer's" in result.output and "head_class_ids" in result.output
    model = python_model(root)
    model.load_weights(str(checkpoint), by_name=True, verbose=0)
    loaded = load_exported(tmp_path / "saved")
    expected, got = model.detect([image])[0], loaded.detect([image])[0]
    assert len(expected["class_ids"]) > 0
    np.testing.assert_array_equal(got["class_ids"], expected["class_ids"])
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-6)
    np.testing.assert_array_equal(got["masks"], expected["masks"])
    raw = loaded.signature(image=image)  # the bare signature types too
    np.testing.assert_array_equal(raw["class_ids"].numpy(), expected["class_ids"])
    np.testing.assert_allclose(raw["scores"].numpy(), expected["scores"], rtol=1e-6)
    loaded.typer = model.typer = None  # the class head's: the signature's head_class_ids and head_scores
    np.testing.assert_allclose(loaded.detect([image])[0]["scores"], model.detect([image])[0]["scores"], rtol=1e-6)
