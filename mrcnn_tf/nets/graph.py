"""Assemble the Mask R-CNN graph (training or inference) from backbone, FPN, RPN and heads.

Both builders return ``(inputs, outputs)`` per docs/architecture.md "Graph contract"; the caller
(`MaskRCNN.build`) wraps them in a model. Batch size is never baked in: every custom layer works on
the whole batch, so one model serves any number of images.
"""
import keras
import numpy as np
from keras import layers

from mrcnn_tf.errors import ConfigError
from mrcnn_tf.layers.anchors import Anchors
from mrcnn_tf.layers.detection import DetectionLayer
from mrcnn_tf.layers.detection_target import DetectionTargetLayer
from mrcnn_tf.layers.norm_boxes import NormBoxes
from mrcnn_tf.layers.positive_rois import PositiveROIs
from mrcnn_tf.layers.proposal import ProposalLayer
from mrcnn_tf.nets.fpn import fpn_graph
from mrcnn_tf.nets.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn_tf.nets.resnet import resnet_graph
from mrcnn_tf.nets.resnet_basic import resnet_basic_graph
from mrcnn_tf.nets.rpn import build_rpn_model

TRAINING_OUTPUTS = ("rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits", "mrcnn_class",
                    "mrcnn_bbox", "mrcnn_mask", "rpn_rois", "output_rois", "target_class_ids",
                    "target_bbox", "target_mask")
# Named backbones: Matterport's bottleneck ResNets, plus mrcnn_tf's basic-block ResNets for CPUs.
BACKBONE_GRAPHS = {"resnet50": resnet_graph, "resnet101": resnet_graph,
                   "resnet18": resnet_basic_graph, "resnet34": resnet_basic_graph}
INFERENCE_OUTPUTS = ("mrcnn_detection", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "rpn_rois",
                     "rpn_class", "rpn_bbox")
# With NUCLEUS_MASKS: the training dict gains these keys, the inference list an 8th output after Matterport's 7.
NUCLEUS_TRAINING_OUTPUTS = ("mrcnn_nucleus_mask", "target_nucleus_mask")
NUCLEUS_INFERENCE_OUTPUT = "mrcnn_nucleus_mask"


def training_output_names(config):
    """The keys of the training graph's output dict for `config`."""
    return TRAINING_OUTPUTS + (NUCLEUS_TRAINING_OUTPUTS if config.NUCLEUS_MASKS else ())


def inference_output_names(config):
    """The names of the inference graph's outputs, in order, for `config`."""
    return INFERENCE_OUTPUTS + ((NUCLEUS_INFERENCE_OUTPUT,) if config.NUCLEUS_MASKS else ())


def check_image_shape(config):
    """Raise ConfigError unless IMAGE_SHAPE's sides divide by 64 (the FPN halves them 6 times).

    Only "square" and "crop" fix the molded size; "pad64" pads every image to a multiple of 64 and
    "none" is checked per image when it is molded.
    """
    if config.IMAGE_RESIZE_MODE not in ("square", "crop"):
        return
    h, w = (int(v) for v in config.IMAGE_SHAPE[:2])
    if h % 64 or w % 64:
        raise ConfigError(f"IMAGE_SHAPE = {h}x{w}: image sides must be divisible by 64 "
                          "(set IMAGE_MAX_DIM / IMAGE_MIN_DIM to 256, 320, 384, 448, 512, ...)")


def image_input_shape(config):
    """[H, W, C] of the image input: static in "square" mode, where every molded image is IMAGE_SHAPE
    (convolutions can then choose by map size, e.g. run large maps in bands on a CPU: backend/band_conv.py),
    Matterport's [None, None, C] in the other modes, whose molded sizes vary."""
    channels = config.IMAGE_CHANNEL_COUNT
    if config.IMAGE_RESIZE_MODE == "square":
        return [int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1]), channels]
    return [None, None, channels]


def _image_inputs(config):
    input_image = keras.Input(shape=image_input_shape(config), name="input_image")
    input_image_meta = keras.Input(shape=[config.IMAGE_META_SIZE], name="input_image_meta")
    return input_image, input_image_meta


def _backbone_and_fpn(input_image, config):
    """Pyramid levels for the RPN ([P2..P6]) and for the heads ([P2..P5])."""
    if callable(config.BACKBONE):
        _, c2, c3, c4, c5 = config.BACKBONE(input_image, stage5=True, train_bn=config.TRAIN_BN)
    elif config.BACKBONE in BACKBONE_GRAPHS:
        _, c2, c3, c4, c5 = BACKBONE_GRAPHS[config.BACKBONE](input_image, config.BACKBONE, stage5=True,
                                                             train_bn=config.TRAIN_BN)
    else:
        raise ConfigError(f"Config.BACKBONE = {config.BACKBONE!r} is invalid: use one of "
                          f"{', '.join(BACKBONE_GRAPHS)} or a callable")
    p2, p3, p4, p5, p6 = fpn_graph(c2, c3, c4, c5, config.TOP_DOWN_PYRAMID_SIZE)
    return [p2, p3, p4, p5, p6], [p2, p3, p4, p5]


def _rpn(rpn_feature_maps, config):
    """Run the shared `rpn_model` on every level; concatenate to [B, A, 2], [B, A, 2], [B, A, 4]."""
    rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS), config.TOP_DOWN_PYRAMID_SIZE,
                          config.RPN_CONV_CHANNELS)
    per_level = [rpn([p]) for p in rpn_feature_maps]
    names = ("rpn_class_logits", "rpn_class", "rpn_bbox")
    # float32 under mixed precision: the proposal layer and the RPN losses read these.
    return [layers.Concatenate(axis=1, name=name, dtype="float32")([level[i] for level in per_level])
            for i, name in enumerate(names)]


def _proposals(rpn_class, rpn_bbox, anchors, proposal_count, config):
    return ProposalLayer(proposal_count=proposal_count, nms_threshold=config.RPN_NMS_THRESHOLD,
                         pre_nms_limit=config.PRE_NMS_LIMIT,
                         rpn_bbox_std_dev=[float(v) for v in np.asarray(config.RPN_BBOX_STD_DEV).reshape(-1)],
                         name="ROI")([rpn_class, rpn_bbox, anchors])


def build_training_graph(config):
    """Inputs and outputs of the training graph.

    Args:
        config: a validated `Config`.

    Returns:
        (inputs, outputs): inputs in Matterport's order [input_image, input_image_meta,
        input_rpn_match, input_rpn_bbox, input_gt_class_ids, input_gt_boxes (pixels), input_gt_masks]
        (+ input_roi, pixel boxes, when USE_RPN_ROIS is False; + input_gt_nucleus_masks, the layout of
        input_gt_masks, last, with NUCLEUS_MASKS); outputs a dict with the keys of `training_output_names`
        (shapes in docs/architecture.md; boxes normalized; with NUCLEUS_MASKS also mrcnn_nucleus_mask
        [B, S, 28, 28, 1] and target_nucleus_mask [B, S, 28, 28]).
    """
    check_image_shape(config)
    input_image, input_image_meta = _image_inputs(config)
    input_rpn_match = keras.Input(shape=[None, 1], name="input_rpn_match", dtype="int32")
    input_rpn_bbox = keras.Input(shape=[None, 4], name="input_rpn_bbox", dtype="float32")
    input_gt_class_ids = keras.Input(shape=[None], name="input_gt_class_ids", dtype="int32")
    input_gt_boxes = keras.Input(shape=[None, 4], name="input_gt_boxes", dtype="float32")
    # Full-size masks follow the image (any multiple of 64 in "pad64" / "none" modes).
    mask_hw = [int(v) for v in config.MINI_MASK_SHAPE] if config.USE_MINI_MASK else [None, None]
    input_gt_masks = keras.Input(shape=[*mask_hw, None], name="input_gt_masks", dtype="bool")
    inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox, input_gt_class_ids,
              input_gt_boxes, input_gt_masks]

    rpn_feature_maps, mrcnn_feature_maps = _backbone_and_fpn(input_image, config)
    # Anchors follow the actual image size, so the same model trains on any multiple of 64.
    anchors = Anchors(scales=list(config.RPN_ANCHOR_SCALES), ratios=list(config.RPN_ANCHOR_RATIOS),
                      feature_strides=list(config.BACKBONE_STRIDES), anchor_stride=config.RPN_ANCHOR_STRIDE,
                      name="anchors")(input_image)
    rpn_class_logits, rpn_class, rpn_bbox = _rpn(rpn_feature_maps, config)
    rpn_rois = _proposals(rpn_class, rpn_bbox, anchors, config.POST_NMS_ROIS_TRAINING, config)

    if config.USE_RPN_ROIS:
        target_rois = rpn_rois
    else:
        # Externally supplied ROIs (pixels), as Matterport's `input_roi` for debugging the heads.
        input_rois = keras.Input(shape=[config.POST_NMS_ROIS_TRAINING, 4], name="input_roi", dtype="float32")
        inputs.append(input_rois)
        target_rois = NormBoxes(name="norm_input_roi")([input_rois, input_image])
    gt_boxes = NormBoxes(name="norm_gt_boxes")([input_gt_boxes, input_image])
    target_inputs = [target_rois, input_gt_class_ids, gt_boxes, input_gt_masks]
    nucleus = bool(config.NUCLEUS_MASKS)
    if nucleus:
        # Each GT cell's nucleus, in the cell mask's layout (mini masks in the cell box's frame).
        input_gt_nucleus_masks = keras.Input(shape=[*mask_hw, None], name="input_gt_nucleus_masks", dtype="bool")
        inputs.append(input_gt_nucleus_masks)
        target_inputs.append(input_gt_nucleus_masks)
    rois, target_class_ids, target_bbox, target_mask, *target_nucleus = DetectionTargetLayer(
        train_rois_per_image=config.TRAIN_ROIS_PER_IMAGE, roi_positive_ratio=config.ROI_POSITIVE_RATIO,
        bbox_std_dev=[float(v) for v in np.asarray(config.BBOX_STD_DEV).reshape(-1)],
        mask_shape=[int(v) for v in config.MASK_SHAPE], use_mini_mask=bool(config.USE_MINI_MASK),
        nucleus_masks=nucleus, name="proposal_targets")(target_inputs)

    mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
        rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE)
    # Only positive ROIs carry a mask loss, and DetectionTargetLayer puts them in the first slots: the
    # costly mask head runs on as many slots as the batch has positives (at most int(T * ROI_POSITIVE_RATIO)),
    # not on all T ROIs as Matterport's did. Same loss; on few-cell smears a fraction of the work.
    positive_slots = int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)
    mask_rois, target_mask, *target_nucleus = PositiveROIs(max_slots=positive_slots, name="positive_rois")(
        [rois, target_class_ids, target_mask, *target_nucleus])
    mrcnn_mask = build_fpn_mask_graph(mask_rois, mrcnn_feature_maps, input_image_meta,
                                      config.MASK_POOL_SIZE, config.NUM_CLASSES, train_bn=config.TRAIN_BN,
                                      channels=config.MASK_HEAD_CHANNELS, nucleus=nucleus)
    mrcnn_nucleus = []
    if nucleus:
        mrcnn_mask, nucleus_mask = mrcnn_mask
        mrcnn_nucleus = [nucleus_mask]
    output_rois = layers.Identity(name="output_rois")(rois)

    values = (rpn_class_logits, rpn_class, rpn_bbox, mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask,
              rpn_rois, output_rois, target_class_ids, target_bbox, target_mask, *mrcnn_nucleus, *target_nucleus)
    return inputs, dict(zip(training_output_names(config), values))


def build_inference_graph(config):
    """Inputs and outputs of the inference graph.

    Args:
        config: a validated `Config`.

    Returns:
        (inputs, outputs): inputs [input_image, input_image_meta, input_anchors [B, A, 4] normalized];
        outputs a list in Matterport's order [mrcnn_detection [B, D, 6] (y1, x1, y2, x2 normalized,
        class_id, score; zero rows pad), mrcnn_class [B, R, NC], mrcnn_bbox [B, R, NC, 4],
        mrcnn_mask [B, D, 28, 28, NC], rpn_rois [B, R, 4], rpn_class [B, A, 2], rpn_bbox [B, A, 4]]
        with R = POST_NMS_ROIS_INFERENCE, D = DETECTION_MAX_INSTANCES; with NUCLEUS_MASKS an 8th,
        mrcnn_nucleus_mask [B, D, 28, 28, 1] (see `inference_output_names`).
    """
    check_image_shape(config)
    input_image, input_image_meta = _image_inputs(config)
    input_anchors = keras.Input(shape=[None, 4], name="input_anchors")
    inputs = [input_image, input_image_meta, input_anchors]

    rpn_feature_maps, mrcnn_feature_maps = _backbone_and_fpn(input_image, config)
    rpn_class_logits, rpn_class, rpn_bbox = _rpn(rpn_feature_maps, config)
    rpn_rois = _proposals(rpn_class, rpn_bbox, input_anchors, config.POST_NMS_ROIS_INFERENCE, config)

    _, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
        rpn_rois, mrcnn_feature_maps, input_image_meta, config.POOL_SIZE, config.NUM_CLASSES,
        train_bn=config.TRAIN_BN, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE)
    detections = DetectionLayer(
        bbox_std_dev=[float(v) for v in np.asarray(config.BBOX_STD_DEV).reshape(-1)],
        detection_min_confidence=float(config.DETECTION_MIN_CONFIDENCE),
        detection_max_instances=int(config.DETECTION_MAX_INSTANCES),
        detection_nms_threshold=float(config.DETECTION_NMS_THRESHOLD),
        class_agnostic_nms=bool(config.DETECTION_NMS_CLASS_AGNOSTIC),
        name="mrcnn_detection")([rpn_rois, mrcnn_class, mrcnn_bbox, input_image_meta])
    # The mask head runs on the final boxes only (faster and more accurate than on all proposals).
    detection_boxes = detections[..., :4]
    mrcnn_mask = build_fpn_mask_graph(detection_boxes, mrcnn_feature_maps, input_image_meta,
                                      config.MASK_POOL_SIZE, config.NUM_CLASSES, train_bn=config.TRAIN_BN,
                                      channels=config.MASK_HEAD_CHANNELS, nucleus=bool(config.NUCLEUS_MASKS))
    if config.NUCLEUS_MASKS:
        mrcnn_mask, nucleus_mask = mrcnn_mask
        return inputs, [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois, rpn_class, rpn_bbox, nucleus_mask]
    return inputs, [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois, rpn_class, rpn_bbox]
