"""The calls of Matterport's inspect_data and inspect_model notebooks, cell by cell, against mrcnn_tf.

Each string below is one notebook cell, re-created from the calls, arguments and shapes the notebooks
rely on (only the import changes), run in one namespace as Jupyter would, on a small shapes dataset in
Matterport's own Dataset style. The one cell Keras 3 cannot run as written (``tf.identity`` on a
layer's output) is checked to fail, and run without the ``tf.identity``.
"""
import textwrap

import matplotlib
import numpy as np
import pytest

from helpers_model import tiny_config
from mrcnn_tf import utils

matplotlib.use("Agg")


class ShapesDataset(utils.Dataset):
    """Squares, circles and triangles on a plain background (Matterport's shapes sample, re-made)."""

    def load_shapes(self, count, height, width, seed=0):
        rng = np.random.default_rng(seed)
        for k, name in enumerate(("square", "circle", "triangle"), start=1):
            self.add_class("shapes", k, name)
        for i in range(count):
            shapes = []
            for _ in range(int(rng.integers(1, 4))):
                size = int(rng.integers(8, 16))
                y, x = (int(v) for v in rng.integers(size, height - size, size=2))
                shapes.append((("square", "circle", "triangle")[int(rng.integers(0, 3))],
                               tuple(int(c) for c in rng.integers(60, 255, 3)), (y, x, size)))
            self.add_image("shapes", image_id=i, path=None, width=width, height=height,
                           bg_color=tuple(int(c) for c in rng.integers(0, 50, 3)), shapes=shapes)

    def _shape_mask(self, info, shape, dims):
        yy, xx = np.mgrid[:info["height"], :info["width"]]
        y, x, s = dims
        if shape == "square":
            return (abs(yy - y) <= s) & (abs(xx - x) <= s)
        if shape == "circle":
            return (yy - y) ** 2 + (xx - x) ** 2 <= s * s
        return (yy >= y - s) & (yy <= y + s) & (abs(xx - x) <= (yy - (y - s)) / 2)

    def load_image(self, image_id):
        info = self.image_info[image_id]
        image = np.ones((info["height"], info["width"], 3), np.uint8) * np.array(info["bg_color"], np.uint8)
        for shape, color, dims in info["shapes"]:
            image[self._shape_mask(info, shape, dims)] = color
        return image

    def load_mask(self, image_id):
        info = self.image_info[image_id]
        masks = np.stack([self._shape_mask(info, s, d) for s, _, d in info["shapes"]], axis=-1)
        # Later shapes cover earlier ones, as they are drawn.
        covered = np.zeros(masks.shape[:2], bool)
        for i in reversed(range(masks.shape[-1])):
            masks[..., i] &= ~covered
            covered |= masks[..., i]
        class_ids = np.array([self.class_names.index(s) for s, _, _ in info["shapes"]], np.int32)
        keep = masks.any(axis=(0, 1))
        return masks[..., keep], class_ids[keep]

    def image_reference(self, image_id):
        return f"shapes image {image_id}"


PREAMBLE = """
import os, sys, random, math, re, time
import numpy as np
import tensorflow as tf
import matplotlib
import matplotlib.pyplot as plt
import matplotlib.patches as patches
from mrcnn_tf import utils
from mrcnn_tf import visualize
from mrcnn_tf.visualize import display_images
import mrcnn_tf.model as modellib
from mrcnn_tf.model import log

def get_ax(rows=1, cols=1, size=4):
    _, ax = plt.subplots(rows, cols, figsize=(size * cols, size * rows))
    return ax
"""

INSPECT_DATA = [
    """
    dataset.prepare()
    print("Image Count: {}".format(len(dataset.image_ids)))
    print("Class Count: {}".format(dataset.num_classes))
    for i, info in enumerate(dataset.class_info):
        print("{:3}. {:50}".format(i, info['name']))
    """,
    """
    image_ids = np.random.choice(dataset.image_ids, 4)
    for image_id in image_ids:
        image = dataset.load_image(image_id)
        mask, class_ids = dataset.load_mask(image_id)
        visualize.display_top_masks(image, mask, class_ids, dataset.class_names)
    """,
    """
    image_id = random.choice(dataset.image_ids)
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    bbox = utils.extract_bboxes(mask)
    print("image_id ", image_id, dataset.image_reference(image_id))
    log("image", image); log("mask", mask); log("class_ids", class_ids); log("bbox", bbox)
    visualize.display_instances(image, bbox, mask, class_ids, dataset.class_names)
    """,
    """
    image_id = np.random.choice(dataset.image_ids, 1)[0]
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    original_shape = image.shape
    image, window, scale, padding, _ = utils.resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, max_dim=config.IMAGE_MAX_DIM, mode=config.IMAGE_RESIZE_MODE)
    mask = utils.resize_mask(mask, scale, padding)
    bbox = utils.extract_bboxes(mask)
    visualize.display_instances(image, bbox, mask, class_ids, dataset.class_names)
    """,
    """
    image_id = np.random.choice(dataset.image_ids, 1)[0]
    image, image_meta, class_ids, bbox, mask = modellib.load_image_gt(dataset, config, image_id, use_mini_mask=False)
    log("image_meta", image_meta)
    display_images([image] + [mask[:, :, i] for i in range(min(mask.shape[-1], 7))])
    visualize.display_instances(image, bbox, mask, class_ids, dataset.class_names)
    """,
    """
    image, image_meta, class_ids, bbox, mask = modellib.load_image_gt(
        dataset, config, image_id, augment=True, use_mini_mask=True)
    log("mask", mask)
    display_images([image] + [mask[:, :, i] for i in range(min(mask.shape[-1], 7))])
    mask = utils.expand_mask(bbox, mask, image.shape)
    visualize.display_instances(image, bbox, mask, class_ids, dataset.class_names)
    """,
    """
    backbone_shapes = modellib.compute_backbone_shapes(config, config.IMAGE_SHAPE)
    anchors = utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS, backbone_shapes,
                                             config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
    num_levels = len(backbone_shapes)
    anchors_per_cell = len(config.RPN_ANCHOR_RATIOS)
    print("Count: ", anchors.shape[0])
    anchors_per_level = []
    for l in range(num_levels):
        num_cells = backbone_shapes[l][0] * backbone_shapes[l][1]
        anchors_per_level.append(anchors_per_cell * num_cells // config.RPN_ANCHOR_STRIDE**2)
        print("Anchors in Level {}: {}".format(l, anchors_per_level[l]))
    """,
    """
    image_id = np.random.choice(dataset.image_ids, 1)[0]
    image, image_meta, _, _, _ = modellib.load_image_gt(dataset, config, image_id)
    fig, ax = plt.subplots(1, figsize=(5, 5))
    ax.imshow(image)
    levels = len(backbone_shapes)
    for level in range(levels):
        colors = visualize.random_colors(levels)
        level_start = sum(anchors_per_level[:level])
        level_anchors = anchors[level_start:level_start + anchors_per_level[level]]
        center_cell = backbone_shapes[level] // 2
        center_anchor = anchors_per_cell * (
            (center_cell[0] * backbone_shapes[level][1] / config.RPN_ANCHOR_STRIDE**2)
            + center_cell[1] / config.RPN_ANCHOR_STRIDE)
        level_center = int(center_anchor)
        for i, rect in enumerate(level_anchors[level_center:level_center + anchors_per_cell]):
            y1, x1, y2, x2 = rect
            p = patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, facecolor='none',
                                  edgecolor=(i + 1) * np.array(colors[level]) / anchors_per_cell)
            ax.add_patch(p)
    """,
    """
    random_rois = 2000
    g = modellib.data_generator(dataset, config, shuffle=True, random_rois=random_rois, batch_size=4,
                                detection_targets=True)
    """,
    """
    if random_rois:
        [normalized_images, image_meta, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks, rpn_rois, rois], \\
            [mrcnn_class_ids, mrcnn_bbox, mrcnn_mask] = next(g)
        log("rois", rois); log("mrcnn_class_ids", mrcnn_class_ids)
        log("mrcnn_bbox", mrcnn_bbox); log("mrcnn_mask", mrcnn_mask)
    log("gt_class_ids", gt_class_ids); log("gt_boxes", gt_boxes); log("gt_masks", gt_masks)
    log("rpn_match", rpn_match); log("rpn_bbox", rpn_bbox)
    image_id = modellib.parse_image_meta(image_meta)["image_id"][0]
    print("image_id: ", image_id, dataset.image_reference(image_id))
    mrcnn_class_ids = mrcnn_class_ids[:, :, 0]
    """,
    """
    b = 0
    sample_image = modellib.unmold_image(normalized_images[b], config)
    indices = np.where(rpn_match[b] == 1)[0]
    refined_anchors = utils.apply_box_deltas(anchors[indices], rpn_bbox[b, :len(indices)] * config.RPN_BBOX_STD_DEV)
    log("anchors", anchors); log("refined_anchors", refined_anchors)
    positive_anchor_ids = np.where(rpn_match[b] == 1)[0]
    negative_anchor_ids = np.where(rpn_match[b] == -1)[0]
    neutral_anchor_ids = np.where(rpn_match[b] == 0)[0]
    for c, n in zip(dataset.class_names, np.bincount(mrcnn_class_ids[b].flatten())):
        if n:
            print("{:23}: {}".format(c[:20], n))
    visualize.draw_boxes(sample_image, boxes=anchors[positive_anchor_ids], refined_boxes=refined_anchors)
    visualize.draw_boxes(sample_image, boxes=anchors[negative_anchor_ids])
    visualize.draw_boxes(sample_image, boxes=anchors[np.random.choice(neutral_anchor_ids, 100)])
    """,
    """
    if random_rois:
        bbox_specific = mrcnn_bbox[b, np.arange(mrcnn_bbox.shape[1]), mrcnn_class_ids[b], :]
        refined_rois = utils.apply_box_deltas(rois[b].astype(np.float32), bbox_specific[:, :4] * config.BBOX_STD_DEV)
        mask_specific = mrcnn_mask[b, np.arange(mrcnn_mask.shape[1]), :, :, mrcnn_class_ids[b]]
        visualize.draw_rois(sample_image, rois[b], refined_rois, mask_specific, mrcnn_class_ids[b],
                            dataset.class_names)
        rows = np.ascontiguousarray(rois[b]).view(np.dtype((np.void, rois.dtype.itemsize * rois.shape[-1])))
        _, idx = np.unique(rows, return_index=True)
        print("Unique ROIs: {} out of {}".format(len(idx), rois.shape[1]))
    """,
    """
    if random_rois:
        ids = random.sample(range(rois.shape[1]), 8)
        images = []
        titles = []
        for i in ids:
            image = visualize.draw_box(sample_image.copy(), rois[b, i, :4].astype(np.int32), [255, 0, 0])
            image = visualize.draw_box(image, refined_rois[i].astype(np.int64), [0, 255, 0])
            images.append(image)
            titles.append("ROI {}".format(i))
            images.append(mask_specific[i] * 255)
            titles.append(dataset.class_names[mrcnn_class_ids[b, i]][:20])
        display_images(images, titles, cols=4, cmap="Blues", interpolation="none")
    """,
    """
    if random_rois:
        limit = 10
        temp_g = modellib.data_generator(dataset, config, shuffle=True, random_rois=10000, batch_size=1,
                                         detection_targets=True)
        total = 0
        for i in range(limit):
            _, [ids, _, _] = next(temp_g)
            positive_rois = np.sum(ids[0] > 0)
            total += positive_rois
            print("{:5} {:5.2f}".format(positive_rois, positive_rois / ids.shape[1]))
        print("Average percent: {:.2f}".format(total / (limit * ids.shape[1])))
    """,
]

INSPECT_MODEL = [
    """
    image_id = random.choice(dataset.image_ids)
    image, image_meta, gt_class_id, gt_bbox, gt_mask = modellib.load_image_gt(dataset, config, image_id,
                                                                              use_mini_mask=False)
    info = dataset.image_info[image_id]
    print("image ID: {}.{} ({}) {}".format(info["source"], info["id"], image_id, dataset.image_reference(image_id)))
    results = model.detect([image], verbose=1)
    ax = get_ax(1)
    r = results[0]
    visualize.display_instances(image, r['rois'], r['masks'], r['class_ids'], dataset.class_names, r['scores'],
                                ax=ax, title="Predictions")
    log("gt_class_id", gt_class_id); log("gt_bbox", gt_bbox); log("gt_mask", gt_mask)
    """,
    """
    AP, precisions, recalls, overlaps = utils.compute_ap(gt_bbox, gt_class_id, gt_mask,
                                                         r['rois'], r['class_ids'], r['scores'], r['masks'])
    visualize.plot_precision_recall(AP, precisions, recalls)
    visualize.plot_overlaps(gt_class_id, r['class_ids'], r['scores'], overlaps, dataset.class_names)
    """,
    """
    def compute_batch_ap(image_ids):
        APs = []
        for image_id in image_ids:
            image, image_meta, gt_class_id, gt_bbox, gt_mask = modellib.load_image_gt(
                dataset, config, image_id, use_mini_mask=False)
            results = model.detect([image], verbose=0)
            r = results[0]
            AP, precisions, recalls, overlaps = utils.compute_ap(
                gt_bbox, gt_class_id, gt_mask, r['rois'], r['class_ids'], r['scores'], r['masks'])
            APs.append(AP)
        return APs
    APs = compute_batch_ap(np.random.choice(dataset.image_ids, 3))
    print("mAP @ IoU=50: ", np.mean(APs))
    """,
    """
    target_rpn_match, target_rpn_bbox = modellib.build_rpn_targets(
        image.shape, model.anchors, gt_class_id, gt_bbox, model.config)
    log("target_rpn_match", target_rpn_match); log("target_rpn_bbox", target_rpn_bbox)
    positive_anchor_ix = np.where(target_rpn_match[:] == 1)[0]
    negative_anchor_ix = np.where(target_rpn_match[:] == -1)[0]
    neutral_anchor_ix = np.where(target_rpn_match[:] == 0)[0]
    positive_anchors = model.anchors[positive_anchor_ix]
    refined_anchors = utils.apply_box_deltas(
        positive_anchors, target_rpn_bbox[:positive_anchors.shape[0]] * model.config.RPN_BBOX_STD_DEV)
    visualize.draw_boxes(image, boxes=positive_anchors, refined_boxes=refined_anchors, ax=get_ax())
    """,
    """
    pillar = model.keras_model.get_layer("ROI").output
    nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression:0")
    if nms_node is None:
        nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression/NonMaxSuppressionV2:0")
    if nms_node is None:
        nms_node = model.ancestor(pillar, "ROI/rpn_non_max_suppression/NonMaxSuppressionV3:0")
    rpn = model.run_graph([image], [
        ("rpn_class", model.keras_model.get_layer("rpn_class").output),
        ("pre_nms_anchors", model.ancestor(pillar, "ROI/pre_nms_anchors:0")),
        ("refined_anchors", model.ancestor(pillar, "ROI/refined_anchors:0")),
        ("refined_anchors_clipped", model.ancestor(pillar, "ROI/refined_anchors_clipped:0")),
        ("post_nms_anchor_ix", nms_node),
        ("proposals", model.keras_model.get_layer("ROI").output),
    ])
    """,
    """
    limit = 100
    sorted_anchor_ids = np.argsort(rpn['rpn_class'][:, :, 1].flatten())[::-1]
    visualize.draw_boxes(image, boxes=model.anchors[sorted_anchor_ids[:limit]], ax=get_ax())
    limit = 50
    ax = get_ax(1, 2)
    pre_nms_anchors = utils.denorm_boxes(rpn["pre_nms_anchors"][0], image.shape[:2])
    refined_anchors = utils.denorm_boxes(rpn["refined_anchors"][0], image.shape[:2])
    refined_anchors_clipped = utils.denorm_boxes(rpn["refined_anchors_clipped"][0], image.shape[:2])
    visualize.draw_boxes(image, boxes=pre_nms_anchors[:limit], refined_boxes=refined_anchors[:limit], ax=ax[0])
    visualize.draw_boxes(image, refined_boxes=refined_anchors_clipped[:limit], ax=ax[1])
    """,
    """
    limit = 50
    ixs = rpn["post_nms_anchor_ix"][:limit]
    visualize.draw_boxes(image, refined_boxes=refined_anchors_clipped[ixs], ax=get_ax())
    h, w = config.IMAGE_SHAPE[:2]
    proposals = rpn['proposals'][0, :limit] * np.array([h, w, h, w])
    visualize.draw_boxes(image, refined_boxes=proposals, ax=get_ax())
    """,
    """
    iou_threshold = 0.7
    recall, positive_anchor_ids = utils.compute_recall(model.anchors, gt_bbox, iou_threshold)
    print("All Anchors ({:5})       Recall: {:.3f}  Positive anchors: {}".format(
        model.anchors.shape[0], recall, len(positive_anchor_ids)))
    recall, positive_anchor_ids = utils.compute_recall(rpn['refined_anchors'][0], gt_bbox, iou_threshold)
    print("Refined Anchors ({:5})   Recall: {:.3f}  Positive anchors: {}".format(
        rpn['refined_anchors'].shape[1], recall, len(positive_anchor_ids)))
    recall, positive_anchor_ids = utils.compute_recall(proposals, gt_bbox, iou_threshold)
    print("Post NMS Anchors ({:5})  Recall: {:.3f}  Positive anchors: {}".format(
        proposals.shape[0], recall, len(positive_anchor_ids)))
    """,
    """
    mrcnn = model.run_graph([image], [
        ("proposals", model.keras_model.get_layer("ROI").output),
        ("probs", model.keras_model.get_layer("mrcnn_class").output),
        ("deltas", model.keras_model.get_layer("mrcnn_bbox").output),
        ("masks", model.keras_model.get_layer("mrcnn_mask").output),
        ("detections", model.keras_model.get_layer("mrcnn_detection").output),
    ])
    det_class_ids = mrcnn['detections'][0, :, 4].astype(np.int32)
    det_count = np.where(det_class_ids == 0)[0][0]
    det_class_ids = det_class_ids[:det_count]
    detections = mrcnn['detections'][0, :det_count]
    print("{} detections: {}".format(det_count, np.array(dataset.class_names)[det_class_ids]))
    captions = ["{} {:.3f}".format(dataset.class_names[int(c)], s) if c > 0 else ""
                for c, s in zip(detections[:, 4], detections[:, 5])]
    visualize.draw_boxes(image, refined_boxes=utils.denorm_boxes(detections[:, :4], image.shape[:2]),
                         visibilities=[2] * len(detections), captions=captions, title="Detections", ax=get_ax())
    """,
    """
    h, w = config.IMAGE_SHAPE[:2]
    proposals = np.around(mrcnn["proposals"][0] * np.array([h, w, h, w])).astype(np.int32)
    roi_class_ids = np.argmax(mrcnn["probs"][0], axis=1)
    roi_scores = mrcnn["probs"][0, np.arange(roi_class_ids.shape[0]), roi_class_ids]
    roi_class_names = np.array(dataset.class_names)[roi_class_ids]
    roi_positive_ixs = np.where(roi_class_ids > 0)[0]
    print("{} Valid proposals out of {}".format(np.sum(np.any(proposals, axis=1)), proposals.shape[0]))
    print("{} Positive ROIs".format(len(roi_positive_ixs)))
    print(list(zip(*np.unique(roi_class_names, return_counts=True))))
    limit = 200
    ixs = np.random.randint(0, proposals.shape[0], limit)
    captions = ["{} {:.3f}".format(dataset.class_names[c], s) if c > 0 else ""
                for c, s in zip(roi_class_ids[ixs], roi_scores[ixs])]
    visualize.draw_boxes(image, boxes=proposals[ixs], visibilities=np.where(roi_class_ids[ixs] > 0, 2, 1),
                         captions=captions, title="ROIs Before Refinement", ax=get_ax())
    """,
    """
    roi_bbox_specific = mrcnn["deltas"][0, np.arange(proposals.shape[0]), roi_class_ids]
    refined_proposals = utils.apply_box_deltas(proposals, roi_bbox_specific * config.BBOX_STD_DEV).astype(np.int32)
    limit = 5
    ids = np.random.randint(0, len(roi_positive_ixs), limit)
    captions = ["{} {:.3f}".format(dataset.class_names[c], s) if c > 0 else ""
                for c, s in zip(roi_class_ids[roi_positive_ixs][ids], roi_scores[roi_positive_ixs][ids])]
    visualize.draw_boxes(image, boxes=proposals[roi_positive_ixs][ids],
                         refined_boxes=refined_proposals[roi_positive_ixs][ids],
                         visibilities=np.where(roi_class_ids[roi_positive_ixs][ids] > 0, 1, 0),
                         captions=captions, title="ROIs After Refinement", ax=get_ax())
    """,
    """
    keep = np.where(roi_class_ids > 0)[0]
    keep = np.intersect1d(keep, np.where(roi_scores >= config.DETECTION_MIN_CONFIDENCE)[0])
    pre_nms_boxes = refined_proposals[keep]
    pre_nms_scores = roi_scores[keep]
    pre_nms_class_ids = roi_class_ids[keep]
    nms_keep = []
    for class_id in np.unique(pre_nms_class_ids):
        ixs = np.where(pre_nms_class_ids == class_id)[0]
        class_keep = utils.non_max_suppression(pre_nms_boxes[ixs], pre_nms_scores[ixs], config.DETECTION_NMS_THRESHOLD)
        class_keep = keep[ixs[class_keep]]
        nms_keep = np.union1d(nms_keep, class_keep)
    keep = np.intersect1d(keep, nms_keep).astype(np.int32)
    ixs = np.arange(len(keep))
    captions = ["{} {:.3f}".format(dataset.class_names[c], s) if c > 0 else ""
                for c, s in zip(roi_class_ids[keep][ixs], roi_scores[keep][ixs])]
    visualize.draw_boxes(image, boxes=proposals[keep][ixs], refined_boxes=refined_proposals[keep][ixs],
                         visibilities=np.where(roi_class_ids[keep][ixs] > 0, 1, 0),
                         captions=captions, title="Detections after NMS", ax=get_ax())
    """,
    """
    display_images(np.transpose(gt_mask, [2, 0, 1]), cmap="Blues")
    mrcnn = model.run_graph([image], [
        ("detections", model.keras_model.get_layer("mrcnn_detection").output),
        ("masks", model.keras_model.get_layer("mrcnn_mask").output),
    ])
    det_class_ids = mrcnn['detections'][0, :, 4].astype(np.int32)
    det_count = np.where(det_class_ids == 0)[0][0]
    det_class_ids = det_class_ids[:det_count]
    det_boxes = utils.denorm_boxes(mrcnn["detections"][0, :, :4], image.shape[:2])
    det_mask_specific = np.array([mrcnn["masks"][0, i, :, :, c] for i, c in enumerate(det_class_ids)])
    det_masks = np.array([utils.unmold_mask(m, det_boxes[i], image.shape) for i, m in enumerate(det_mask_specific)])
    log("det_mask_specific", det_mask_specific); log("det_masks", det_masks)
    display_images(det_mask_specific[:4] * 255, cmap="Blues", interpolation="none")
    display_images(det_masks[:4] * 255, cmap="Blues", interpolation="none")
    """,
    # The activations cell without its tf.identity(...): run_graph takes the layer output as it is.
    """
    activations = model.run_graph([image], [
        ("input_image", model.keras_model.get_layer("input_image").output),
        ("res4f_out", model.keras_model.get_layer("res4f_out").output),
        ("rpn_bbox", model.keras_model.get_layer("rpn_bbox").output),
        ("roi", model.keras_model.get_layer("ROI").output),
    ])
    _ = plt.imshow(modellib.unmold_image(activations["input_image"][0], config))
    display_images(np.transpose(activations["res4f_out"][0, :, :, :4], [2, 0, 1]))
    plt.figure(figsize=(12, 3))
    for k, title in enumerate(["dy", "dx", "dw", "dh"]):
        plt.subplot(1, 4, k + 1)
        plt.title(title)
        _ = plt.hist(activations["rpn_bbox"][0, :, k], 50)
    plt.figure(figsize=(10, 5))
    plt.subplot(1, 2, 1)
    plt.scatter(activations["roi"][0, :, 0], activations["roi"][0, :, 1])
    plt.subplot(1, 2, 2)
    plt.scatter(activations["roi"][0, :, 2], activations["roi"][0, :, 3])
    plt.show()
    """,
]


def run_cells(namespace, cells):
    """exec each cell in one namespace, as a kernel would; a failing cell names its index."""
    import matplotlib.pyplot as plt

    for index, cell in enumerate(cells):
        try:
            exec(compile(textwrap.dedent(cell), f"<cell {index}>", "exec"), namespace)
        finally:
            plt.close("all")


@pytest.fixture
def dataset():
    ds = ShapesDataset()
    ds.load_shapes(8, 64, 64, seed=3)
    return ds


def notebook_namespace(**values):
    namespace = {}
    exec(textwrap.dedent(PREAMBLE), namespace)
    namespace["random"].seed(0)
    np.random.seed(0)
    namespace.update(values)
    return namespace


def test_inspect_data_cells_run(dataset, capsys):
    config = tiny_config(NUM_CLASSES=4, TRAIN_ROIS_PER_IMAGE=16)
    namespace = notebook_namespace(dataset=dataset, config=config)
    run_cells(namespace, INSPECT_DATA)
    out = capsys.readouterr().out
    assert "Class Count: 4" in out and "Unique ROIs:" in out and "Average percent:" in out
    assert namespace["rois"].shape == (4, 16, 4) and namespace["mrcnn_mask"].shape == (4, 16, 28, 28, 4)
    assert namespace["mrcnn_class_ids"].shape == (4, 16) and namespace["mrcnn_class_ids"].any()


def test_inspect_model_cells_run(dataset, tmp_path, capsys):
    from mrcnn_tf import model as modellib

    # ResNet-50: the notebook reads activations of its layers by name (res4f_out).
    config = tiny_config(BACKBONE="resnet50", NUM_CLASSES=4, DETECTION_MAX_INSTANCES=40, DETECTION_MIN_CONFIDENCE=0.3)
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=str(tmp_path))
    # Random weights would call every ROI background; a low background bias gives the cells detections.
    dense = model.keras_model.get_layer("mrcnn_class_logits").layer
    bias = np.zeros(dense.bias.shape, np.float32)
    bias[0] = -20.0
    dense.bias.assign(bias)
    dataset.prepare()
    namespace = notebook_namespace(dataset=dataset, config=config, model=model)
    run_cells(namespace, INSPECT_MODEL)
    out = capsys.readouterr().out
    assert "mAP @ IoU=50" in out and "Post NMS Anchors" in out and "Positive ROIs" in out
    ixs = namespace["rpn"]["post_nms_anchor_ix"]
    np.testing.assert_allclose(namespace["rpn"]["proposals"][0, :len(ixs)],
                               namespace["rpn"]["refined_anchors_clipped"][0][ixs], atol=1e-6)
    assert namespace["det_count"] > 0 and namespace["det_masks"].shape[1:] == (64, 64)
    # The one cell Keras 3 cannot run as written: raw TF ops refuse a Keras tensor before mrcnn_tf is called.
    with pytest.raises(ValueError, match="KerasTensor"):
        run_cells(namespace, ['tf.identity(model.keras_model.get_layer("input_image").output)'])
