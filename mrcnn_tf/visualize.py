"""Matterport's display helpers (same names and arguments), safe on machines without a display.

matplotlib is imported on first use, not at import time, and IPython is optional. On a
non-interactive backend (Agg, e.g. a server or CI) the ``display_*`` functions draw into the
current pyplot figure and leave it open instead of calling ``show()``, so ``plt.savefig`` works
afterwards; `save_instances` writes an overlay PNG directly without touching pyplot's state.

Boxes are pixel ``(y1, x1, y2, x2)`` rows (y2/x2 exclusive); masks are ``[H, W, N]`` arrays.
"""
import colorsys
import itertools
import random

import numpy as np

from mrcnn_tf.evaluation.matching import compute_matches

# matplotlib's built-in non-interactive backends (backend_registry needs matplotlib >= 3.9).
NON_INTERACTIVE_BACKENDS = ("agg", "cairo", "pdf", "pgf", "ps", "svg", "template")


def _pyplot():
    import matplotlib.pyplot as plt  # lazy: importing this module must not pick a GUI backend
    return plt


def _show():
    """Show the current figure on an interactive backend; keep it open for savefig otherwise."""
    import matplotlib
    # plt.show() on Agg only warns "non-interactive"; skipping it leaves the figure for savefig.
    if matplotlib.get_backend().lower() not in NON_INTERACTIVE_BACKENDS:
        _pyplot().show()


def random_colors(N, bright=True):
    """N visually distinct RGB colours in [0, 1] (evenly spaced hues, shuffled, as Matterport)."""
    colors = class_colors(N, bright)
    random.shuffle(colors)
    return colors


def class_colors(N, bright=True):
    """N distinct RGB colours in [0, 1], in a fixed order (one per class for consistent overlays)."""
    brightness = 1.0 if bright else 0.7
    return [colorsys.hsv_to_rgb(i / max(N, 1), 1, brightness) for i in range(N)]


def apply_mask(image, mask, color, alpha=0.5):
    """Blend `color` (RGB in [0, 1]) into `image` where `mask` is set; changes `image` in place.

    Args:
        image: [H, W, 3] array (uint8 range values).
        mask: [H, W] array, 1/True inside.
        color: (r, g, b) in [0, 1].
        alpha: opacity of the colour.

    Returns:
        `image`.
    """
    inside = np.asarray(mask) == 1
    for c in range(3):
        image[:, :, c] = np.where(inside, image[:, :, c] * (1 - alpha) + alpha * color[c] * 255, image[:, :, c])
    return image


def display_images(images, titles=None, cols=4, cmap=None, norm=None, interpolation=None):
    """Show images in a grid, each with an optional title."""
    plt = _pyplot()
    titles = titles if titles is not None else [""] * len(images)
    rows = len(images) // cols + 1
    plt.figure(figsize=(14, 14 * rows // cols))
    for i, (image, title) in enumerate(zip(images, titles), start=1):
        plt.subplot(rows, cols, i)
        plt.title(title, fontsize=9)
        plt.axis("off")
        plt.imshow(np.asarray(image).astype(np.uint8), cmap=cmap, norm=norm, interpolation=interpolation)
    _show()


def _contours(mask):
    """Polygon outlines (x, y) of a binary mask, padded so edge-touching shapes close."""
    from skimage.measure import find_contours
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = mask
    return [np.fliplr(verts) - 1 for verts in find_contours(padded, 0.5)]


def _draw_instances(ax, image, boxes, masks, class_ids, class_names, scores=None, show_mask=True, show_bbox=True,
                    colors=None, captions=None, fontsize=11, caption_box=False, mask_alpha=0.5, nucleus_masks=None):
    """Draw boxes, captions, tinted masks and outlines onto `ax` (shared by display and save); nuclei as dashed
    outlines inside their cells."""
    from matplotlib import patches
    count = boxes.shape[0]
    colors = colors or random_colors(count)
    masked = np.asarray(image).astype(np.float64).copy()
    for i in range(count):
        color = colors[i]
        if not np.any(boxes[i]):
            continue  # zero box: the instance was dropped (e.g. cropped away)
        y1, x1, y2, x2 = boxes[i]
        if show_bbox:
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=0.7, linestyle="dashed",
                                           edgecolor=color, facecolor="none"))
        if captions is None:
            label = class_names[class_ids[i]]
            caption = f"{label} {scores[i]:.3f}" if scores is not None else label
        else:
            caption = captions[i]
        # On pale smears white text needs a dark backing to be readable (overlay files only).
        backing = {"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"} if caption_box else None
        ax.text(x1, y1 + 8, caption, color="w", size=fontsize, backgroundcolor="none", bbox=backing)
        if masks is not None:
            mask = masks[:, :, i]
            if show_mask:
                masked = apply_mask(masked, mask, color, alpha=mask_alpha)
            for verts in _contours(mask):
                ax.add_patch(patches.Polygon(verts, facecolor="none", edgecolor=color, linewidth=1.5))
            if nucleus_masks is not None:
                for verts in _contours(np.asarray(nucleus_masks[:, :, i]) & np.asarray(mask, bool)):
                    ax.add_patch(patches.Polygon(verts, facecolor="none", edgecolor=color, linewidth=1,
                                                 linestyle="dashed"))
    ax.imshow(masked.astype(np.uint8))


def display_instances(image, boxes, masks, class_ids, class_names, scores=None, title="", figsize=(16, 16),
                      ax=None, show_mask=True, show_bbox=True, colors=None, captions=None):
    """Show an image with its instances: dashed boxes, "class score" captions, tinted masks, outlines.

    Args:
        image: [H, W, 3] image.
        boxes: [N, 4] pixel boxes (y1, x1, y2, x2).
        masks: [H, W, N] masks.
        class_ids: [N] class ids (indices into `class_names`).
        class_names: list of names, 0 = BG.
        scores: optional [N] confidences for the captions.
        title, figsize: figure title and size (used when `ax` is None).
        ax: draw into this axis instead of a new figure.
        show_mask, show_bbox: draw the tinted masks / the boxes.
        colors: optional list of N RGB colours in [0, 1].
        captions: optional N strings replacing "class score".
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    if boxes.shape[0] == 0:
        print("\n*** No instances to display *** \n")
    elif masks is not None and boxes.shape[0] != np.asarray(masks).shape[-1]:
        raise ValueError(f"{boxes.shape[0]} boxes but {np.asarray(masks).shape[-1]} masks: pass one mask per box")
    own_figure = ax is None
    if own_figure:
        _, ax = _pyplot().subplots(1, figsize=figsize)
    height, width = np.asarray(image).shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)
    _draw_instances(ax, image, boxes, masks, class_ids, class_names, scores, show_mask, show_bbox, colors, captions)
    if own_figure:
        _show()


def save_instances(path, image, boxes, masks, class_ids, class_names, scores=None, colors=None, dpi=100,
                   nucleus_masks=None, mask_alpha=0.5):
    """Write an overlay PNG of the image's size: tinted masks, outlines, boxes and "type score" captions.

    Uses a private Agg figure (no pyplot state), so it is safe in loops and on headless machines.

    Args:
        path: output file (.png).
        image, boxes, masks, class_ids, class_names, scores, colors: as `display_instances`
            (colors default to one fixed colour per class, so a type looks the same in every image).
        nucleus_masks: optional [H, W, N] bool, outlined (dashed) inside each cell.
        mask_alpha: opacity of the cells' tint (0.5 as Matterport; lower keeps the cell visible under it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    image = np.asarray(image)
    height, width = image.shape[:2]
    boxes = np.asarray(boxes).reshape(-1, 4)
    if colors is None:
        palette = class_colors(max(len(class_names) - 1, 1))
        colors = [palette[(int(c) - 1) % len(palette)] for c in class_ids]
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.axis("off")
    _draw_instances(ax, image, boxes, masks, class_ids, class_names, scores, colors=colors,
                    fontsize=max(6, min(11, width // 60)), caption_box=True, mask_alpha=mask_alpha,
                    nucleus_masks=nucleus_masks)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    # zlib level 1: a 720x576 overlay encodes in 0.06 s instead of 0.3 s (most of the call) for ~17% more bytes.
    figure.savefig(path, dpi=dpi, pil_kwargs={"compress_level": 1})


def display_differences(image, gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
                        class_names, title="", ax=None, show_mask=True, show_box=True, iou_threshold=0.5,
                        score_threshold=0.5):
    """Show ground truth (green) and predictions (red) together; captions give score / IoU of matches."""
    gt_match, pred_match, overlaps = compute_matches(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id,
                                                     pred_score, pred_mask, iou_threshold=iou_threshold,
                                                     score_threshold=score_threshold)
    # compute_matches reports predictions in decreasing score order: sort ours the same way.
    order = np.argsort(-np.asarray(pred_score, dtype=np.float64), kind="stable")[:len(pred_match)]
    pred_box = np.asarray(pred_box).reshape(-1, 4)[order]
    pred_class_id = np.asarray(pred_class_id)[order]
    pred_score = np.asarray(pred_score)[order]
    pred_mask = np.asarray(pred_mask)[..., order]
    gt_box = np.asarray(gt_box).reshape(-1, 4)[:len(gt_match)]
    colors = [(0, 1, 0, 0.8)] * len(gt_match) + [(1, 0, 0, 1)] * len(pred_match)
    class_ids = np.concatenate([np.asarray(gt_class_id)[:len(gt_match)], pred_class_id])
    scores = np.concatenate([np.zeros(len(gt_match)), pred_score])
    boxes = np.concatenate([gt_box, pred_box])
    masks = np.concatenate([np.asarray(gt_mask)[..., :len(gt_match)], pred_mask], axis=-1)
    captions = [""] * len(gt_match) + [
        "{:.2f} / {:.2f}".format(pred_score[i],
                                 overlaps[i, int(pred_match[i])] if pred_match[i] > -1 else
                                 (overlaps[i].max() if overlaps.shape[1] else 0.0))
        for i in range(len(pred_match))]
    title = title or "Ground Truth and Detections\n GT=green, pred=red, captions: score/IoU"
    display_instances(image, boxes, masks, class_ids, class_names, scores, ax=ax, show_bbox=show_box,
                      show_mask=show_mask, colors=colors, captions=captions, title=title)


def draw_rois(image, rois, refined_rois, mask, class_ids, class_names, limit=10):
    """Show up to `limit` ROIs (grey: background, coloured: positives) and their refinements."""
    from matplotlib import lines, patches

    from mrcnn_tf.ops.masks import unmold_mask
    plt = _pyplot()
    masked = np.asarray(image).astype(np.float64).copy()
    _, ax = plt.subplots(1, figsize=(12, 12))
    ids = np.arange(rois.shape[0], dtype=np.int32)
    ids = np.random.choice(ids, limit, replace=False) if ids.shape[0] > limit else ids
    colors = random_colors(len(ids))
    height, width = masked.shape[:2]
    ax.set_ylim(height + 20, -20)
    ax.set_xlim(-50, width + 20)
    ax.axis("off")
    for i, roi_id in enumerate(ids):
        color = colors[i]
        class_id = class_ids[roi_id]
        y1, x1, y2, x2 = rois[roi_id]
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, edgecolor=color if class_id else
                                       "gray", facecolor="none", linestyle="dashed"))
        if class_id:
            ry1, rx1, ry2, rx2 = refined_rois[roi_id]
            ax.add_patch(patches.Rectangle((rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2, edgecolor=color,
                                           facecolor="none"))
            ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
            ax.text(rx1, ry1 + 8, class_names[class_id], color="w", size=11, backgroundcolor="none")
            # mask is [N, h, w] (mask-head crops, one per ROI), as Matterport.
            full_mask = unmold_mask(np.asarray(mask)[roi_id], rois[roi_id][:4].astype(np.int32), masked.shape)
            masked = apply_mask(masked, full_mask, color)
    ax.imshow(masked.astype(np.uint8))
    positives = int(np.count_nonzero(class_ids[class_ids > 0]))
    print(f"Positive ROIs: {positives}")
    print(f"Negative ROIs: {int(np.count_nonzero(class_ids == 0))}")
    print(f"Positive Ratio: {positives / max(class_ids.shape[0], 1):.2f}")
    _show()


def draw_box(image, box, color):
    """Draw a 2-pixel box outline into `image` in place (no matplotlib). Returns `image`."""
    y1, x1, y2, x2 = (int(v) for v in box[:4])
    image[y1:y1 + 2, x1:x2] = color
    image[y2:y2 + 2, x1:x2] = color
    image[y1:y2, x1:x1 + 2] = color
    image[y1:y2, x2:x2 + 2] = color
    return image


def display_top_masks(image, mask, class_ids, class_names, limit=4):
    """Show the image and the union of masks of its `limit` classes with the largest mask area."""
    mask = np.asarray(mask)
    class_ids = np.asarray(class_ids)
    panels = [image]
    titles = [f"H x W={image.shape[0]}x{image.shape[1]}"]
    unique = np.unique(class_ids)
    areas = [np.sum(mask[:, :, class_ids == c]) for c in unique]
    top = [c for c, area in sorted(zip(unique, areas), key=lambda r: r[1], reverse=True) if area > 0]
    for i in range(limit):
        class_id = top[i] if i < len(top) else -1
        selected = mask[:, :, class_ids == class_id]
        # Number the instances 1..n so each shows in its own shade.
        panels.append(np.sum(selected * np.arange(1, selected.shape[-1] + 1), axis=-1))
        titles.append(class_names[class_id] if class_id != -1 else "-")
    display_images(panels, titles=titles, cols=limit + 1, cmap="Blues_r")


def plot_precision_recall(AP, precisions, recalls):
    """Plot the precision-recall curve of `compute_ap`'s output."""
    plt = _pyplot()
    _, ax = plt.subplots(1)
    ax.set_title(f"Precision-Recall Curve. AP@50 = {AP:.3f}")
    ax.set_ylim(0, 1.1)
    ax.set_xlim(0, 1.1)
    ax.plot(recalls, precisions)
    _show()


def plot_overlaps(gt_class_ids, pred_class_ids, pred_scores, overlaps, class_names, threshold=0.5):
    """Grid of IoUs between predictions (rows) and ground truth (columns), marking matches and wrong types."""
    plt = _pyplot()
    gt_class_ids = np.asarray(gt_class_ids)[np.asarray(gt_class_ids) != 0]
    pred_class_ids = np.asarray(pred_class_ids)[np.asarray(pred_class_ids) != 0]
    plt.figure(figsize=(12, 10))
    plt.imshow(overlaps, interpolation="nearest", cmap=plt.cm.Blues)
    plt.yticks(np.arange(len(pred_class_ids)),
               [f"{class_names[int(c)]} ({pred_scores[i]:.2f})" for i, c in enumerate(pred_class_ids)])
    plt.xticks(np.arange(len(gt_class_ids)), [class_names[int(c)] for c in gt_class_ids], rotation=90)
    limit = overlaps.max() if overlaps.size else 0
    for i, j in itertools.product(range(overlaps.shape[0]), range(overlaps.shape[1])):
        text = ""
        if overlaps[i, j] > threshold:
            text = "match" if gt_class_ids[j] == pred_class_ids[i] else "wrong"
        color = "white" if overlaps[i, j] > limit / 2 else ("grey" if overlaps[i, j] < threshold else "black")
        plt.text(j, i, f"{overlaps[i, j]:.3f}\n{text}", horizontalalignment="center",
                 verticalalignment="center", fontsize=9, color=color)
    plt.tight_layout()
    plt.xlabel("Ground Truth")
    plt.ylabel("Predictions")
    _show()


def draw_boxes(image, boxes=None, refined_boxes=None, masks=None, captions=None, visibilities=None, title="",
               ax=None):
    """Draw boxes (dashed), refined boxes (solid, linked to their boxes), masks and captions.

    `visibilities` per box: 0 skip, 1 faint, 2 full (default 2).
    """
    from matplotlib import lines, patches
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes needs boxes or refined_boxes")
    count = (boxes if boxes is not None else refined_boxes).shape[0]
    own_figure = ax is None
    if own_figure:
        _, ax = _pyplot().subplots(1, figsize=(12, 12))
    colors = random_colors(count)
    margin = image.shape[0] // 10
    ax.set_ylim(image.shape[0] + margin, -margin)
    ax.set_xlim(-margin, image.shape[1] + margin)
    ax.axis("off")
    ax.set_title(title)
    masked = np.asarray(image).astype(np.float64).copy()
    for i in range(count):
        visibility = visibilities[i] if visibilities is not None else 2
        if visibility == 0:
            continue
        color = "gray" if visibility == 1 else colors[i]
        style, alpha = ("dotted", 0.5) if visibility == 1 else ("dashed" if visibility == 2 else "solid", 1)
        if boxes is not None and np.any(boxes[i]):
            y1, x1, y2, x2 = boxes[i]
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=alpha, linestyle=style,
                                           edgecolor=color, facecolor="none"))
        if refined_boxes is not None and visibility > 0:
            ry1, rx1, ry2, rx2 = refined_boxes[i].astype(np.int32)
            ax.add_patch(patches.Rectangle((rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2, edgecolor=color,
                                           facecolor="none"))
            if boxes is not None:
                ax.add_line(lines.Line2D([boxes[i][1], rx1], [boxes[i][0], ry1], color=color))
        if captions is not None:
            y1, x1 = (refined_boxes if refined_boxes is not None else boxes)[i][:2]
            ax.text(x1, y1, captions[i], size=11, verticalalignment="top", color="w", backgroundcolor="none",
                    bbox={"facecolor": color, "alpha": 0.5, "pad": 2, "edgecolor": "none"})
        if masks is not None:
            masked = apply_mask(masked, np.asarray(masks)[:, :, i], color if isinstance(color, tuple) else
                                (0.5, 0.5, 0.5))
            for verts in _contours(np.asarray(masks)[:, :, i]):
                ax.add_patch(patches.Polygon(verts, facecolor="none", edgecolor=color))
    ax.imshow(masked.astype(np.uint8))
    if own_figure:
        _show()


def display_table(table):
    """Show rows of values as an HTML table in a notebook, or as aligned text elsewhere."""
    try:
        from IPython.display import HTML, display
        from IPython import get_ipython
        in_notebook = get_ipython() is not None
    except ImportError:
        in_notebook = False
    if in_notebook:
        html = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in table)
        display(HTML(f"<table>{html}</table>"))
        return
    widths = [max(len(str(row[k])) for row in table if k < len(row)) for k in range(max(map(len, table), default=0))]
    for row in table:
        print("  ".join(str(c).ljust(widths[k]) for k, c in enumerate(row)))


def display_weight_stats(model):
    """Table of each weight's shape, min, max and std, flagging likely dead or overflowing weights."""
    layers = model.get_trainable_layers() if hasattr(model, "get_trainable_layers") else model.layers
    table = [["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]]
    for layer in layers:
        for weight in layer.weights:
            values = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
            name = weight.path if hasattr(weight, "path") else weight.name
            alert = ""
            if values.min() == values.max() and not (values.min() == 0 and "bias" in name):
                alert += "*** dead?"
            if np.abs(values.min()) > 1000 or np.abs(values.max()) > 1000:
                alert += "*** Overflow?"
            table.append([name + alert, str(values.shape), f"{values.min():+9.4f}", f"{values.max():+10.4f}",
                          f"{values.std():+9.4f}"])
    display_table(table)
