"""Test helpers: write Keras-2 `save_weights` HDF5 files, including the exact `mask_rcnn_coco.h5` layout.

The COCO layout is generated from the naming rules of DESIGN §6 (not copied from the real file,
which the test machines cannot download): 233 weighted groups and 690 arrays for ResNet-101 with
81 classes, the nested `rpn_model` stored as one group of 6 arrays, TimeDistributed heads stored
under the wrapper's name, weightless layer names interleaved in `layer_names` as Keras 2 wrote them.
"""
import h5py
import numpy as np

STAGE_FILTERS = {2: (64, 64, 256), 3: (128, 128, 512), 4: (256, 256, 1024), 5: (512, 512, 2048)}
STAGE_BLOCKS = {"resnet50": {2: 3, 3: 4, 4: 6, 5: 3}, "resnet101": {2: 3, 3: 4, 4: 23, 5: 3}}
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def _conv(name, shape):
    return (name, [(f"{name}/kernel:0", shape), (f"{name}/bias:0", (shape[-1],))])


def _bn(name, channels):
    return (name, [(f"{name}/{w}:0", (channels,)) for w in BN_WEIGHTS])


def _weightless(name):
    return (name, [])


def backbone_layout(architecture="resnet101"):
    """[(layer name, [(weight name, shape)])] of Matterport's ResNet, in model order."""
    groups = [_weightless("input_image"), _weightless("zero_padding2d_1"), _conv("conv1", (7, 7, 3, 64)),
              _bn("bn_conv1", 64), _weightless("activation_1"), _weightless("max_pooling2d_1")]
    channels_in = 64
    for stage, blocks in STAGE_BLOCKS[architecture].items():
        f1, f2, f3 = STAGE_FILTERS[stage]
        for i in range(blocks):
            block = chr(ord("a") + i)
            conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
            cin = channels_in if i == 0 else f3
            groups += [_conv(conv + "2a", (1, 1, cin, f1)), _bn(bn + "2a", f1), _weightless(f"act_{conv}2a"),
                       _conv(conv + "2b", (3, 3, f1, f2)), _bn(bn + "2b", f2), _weightless(f"act_{conv}2b"),
                       _conv(conv + "2c", (1, 1, f2, f3))]
            if i == 0:
                groups += [_conv(conv + "1", (1, 1, cin, f3)), _bn(bn + "2c", f3), _bn(bn + "1", f3)]
            else:
                groups += [_bn(bn + "2c", f3)]
            groups += [_weightless(f"add_{stage}{block}"), _weightless(f"res{stage}{block}_out")]
        channels_in = f3
    return groups


def coco_layout(num_classes=81, architecture="resnet101", pool_size=7, fc_size=1024, pyramid=256):
    """[(layer name, [(weight name, shape)])] of Matterport's training model saved with save_weights."""
    groups = backbone_layout(architecture)
    groups += [_conv("fpn_c5p5", (1, 1, 2048, pyramid)), _weightless("fpn_p5upsampled"),
               _conv("fpn_c4p4", (1, 1, 1024, pyramid)), _weightless("fpn_p4add"), _weightless("fpn_p4upsampled"),
               _conv("fpn_c3p3", (1, 1, 512, pyramid)), _weightless("fpn_p3add"), _weightless("fpn_p3upsampled"),
               _conv("fpn_c2p2", (1, 1, 256, pyramid)), _weightless("fpn_p2add")]
    groups += [_conv(f"fpn_p{level}", (3, 3, pyramid, pyramid)) for level in (2, 3, 4, 5)]
    groups += [_weightless("fpn_p6"), _weightless("input_anchors")]
    # The nested RPN model: ONE group, weights named after its inner layers.
    rpn = [w for name, shape in (("rpn_conv_shared", (3, 3, pyramid, 512)), ("rpn_class_raw", (1, 1, 512, 6)),
                                 ("rpn_bbox_pred", (1, 1, 512, 12)))
           for w in _conv(name, shape)[1]]
    groups += [("rpn_model", rpn), _weightless("rpn_class_logits"), _weightless("rpn_class"),
               _weightless("rpn_bbox"), _weightless("ROI"), _weightless("roi_align_classifier")]
    groups += [_conv("mrcnn_class_conv1", (pool_size, pool_size, pyramid, fc_size)), _bn("mrcnn_class_bn1", fc_size),
               _weightless("activation_class1"),
               _conv("mrcnn_class_conv2", (1, 1, fc_size, fc_size)), _bn("mrcnn_class_bn2", fc_size),
               _weightless("pool_squeeze"),
               _conv("mrcnn_class_logits", (fc_size, num_classes)), _weightless("mrcnn_class"),
               _conv("mrcnn_bbox_fc", (fc_size, num_classes * 4)), _weightless("mrcnn_bbox"),
               _weightless("roi_align_mask")]
    for i in (1, 2, 3, 4):
        groups += [_conv(f"mrcnn_mask_conv{i}", (3, 3, pyramid, pyramid)), _bn(f"mrcnn_mask_bn{i}", pyramid),
                   _weightless(f"mrcnn_mask_act{i}")]
    groups += [_conv("mrcnn_mask_deconv", (2, 2, pyramid, pyramid)), _conv("mrcnn_mask", (1, 1, pyramid, num_classes))]
    return groups


def seeded_values(layout, seed=0):
    """{layer name: [array]} with seeded float32 values (moving variances positive)."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, weights in layout:
        if not weights:
            continue
        arrays = []
        for weight_name, shape in weights:
            array = rng.random(shape, dtype=np.float32) - np.float32(0.5)
            if "moving_variance" in weight_name:
                array = array + np.float32(1.0)
            arrays.append(array)
        values[name] = arrays
    return values


def write_keras2_h5(path, layout, values, chunk_layer_names=False):
    """Write `layout` ([(layer, [(weight name, shape)])]) as Keras-2 `save_weights` does.

    Root attributes `layer_names`, `backend`, `keras_version`; one group per layer with attribute
    `weight_names`; each array stored under `<layer>/<weight name>` (so `<layer>/<layer>/kernel:0`).
    `chunk_layer_names` splits `layer_names` into `layer_names0, layer_names1` as Keras 2 did for
    attributes over 64 KB.
    """
    names = np.array([name.encode("utf8") for name, _ in layout])
    with h5py.File(path, "w") as f:
        if chunk_layer_names:
            half = len(names) // 2
            f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:half], names[half:]
        else:
            f.attrs["layer_names"] = names
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.0.8"
        for name, weights in layout:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w, _ in weights])
            for (weight_name, shape), array in zip(weights, values.get(name, [])):
                assert array.shape == tuple(shape), (name, weight_name)
                group.create_dataset(weight_name, data=array)
    return path


def write_coco_h5(path, num_classes=81, architecture="resnet101", seed=0):
    """Write a file with the exact `mask_rcnn_coco.h5` layout and seeded values; returns {layer: [arrays]}."""
    layout = coco_layout(num_classes, architecture)
    values = seeded_values(layout, seed)
    write_keras2_h5(path, layout, values)
    return values
