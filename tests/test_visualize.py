"""visualize: every display helper runs headless (Agg), draws what it should, and the overlay PNG
differs from the input exactly where masks and outlines are."""
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import skimage.io

from mrcnn_tf import visualize
from mrcnn_tf.evaluation.matching import compute_ap

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = ["BG", "Basophil", "Eosinophil", "Lymphocyte"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def scene(rng):
    image = rng.integers(80, 120, (64, 80, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 25, 30], [30, 40, 60, 75]])
    masks = np.zeros((64, 80, 2), bool)
    masks[8:22, 8:27, 0] = True
    masks[33:57, 43:72, 1] = True
    return image, boxes, masks, np.array([1, 3]), np.array([0.97, 0.61])


def test_import_does_not_load_pyplot():
    code = "import sys, mrcnn_tf.visualize; print('matplotlib.pyplot' in sys.modules, 'IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_apply_mask_and_draw_box():
    image = np.full((10, 10, 3), 100.0)
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    visualize.apply_mask(image, mask, (1.0, 0.0, 0.0), alpha=0.5)
    np.testing.assert_allclose(image[2, 2], [177.5, 50, 50])
    np.testing.assert_allclose(image[0, 0], [100, 100, 100])
    canvas = np.zeros((12, 12, 3), np.uint8)
    visualize.draw_box(canvas, [2, 3, 8, 9], (255, 0, 0))
    assert canvas[2, 5, 0] == 255 and canvas[8, 5, 0] == 255 and canvas[5, 3, 0] == 255 and canvas[5, 9, 0] == 255
    assert canvas[5, 6, 0] == 0  # interior untouched


def test_colors():
    colors = visualize.random_colors(5)
    assert len(colors) == 5 and len(set(colors)) == 5
    assert all(0 <= c <= 1 for color in colors for c in color)
    assert visualize.class_colors(3) == visualize.class_colors(3)


def test_display_instances_draws_captions_and_polygons(scene):
    image, boxes, masks, ids, scores = scene
    visualize.display_instances(image, boxes, masks, ids, NAMES, scores, title="t")
    ax = plt.gcf().axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["Basophil 0.970", "Lymphocyte 0.610"]
    assert len(ax.patches) == 4  # 2 boxes + 2 outlines
    # Empty input: no crash.
    visualize.display_instances(image, np.zeros((0, 4)), np.zeros((64, 80, 0), bool), [], NAMES)
    with pytest.raises(ValueError, match="masks"):
        visualize.display_instances(image, boxes, masks[..., :1], ids, NAMES)


def test_save_instances_overlay(tmp_path, scene):
    image, boxes, masks, ids, scores = scene
    path = tmp_path / "overlay.png"
    visualize.save_instances(path, image, boxes, masks, ids, NAMES, scores)
    overlay = skimage.io.imread(path)[..., :3]
    assert overlay.shape == image.shape
    changed = np.any(np.abs(overlay.astype(int) - image.astype(int)) > 10, axis=-1)
    # Inside the masks (away from edges and captions) every pixel is tinted; far away nothing changes.
    assert changed[40:55, 50:70].all()
    assert not changed[60:64, 0:30].any()


def test_display_differences_and_plots(scene):
    image, boxes, masks, ids, scores = scene
    visualize.display_differences(image, boxes, ids, masks, boxes[::-1], ids[::-1], scores, masks[..., ::-1], NAMES)
    texts = sorted(t.get_text() for t in plt.gcf().axes[0].texts if t.get_text())
    assert texts == ["0.61 / 1.00", "0.97 / 1.00"]
    ap, precisions, recalls, overlaps = compute_ap(boxes, ids, masks, boxes, ids, scores, masks)
    visualize.plot_precision_recall(ap, precisions, recalls)
    assert plt.gcf().axes[0].get_title().endswith("1.000")
    visualize.plot_overlaps(ids, ids, scores, overlaps, NAMES)
    assert sum("match" in t.get_text() for t in plt.gcf().axes[0].texts) == 2


def test_grids_and_boxes(scene, capsys):
    image, boxes, masks, ids, scores = scene
    visualize.display_top_masks(image, masks, ids, NAMES, limit=2)
    titles = [ax.get_title() for ax in plt.gcf().axes]
    assert titles[:3] == ["H x W=64x80", "Lymphocyte", "Basophil"]  # larger mask first
    visualize.display_images([image, image], titles=["a", "b"], cols=2)
    visualize.draw_boxes(image, boxes=boxes, refined_boxes=boxes + 1, masks=masks, captions=["x", "y"],
                         visibilities=[2, 1])
    assert [t.get_text() for t in plt.gcf().axes[0].texts] == ["x", "y"]
    visualize.draw_rois(image, boxes, boxes + 2, np.ones((2, 28, 28)), np.array([1, 0]), NAMES)
    assert "Positive ROIs: 1" in capsys.readouterr().out
    visualize.display_table([["a", "bb"], [1, 2]])
    assert "a  bb" in capsys.readouterr().out
