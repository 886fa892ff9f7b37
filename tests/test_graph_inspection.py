"""MaskRCNN.ancestor and run_graph: Matterport's step-by-step notebook cells on a Keras 3 model."""
import numpy as np
import pytest
import tensorflow as tf

from helpers_model import tiny_config
from mrcnn_tf import model as modellib
from mrcnn_tf import utils
from mrcnn_tf.errors import MrcnnError
from mrcnn_tf.inference.graph_inspection import GraphStage


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # ResNet-50: the notebook cells read its layers by name (res4f_out).
    return modellib.MaskRCNN("inference", tiny_config(BACKBONE="resnet50", IMAGES_PER_GPU=2),
                             str(tmp_path_factory.mktemp("logs")))


@pytest.fixture
def image(rng):
    return rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8)


def rpn_cell(model, image):
    """inspect_model.ipynb's "Run RPN sub-graph" cell, as Matterport wrote it."""
    pillar = model.keras_model.get_layer("ROI").output  # node to start searching from
    nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression:0")
    if nms_node is None:
        nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression/NonMaxSuppressionV2:0")
    if nms_node is None:  # TF 1.9-1.10
        nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0")
    return model.run_graph([image], [
        ("rpn_class", model.keras_model.get_layer("rpn_class").output),
        ("pre_nms_anchors", model.ancestor(pillar, "ROI/pre_nms_anchors:0")),
        ("refined_anchors", model.ancestor(pillar, "ROI/refined_anchors:0")),
        ("refined_anchors_clipped", model.ancestor(pillar, "ROI/refined_anchors_clipped:0")),
        ("post_nms_anchor_ix", nms_node),
        ("proposals", model.keras_model.get_layer("ROI").output),
    ])


def test_rpn_cell_runs_as_written_and_agrees_with_the_graph(model, image, capsys):
    layers_before = len(model.keras_model.layers)
    rpn = rpn_cell(model, image)
    config = model.config
    k = min(config.PRE_NMS_LIMIT, len(model.anchors))
    assert rpn["pre_nms_anchors"].shape == rpn["refined_anchors_clipped"].shape == (1, k, 4)
    ixs = rpn["post_nms_anchor_ix"]
    assert ixs.ndim == 1 and 0 < len(ixs) <= config.POST_NMS_ROIS_INFERENCE and (ixs >= 0).all()
    # The proposals are the clipped refined anchors NMS kept, in its order.
    np.testing.assert_allclose(rpn["proposals"][0, :len(ixs)], rpn["refined_anchors_clipped"][0][ixs], atol=1e-6)
    assert not rpn["proposals"][0, len(ixs):].any()
    # The pre-NMS anchors are the best-scored anchors of the image, best first.
    order = np.argsort(-rpn["rpn_class"][0, :, 1], kind="stable")[:k]
    np.testing.assert_allclose(rpn["pre_nms_anchors"][0], model.get_anchors(image.shape)[order], atol=1e-6)
    assert np.all((rpn["refined_anchors_clipped"] >= 0) & (rpn["refined_anchors_clipped"] <= 1))
    # The cells that follow in the notebook.
    refined_anchors_clipped = utils.denorm_boxes(rpn["refined_anchors_clipped"][0], image.shape[:2])
    assert refined_anchors_clipped[ixs[:50]].shape == (min(50, len(ixs)), 4)
    recall, _ = utils.compute_recall(rpn["refined_anchors"][0], np.array([[4, 4, 40, 40]]), 0.7)
    assert 0 <= recall <= 1
    assert "post_nms_anchor_ix" in capsys.readouterr().out
    assert len(model.keras_model.layers) == layers_before  # nothing was added to the model


def test_activations_cell_takes_layer_outputs_as_they_are(model, image):
    """The activations cell, with tf.identity(...) dropped: Keras 3 refuses raw TF ops on Keras tensors."""
    with pytest.raises(ValueError, match="KerasTensor"):
        tf.identity(model.keras_model.get_layer("input_image").output)
    activations = model.run_graph([image], [
        ("input_image", model.keras_model.get_layer("input_image").output),
        ("res4f_out", model.keras_model.get_layer("res4f_out").output),  # resnet50's last stage-4 block
        ("rpn_bbox", model.keras_model.get_layer("rpn_bbox").output),
        ("roi", model.keras_model.get_layer("ROI").output),
        ("p2", "fpn_p2"),  # a layer name works too
    ])
    np.testing.assert_allclose(modellib.unmold_image(activations["input_image"][0], model.config), image)
    assert activations["res4f_out"].shape == (1, 4, 4, 1024) and activations["roi"].shape == (1, 30, 4)


def test_molded_images_with_metas_and_per_image_nms(model, image, rng):
    second = rng.integers(0, 255, size=(64, 64, 3)).astype(np.uint8)
    pillar = model.keras_model.get_layer("ROI").output
    outputs = [("proposals", pillar), ("nms_0", model.ancestor(pillar, "ROI/rpn_non_max_suppression:0")),
               ("nms_1", model.ancestor(pillar, "ROI/rpn_non_max_suppression_1:0"))]
    raw = model.run_graph([image, second], outputs)
    molded, metas, _ = model.mold_inputs([image, second])
    again = model.run_graph(molded, outputs, image_metas=metas)  # Matterport: metas given = images molded
    for key in raw:
        np.testing.assert_array_equal(raw[key], again[key])
    clipped = model.run_graph([image, second], [("c", model.ancestor(pillar, "ROI/refined_anchors_clipped:0"))])["c"]
    np.testing.assert_allclose(raw["proposals"][1, :len(raw["nms_1"])], clipped[1][raw["nms_1"]], atol=1e-6)
    with pytest.raises(MrcnnError, match="image 1"):
        model.run_graph([image], outputs)


@pytest.mark.parametrize("name, message", [
    ("ROI/top_anchors:0", "inner steps mrcnn_tf can show: 'ROI/pre_nms_anchors:0'"),
    ("rpn_class/concat:0", r"get_layer\('rpn_class'\).output"),
    ("no_such_layer/x:0", "no layer 'no_such_layer'"),
    ("mrcnn_detection/x:0", "not computed before the output of 'ROI'"),
])
def test_names_keras_3_cannot_have_are_clear_errors(model, name, message):
    with pytest.raises(MrcnnError, match=message):
        model.ancestor(model.keras_model.get_layer("ROI").output, name)


def test_ancestor_layer_names_and_bad_outputs(model, image):
    pillar = model.keras_model.get_layer("mrcnn_detection").output
    assert model.ancestor(pillar, "rpn_class:0") is model.keras_model.get_layer("rpn_class").output
    stage = model.ancestor(pillar, "ROI/refined_anchors:0")  # found upstream of a later layer too
    assert isinstance(stage, GraphStage) and stage.stage == "refined_anchors"
    with pytest.raises(MrcnnError, match="not a tensor of the model"):
        model.ancestor(np.zeros(3), "ROI/refined_anchors:0")
    with pytest.raises(MrcnnError, match="is None"):
        model.run_graph([image], [("nms", None)])
    with pytest.raises(MrcnnError, match="not a tensor of the model"):
        model.run_graph([image], [("x", tf.zeros(3))])
    with pytest.raises(MrcnnError, match="no layer 'nope'"):
        model.run_graph([image], [("x", "nope")])


def test_training_model_feeds_images_only(tmp_path, image):
    trainer = modellib.MaskRCNN("training", tiny_config(), str(tmp_path))
    pillar = trainer.keras_model.get_layer("ROI").output
    values = trainer.run_graph([image], [("proposals", pillar),
                                         ("clipped", trainer.ancestor(pillar, "ROI/refined_anchors_clipped:0")),
                                         ("nms", trainer.ancestor(pillar, "ROI/rpn_non_max_suppression:0"))])
    np.testing.assert_allclose(values["proposals"][0, :len(values["nms"])], values["clipped"][0][values["nms"]],
                               atol=1e-6)
    with pytest.raises(MrcnnError, match="mode='inference'"):
        trainer.run_graph([image], [("rois", "output_rois")])  # needs the ground-truth inputs
