"""ImageNet start for the backbone: `keras.applications` ResNet50/101 weights on Matterport's names.

Matterport started from Keras' old ResNet-50 h5, whose layer names (`res2a_branch2a`) are its
own, and had no ResNet-101 ImageNet weights (res4g..res4w stayed random). Today's
`keras.applications` ResNet50 / ResNet101 name the same layers `conv2_block1_1_conv` ...; mapping
those names gives a complete ResNet-101 ImageNet start.

The two networks are the same function up to two details:
- BatchNorm epsilon: keras.applications 1.001e-5, Matterport (Keras default) 1e-3. With the raw
  weights a channel with a small moving variance would be scaled differently, so gamma is
  rescaled by sqrt((var + 1e-3) / (var + 1.001e-5)) ("epsilon folding"). With frozen BatchNorm
  (TRAIN_BN False, Matterport's default) the outputs are then identical; with TRAIN_BN True batch
  statistics replace the moving ones and the folded gamma is a start point within that factor.
- Max-pool after conv1: keras.applications pads 1 pixel on every side, Matterport uses "same"
  padding, which pads only bottom/right when conv1's output side is even (every image side that
  is a multiple of 64). The pooling windows then sit one pixel apart, so the features differ
  slightly near every position although the weights are the same (odd sides give identical
  features; tests/test_weights_imagenet.py checks both).
Both networks put the stride of a stage's first block on its first 1x1 convolution.
"""
import os
import pathlib

import numpy as np

from mrcnn_tf.errors import WeightsError
from mrcnn_tf.weights.matterport_h5 import (assign, check_file, download_file, keras2_groups, legacy_weights,
                                            load_weights, plan_arrays, read_plan, weights_dirs, _open_h5)

KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# File name and md5 of the no-top h5 files, as keras.applications' resnet.py lists them.
IMAGENET_FILES = {
    "resnet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", "88cf7a10940856eca736dc7b7e228a21"),
}
# The old Keras ResNet-50 file Matterport used (same file name, Matterport's layer names).
MATTERPORT_RESNET50_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/v0.2/"
                           "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
MATTERPORT_RESNET50_MD5 = "a268eb855778b3df3c7506639542a6af"
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
STAGE_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def keras_applications_name_map(architecture="resnet101"):
    """{keras.applications layer name: Matterport layer name} for a ResNet backbone.

    conv1_conv -> conv1, conv1_bn -> bn_conv1, conv{S}_block{k}_{1,2,3}_conv -> res{S}{letter}_branch2{a,b,c},
    conv{S}_block1_0_conv -> res{S}a_branch1, and the same with _bn -> bn{S}{letter}_branch...
    """
    _check_architecture(architecture)
    names = {"conv1_conv": "conv1", "conv1_bn": "bn_conv1"}
    for stage, blocks in zip((2, 3, 4, 5), STAGE_BLOCKS[architecture]):
        for k in range(1, blocks + 1):
            letter = chr(ord("a") + k - 1)
            branches = [(1, "2a"), (2, "2b"), (3, "2c")] + ([(0, "1")] if k == 1 else [])
            for j, branch in branches:
                names[f"conv{stage}_block{k}_{j}_conv"] = f"res{stage}{letter}_branch{branch}"
                names[f"conv{stage}_block{k}_{j}_bn"] = f"bn{stage}{letter}_branch{branch}"
    return names


def _check_architecture(architecture):
    if architecture not in STAGE_BLOCKS:
        raise WeightsError(f"no ImageNet weights for BACKBONE={architecture!r}: use resnet50 or resnet101")


def keras_cache_dir():
    """keras.applications' download cache: $KERAS_HOME/models or ~/.keras/models."""
    return pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras")).expanduser() / "models"


def get_imagenet_weights(architecture="resnet101", verbose=1, download=True):
    """Path of a checked keras.applications no-top ImageNet h5 for `architecture`.

    Looks in `weights_dirs()` and keras' cache (for resnet50 the old Matterport file, which has
    the same name, is accepted too); otherwise downloads into keras' cache.

    Raises:
        WeightsError: wrong md5, or missing with no network (names the URL and where to put it).
    """
    _check_architecture(architecture)
    name, md5 = IMAGENET_FILES[architecture]
    url = KERAS_APPLICATIONS_URL + name
    accepted = (md5, MATTERPORT_RESNET50_MD5) if architecture == "resnet50" else (md5,)
    for folder in weights_dirs() + [keras_cache_dir()]:
        if (folder / name).is_file():
            return check_file(folder / name, md5=accepted, url=url)
    dest = keras_cache_dir() / name
    if not download:
        raise WeightsError(f"{name} not found: download {url} and put it at {dest} (or in weights/)")
    return download_file(url, dest, md5=md5, verbose=verbose)


def _source_groups(source):
    """([(layer name, [ndarray])], {layer name: BN epsilon}, label) from a keras.Model or an h5 path."""
    if hasattr(source, "layers"):
        groups = [(layer.name, [np.asarray(v) for v in legacy_weights(layer)]) for layer in source.layers
                  if layer.weights]
        eps = {layer.name: float(layer.epsilon) for layer in source.layers if hasattr(layer, "epsilon")}
        return groups, eps, f"keras model {source.name}"
    path = pathlib.Path(source)
    if not path.is_file():
        raise WeightsError(f"ImageNet weights file {path} not found: run get_imagenet_weights() or give the path")
    with _open_h5(path) as f:
        root = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
        try:
            groups = [(name, [np.asarray(d) for d in data]) for name, data in keras2_groups(root)]
        except (OSError, KeyError) as err:
            raise WeightsError(f"{path} is truncated or damaged ({err}): download it again") from err
    eps = {name: KERAS_APPLICATIONS_BN_EPSILON for name, _ in groups}
    return groups, eps, str(path)


def imagenet_weights_to_backbone(keras_model, source_model_or_path=None, architecture="resnet101", exclude=None,
                                 fold_bn_epsilon=True, verbose=1):
    """Initialise the Matterport-named ResNet of `keras_model` from ImageNet weights.

    Args:
        keras_model: model holding Matterport's backbone names (conv1, bn_conv1, res2a_branch2a, ...).
        source_model_or_path: a keras.applications ResNet50/ResNet101 model, the path of its no-top
            h5 file, or the path of the old Matterport-named Keras ResNet-50 h5; None looks the
            file up with `get_imagenet_weights(architecture)`.
        architecture: the backbone ("resnet50" / "resnet101"); picks the file when none is given.
        exclude: layer names (Matterport names) to leave alone, e.g. ["conv1"] for grey images.
        fold_bn_epsilon: rescale gamma for the BatchNorm epsilon difference (see module doc).
        verbose: 1 prints the report.

    Returns:
        `LoadReport`; non-backbone layers are listed as absent from the file.
    """
    _check_architecture(architecture)
    source = source_model_or_path if source_model_or_path is not None else get_imagenet_weights(architecture)
    groups, source_eps, label = _source_groups(source)
    names = {name for name, _ in groups}
    if "res2a_branch2a" in names and not hasattr(source, "layers"):
        report = load_weights(keras_model, source, by_name=True, exclude=exclude, verbose=0)
    elif "res2a_branch2a" in names or "conv2_block1_1_conv" in names:
        report = _load_mapped(keras_model, groups, source_eps, label, exclude, fold_bn_epsilon)
    else:
        raise WeightsError(f"{label} is not a ResNet ImageNet weight file (no conv2_block1_1_conv or "
                           "res2a_branch2a layer): give a keras.applications ResNet50/101 no-top file")
    model_names = {layer.name for layer in keras_model.layers}
    if "res4g_branch2a" in model_names and "res4g_branch2a" in report.absent_in_file:
        report.notes.append("ResNet-50 weights on a ResNet-101 backbone: res4g..res4w keep their initial values")
    if verbose:
        print(report)
    return report


def _load_mapped(keras_model, groups, source_eps, label, exclude, fold_bn_epsilon):
    name_map = keras_applications_name_map("resnet101")  # covers ResNet-50 names too
    model_names = {layer.name for layer in keras_model.layers}
    mapped, folded, target_eps = [], 0, None
    for name, arrays in groups:
        target = name_map.get(name, name)
        if fold_bn_epsilon and len(arrays) == 4 and target in model_names:
            target_eps = float(getattr(keras_model.get_layer(target), "epsilon", source_eps.get(name, 0.0)))
            if target_eps != source_eps.get(name, target_eps):
                arrays = fold_epsilon(arrays, source_eps[name], target_eps)
                folded += 1
        mapped.append((target, arrays))
    report, plan = plan_arrays(keras_model, mapped, label, "keras.applications ResNet", True, set(exclude or ()))
    if folded:
        report.notes.append(f"BatchNorm epsilon {KERAS_APPLICATIONS_BN_EPSILON:g} -> {target_eps:g}: gamma of "
                            f"{folded} layers rescaled so frozen-BN outputs match the source network")
    assign(read_plan(report, plan))
    return report


def fold_epsilon(bn_arrays, source_epsilon, target_epsilon):
    """[gamma, beta, mean, var] with gamma rescaled so that a BN with `target_epsilon` computes what
    the source BN with `source_epsilon` computed (with moving statistics)."""
    gamma, beta, mean, var = (np.asarray(a) for a in bn_arrays)
    var64 = var.astype(np.float64)
    scale = np.sqrt((var64 + target_epsilon) / (var64 + source_epsilon))
    return [(gamma.astype(np.float64) * scale).astype(gamma.dtype), beta, mean, var]


def load_imagenet_weights(keras_model, config, source=None, verbose=1):
    """`--weights imagenet`: ImageNet start for config.BACKBONE (conv1 excluded for non-RGB input)."""
    if callable(config.BACKBONE):
        raise WeightsError("--weights imagenet needs BACKBONE resnet50 or resnet101, not a custom callable: "
                           "use --weights none or a weight file")
    exclude = ["conv1"] if getattr(config, "IMAGE_CHANNEL_COUNT", 3) != 3 else []
    return imagenet_weights_to_backbone(keras_model, source, config.BACKBONE, exclude=exclude, verbose=verbose)
