"""Weight files: Matterport's Keras-2 h5 (by name, with `exclude`), our own checkpoints, COCO download.

Keras 3 can still read a Keras-2 `save_weights` file by name, but without `exclude` and without
telling what it skipped. This loader reads the file with h5py, plans every assignment, checks
every shape, and only then assigns: a file that does not fit raises a one-line `WeightsError`
and leaves the model untouched. It never unpickles anything; `.keras` archives are read for their
weights only (their config is never deserialized).

File layouts (weights/README.md):
- Keras-2 h5: root attribute `layer_names`; one group per layer with attribute `weight_names`;
  a nested model (`rpn_model`) is one group holding its inner layers' weights; a TimeDistributed
  layer stores its inner weights under the wrapper's name. Per layer: trainable then
  non-trainable weights (kernel, bias / gamma, beta, moving_mean, moving_variance).
- Keras-3 `.weights.h5` (our checkpoints): `layers/<key>/vars/<i>` with the layer name in the
  `name` attribute of each `vars` group; nested layers below their parent's key.
"""
import dataclasses
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

import h5py
import numpy as np

from mrcnn_tf.errors import WeightsError

COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
COCO_WEIGHTS_NAME = "mask_rcnn_coco.h5"
COCO_WEIGHTS_SIZE = 257557808
# md5 of the v2.0 release file as published by NVIDIA's TensorRT sampleUffMaskRCNN README and by
# alibaba/ai-matrix's checksum.md5 (two independent sources; no sha256 is published).
COCO_WEIGHTS_MD5 = "e98aaff6f99e307b5e2a8a3ff741a518"
COCO_NUM_CLASSES = 81
# Layers whose shapes depend on NUM_CLASSES (plus the weightless mrcnn_bbox, as Matterport lists it).
COCO_CLASS_SPECIFIC = ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask")
WEIGHTS_DIR_ENV = "MRCNN_WEIGHTS_DIR"
DOWNLOAD_TIMEOUT = 20  # seconds without data before a download gives up
_SHOW = 8  # names shown per list in messages


@dataclasses.dataclass
class LoadReport:
    """What a weight load did, layer by layer (top-level layer names of the model / groups of the file).

    Attributes:
        filepath: the file read (or a description of the source).
        source_format: "keras2-h5", "keras3" or "arrays".
        loaded: layers whose every weight was assigned.
        excluded: weighted layers skipped because `exclude` named them.
        absent_in_file: weighted model layers the file has no weights for (they keep their values).
        absent_in_model: weighted file groups with no layer of that name in the model.
        mismatched: "name: file shapes vs model shapes" for layers that did not fit (empty after a
            successful load: a mismatch is an error unless excluded).
        notes: anything else the user should know (automatic exclusions, BN epsilon folding...).
        file_num_classes: the file's class count, read from mrcnn_class_logits when it does not fit.
    """

    filepath: str
    source_format: str
    loaded: list = dataclasses.field(default_factory=list)
    excluded: list = dataclasses.field(default_factory=list)
    absent_in_file: list = dataclasses.field(default_factory=list)
    absent_in_model: list = dataclasses.field(default_factory=list)
    mismatched: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    file_num_classes: int = None  # set when mrcnn_class_logits does not fit: the file's NUM_CLASSES

    def __str__(self):
        lines = [f"Weights from {self.filepath} ({self.source_format}): loaded {len(self.loaded)} layers, "
                 f"excluded {len(self.excluded)}, absent from the file {len(self.absent_in_file)}, "
                 f"absent from the model {len(self.absent_in_model)}, shape mismatch {len(self.mismatched)}"]
        for label, names in (("excluded", self.excluded), ("absent from the file", self.absent_in_file),
                             ("absent from the model", self.absent_in_model), ("shape mismatch", self.mismatched)):
            if names:
                lines.append(f"  {label}: {_short(names)}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _short(names, limit=_SHOW):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ---------------------------------------------------------------------------- loading
def load_weights(keras_model, filepath, by_name=False, exclude=None, verbose=1):
    """Load a Keras-2 h5 (Matterport), a Keras-3 `.weights.h5` or a `.keras` file into `keras_model`.

    Args:
        keras_model: a built keras.Model with Matterport's layer names.
        filepath: path of the weight file.
        by_name: match file groups to model layers by name (Matterport's way of loading COCO
            weights). False on a Keras-2 file pairs weighted layers in order (Keras' topological
            load) unless file and model hold exactly the same layer names, where it matches names,
            which gives the same result and survives a different layer order. False on a Keras-3
            file matches the file's structure (Keras' own rule).
        exclude: layer names not to load (implies by_name, as in Matterport); those layers keep
            their current values.
        verbose: 1 prints the report's summary.

    Returns:
        `LoadReport`.

    Raises:
        WeightsError: missing / non-HDF5 / truncated file, or layers whose shapes do not fit and
            are not excluded (then nothing at all has been assigned).
    """
    path = pathlib.Path(filepath)
    exclude = set(exclude or ())
    by_name = bool(by_name or exclude)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found: check the path (or use --weights coco|imagenet|last)")
    if zipfile.is_zipfile(path):
        report, pairs = _read_keras_archive(keras_model, path, by_name, exclude)
    else:
        with _open_h5(path) as f:
            report, plan = _plan_h5(keras_model, f, path, by_name, exclude)
            _note_unknown_excludes(keras_model, report, exclude)
            pairs = read_plan(report, plan)
    assign(pairs)
    if verbose:
        print(report)
    return report


def check_weights_file(filepath):
    """Raise `WeightsError` unless `filepath` is a readable HDF5 or ``.keras`` file; no model needed.

    For refusing a missing, non-HDF5 or truncated file before building a model (minutes on a CPU),
    with the messages `load_weights` gives. Returns the path.
    """
    path = pathlib.Path(filepath)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found: check the path (or use --weights coco|imagenet|last)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise WeightsError(f"{path} is a zip archive without model.weights.h5: give a .keras model file")
        return path
    with _open_h5(path):
        return path


def _open_h5(path):
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path} is not an HDF5 weight file: give a Keras .h5 / .weights.h5 / .keras file "
                           "(pickled checkpoints such as .pkl/.pth are never read)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise WeightsError(f"{path} is truncated or damaged ({path.stat().st_size:,} bytes; "
                           f"{_reason(err)}): download or copy it again") from err


def _reason(err):
    text = str(err).strip("'\"")
    return text.split("(")[-1].rstrip(")") if "(" in text else text


def _plan_h5(keras_model, f, path, by_name, exclude):
    root = f
    if "layer_names" not in f.attrs and "layer_names0" not in f.attrs and "model_weights" in f:
        root = f["model_weights"]  # a Keras-2 full-model save keeps the weights one level down
    try:
        if "layer_names" in root.attrs or "layer_names0" in root.attrs:
            groups = keras2_groups(root)
            return plan_arrays(keras_model, groups, str(path), "keras2-h5", by_name, exclude)
        if "layers" in root or "vars" in root:
            return _plan_keras3(keras_model, root, str(path), by_name, exclude)
    except (OSError, KeyError) as err:
        raise WeightsError(f"{path} is truncated or damaged ({_reason(err)}): download or copy it again") from err
    raise WeightsError(f"{path} holds no Keras weights (no layer_names attribute, no layers group): "
                       "give a file written by Keras save_weights or by mrcnn-tf train")


def _read_keras_archive(keras_model, path, by_name, exclude):
    # Only the weights file inside the archive is read: nothing from config.json is deserialized.
    with zipfile.ZipFile(path) as archive:
        if "model.weights.h5" not in archive.namelist():
            raise WeightsError(f"{path} is a zip archive without model.weights.h5: give a .keras model file")
        with archive.open("model.weights.h5") as member, h5py.File(member, "r") as f:
            report, plan = _plan_keras3(keras_model, f, str(path), by_name, exclude)
            _note_unknown_excludes(keras_model, report, exclude)
            return report, read_plan(report, plan)


def plan_arrays(keras_model, groups, label, source_format, by_name, exclude):
    """Plan assigning named weight lists to the top-level layers of `keras_model`.

    Args:
        keras_model: the target model.
        groups: [(layer name, [array-like])] in file order, weightless groups allowed.
        label: file name or description, for messages.
        source_format: stored in the report.
        by_name, exclude: as `load_weights`.

    Returns:
        (LoadReport, plan): plan is [(variable, array-like)]; nothing is assigned yet.
    """
    report = LoadReport(label, source_format)
    file_groups = [(name, arrays) for name, arrays in groups if len(arrays)]
    model_layers = [(layer.name, legacy_weights(layer)) for layer in keras_model.layers if layer.weights]
    file_names = {name for name, _ in file_groups}
    if not by_name and file_names != {name for name, _ in model_layers}:
        return _plan_topological(report, model_layers, file_groups)
    file_index = dict(file_groups)
    model_names = set()
    plan = []
    for name, variables in model_layers:
        model_names.add(name)
        if name in exclude:
            report.excluded.append(name)
        elif name not in file_index:
            report.absent_in_file.append(name)
        elif _fits(report, name, file_index[name], variables):
            report.loaded.append(name)
            plan += list(zip(variables, file_index[name]))
    for name, _ in file_groups:
        if name in exclude and name not in model_names:
            report.excluded.append(name)
        elif name not in model_names:
            report.absent_in_model.append(name)
    return report, plan


def _plan_topological(report, model_layers, file_groups):
    if len(model_layers) != len(file_groups):
        raise WeightsError(f"{report.filepath} holds {len(file_groups)} weighted layers, the model has "
                           f"{len(model_layers)}: load it with by_name=True (and exclude= for layers that differ)")
    plan = []
    for (name, variables), (file_name, arrays) in zip(model_layers, file_groups):
        if _fits(report, name, arrays, variables):
            report.loaded.append(name)
            plan += list(zip(variables, arrays))
        if file_name != name:
            report.notes.append(f"by order: file layer {file_name} loaded into {name}")
    if report.mismatched:
        raise WeightsError(f"{report.filepath}: paired by order, {len(report.mismatched)} layer(s) do not fit "
                           f"({'; '.join(report.mismatched[:2])}): load it with by_name=True")
    report.notes = report.notes[:_SHOW]
    return report, plan


def _fits(report, name, arrays, variables):
    """Compare shape lists (items may be (sub path, array) pairs); record a mismatch."""
    file_shapes = [_shape_text(a) for a in arrays]
    model_shapes = [_shape_text(v) for v in variables]
    if file_shapes == model_shapes:
        return True
    report.mismatched.append(f"{name}: file [{' '.join(file_shapes)}] vs model [{' '.join(model_shapes)}]")
    if name == "mrcnn_class_logits" and arrays:
        # Dense kernel [fc_size, num_classes]: the class count the file was trained for.
        first = arrays[0][1] if isinstance(arrays[0], tuple) else arrays[0]
        report.file_num_classes = int(first.shape[-1]) if len(first.shape) else None
    return False


def _shape_text(item):
    if isinstance(item, tuple):
        path, item = item
        return (path + ":" if path else "") + _shape_text(item)
    return "x".join(map(str, item.shape)) or "()"


def _plan_keras3(keras_model, root, label, by_name, exclude):
    """Plan a Keras-3 weights file: top-level layers matched by name (by key if not by_name),
    their sub-layers (TimeDistributed inner layer, nested model layers) by key."""
    report = LoadReport(label, "keras3")
    file_layers = _keras3_file_layout(root)
    model_layers = _keras3_model_layout(keras_model)
    file_by_name = {name: key for key, (name, _) in file_layers.items()}
    matched, plan = set(), []
    for key, (name, variables) in model_layers.items():
        if not any(variables.values()):
            continue
        file_key = file_by_name.get(name) if by_name else (key if key in file_layers else None)
        matched.add(file_key)
        if name in exclude:
            report.excluded.append(name)
            continue
        if file_key is None:
            report.absent_in_file.append(name)
            continue
        file_name, arrays = file_layers[file_key]
        if file_name != name:
            report.notes.append(f"by structure: file layer {file_name} loaded into {name}")
        paths = sorted(set(variables) | set(arrays))
        flat_arrays = [a for p in paths for a in arrays.get(p, [])]
        flat_vars = [v for p in paths for v in variables.get(p, [])]
        # Shapes tagged with their sub-path, so weights stored under another sub-layer never fit.
        if _fits(report, name, [(p, a) for p in paths for a in arrays.get(p, [])],
                 [(p, v) for p in paths for v in variables.get(p, [])]):
            report.loaded.append(name)
            plan += list(zip(flat_vars, flat_arrays))
    for key, (name, arrays) in file_layers.items():
        if key not in matched and any(arrays.values()):
            (report.excluded if name in exclude else report.absent_in_model).append(name)
    return report, plan


def _keras3_file_layout(root):
    """{"layers/<key>": (layer name, {sub path: [datasets in index order]})} of a Keras-3 file."""
    found = {}

    def visit(path, obj):
        if isinstance(obj, h5py.Group) and path.split("/")[-1] == "vars" and path.startswith("layers/"):
            parts = path.split("/")[:-1]
            top, sub = "/".join(parts[:2]), "/".join(parts[2:])
            entry = found.setdefault(top, [top.split("/")[1], {}])
            if not sub:
                entry[0] = _text(obj.attrs.get("name", entry[0]))
            entry[1][sub] = [obj[k] for k in sorted(obj, key=int)]

    root.visititems(visit)
    return {top: (name, arrays) for top, (name, arrays) in found.items()}


def _keras3_model_layout(keras_model):
    """Same structure as `_keras3_file_layout`, with the model's variables, from Keras' own save walk.

    Keras 3 names file entries after layer classes (`layers/conv2d_3`); recording the walk that
    `save_weights` does (with a store that keeps the variables instead of writing them) gives the
    exact key of every variable without writing a file.
    """
    from mrcnn_tf.backend.compat import private

    saving_lib = private("saving_lib")

    class _Recorder(saving_lib.H5IOStore):
        def __init__(self):  # no file behind this store
            self.entries, self._current = {}, None

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self._current = self.entries.setdefault(path, ((metadata or {}).get("name"), {}))[1]
            return self

        def __setitem__(self, key, value):
            self._current[key] = value

    recorder = _Recorder()
    saving_lib._save_state(keras_model, recorder, None, "", set())
    layout = {}
    for path, (name, store) in recorder.entries.items():
        parts = path.split("/")
        if parts[0] != "layers" or len(parts) < 2:
            continue  # the model's own entry and the optimizer state are not layer weights
        top, sub = "/".join(parts[:2]), "/".join(parts[2:])
        entry = layout.setdefault(top, [None, {}])
        if not sub:
            entry[0] = name
        entry[1][sub] = [store[k] for k in sorted(store, key=int)]
    return {top: (name, variables) for top, (name, variables) in layout.items()}


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _attr_list(group, name):
    """A list attribute, also when Keras 2 split it into name0, name1, ... (attributes over 64 KB)."""
    if name in group.attrs:
        return [_text(v) for v in group.attrs[name]]
    values, i = [], 0
    while f"{name}{i}" in group.attrs:
        values += [_text(v) for v in group.attrs[f"{name}{i}"]]
        i += 1
    return values


def keras2_groups(root):
    """[(layer name, [h5py datasets])] of a Keras-2 weights group, in file order."""
    return [(name, [root[name][w] for w in _attr_list(root[name], "weight_names")])
            for name in _attr_list(root, "layer_names")]


def legacy_weights(layer):
    """A layer's variables in Keras-2 file order: trainable, then non-trainable (Keras' own rule)."""
    return layer.trainable_weights + layer.non_trainable_weights


def _note_unknown_excludes(keras_model, report, exclude):
    known = {layer.name for layer in keras_model.layers} | set(report.excluded) | set(report.absent_in_model)
    unknown = sorted(set(exclude) - known)
    if unknown:
        report.notes.append(f"exclude names matching no layer: {', '.join(unknown)}")


def read_plan(report, plan):
    """Check the plan and read every array into memory: [(variable, ndarray)].

    Reading everything before assigning anything means a misfit or a damaged file raises with
    the model untouched.
    """
    if report.mismatched:
        names = [m.split(":")[0] for m in report.mismatched]
        error = WeightsError(
            f"{report.filepath}: {len(names)} layer(s) do not fit this model ({'; '.join(report.mismatched[:3])}"
            f"{'; ...' if len(names) > 3 else ''}); the file was made for another class count or backbone: "
            f"load with by_name=True, exclude={names[:_SHOW]!r} (COCO: exclude=coco_exclude_for(config))")
        error.report = report  # callers (the CLI) word the fix for their own options
        raise error
    if not plan:
        raise WeightsError(f"{report.filepath}: no layer of the file matches this model's layer names "
                           f"(file has {_short(report.absent_in_model, 4) or 'no weights'}): is it a Mask R-CNN "
                           "or ResNet weight file?")
    try:
        return [(variable, np.asarray(array)) for variable, array in plan]
    except (OSError, KeyError) as err:
        raise WeightsError(f"{report.filepath} is truncated or damaged ({_reason(err)}): "
                           "download or copy it again") from err


def assign(pairs):
    """Assign [(variable, ndarray)], casting to each variable's dtype."""
    for variable, value in pairs:
        variable.assign(value.astype(variable.dtype, copy=False))


# ---------------------------------------------------------------------------- COCO file
def weights_dirs():
    """Folders searched for weight files: $MRCNN_WEIGHTS_DIR, ./weights, the repository's weights/, ."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(pathlib.Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs += [pathlib.Path.cwd() / "weights", pathlib.Path(__file__).resolve().parents[2] / "weights",
             pathlib.Path.cwd()]
    unique = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def find_coco_weights():
    """Path of the first `mask_rcnn_coco.h5` in `weights_dirs()`, or None."""
    for folder in weights_dirs():
        candidate = folder / COCO_WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    return None


def check_file(path, size=None, md5=None, url=None):
    """Raise WeightsError unless `path` has the expected size and md5 (each checked when given)."""
    path = pathlib.Path(path)
    where = f" from {url}" if url else ""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise WeightsError(f"{path} is {actual:,} bytes, expected {size:,} (interrupted download or another "
                           f"file): delete it and download it again{where}")
    if md5 is not None:
        digest = _md5(path)
        if digest not in ((md5,) if isinstance(md5, str) else tuple(md5)):
            raise WeightsError(f"{path} has md5 {digest}, expected {md5}: delete it and download it again{where}")
    return path


def _md5(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url, dest, size=None, md5=None, verbose=1, timeout=DOWNLOAD_TIMEOUT):
    """Download `url` to `dest` through a temporary file and a rename; never leaves a partial file.

    Raises:
        WeightsError naming the URL and `dest` when there is no network or the download fails.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name + ".", suffix=".part", delete=False)
    try:
        if verbose:
            print(f"Downloading {url} to {dest} ...")
        try:
            with tmp, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, tmp, 1 << 20)
        except (urllib.error.URLError, OSError) as err:
            raise WeightsError(f"cannot download {url} ({getattr(err, 'reason', err)}): without a network, fetch it "
                               f"elsewhere and put it at {dest} (or in ${WEIGHTS_DIR_ENV})") from err
        check_file(tmp.name, size, md5, url)
        os.replace(tmp.name, dest)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
    if verbose:
        print(f"... saved {dest}")
    return dest


def download_trained_weights(coco_model_path, verbose=1):
    """Download Matterport's COCO weights to `coco_model_path` (Matterport's `utils` function)."""
    return download_file(COCO_MODEL_URL, coco_model_path, COCO_WEIGHTS_SIZE, COCO_WEIGHTS_MD5, verbose)


def get_coco_weights(verbose=1, download=True):
    """Path of a checked `mask_rcnn_coco.h5`: found in `weights_dirs()` or downloaded there.

    Raises:
        WeightsError: the found file has the wrong size / md5, or it is missing and cannot be
            downloaded (the message names the URL and where to put the file).
    """
    found = find_coco_weights()
    if found is not None:
        return check_file(found, COCO_WEIGHTS_SIZE, COCO_WEIGHTS_MD5, COCO_MODEL_URL)
    dest = weights_dirs()[0] / COCO_WEIGHTS_NAME
    if not download:
        raise WeightsError(f"{COCO_WEIGHTS_NAME} not found: download {COCO_MODEL_URL} and put it at {dest} "
                           f"(or in ${WEIGHTS_DIR_ENV})")
    return download_trained_weights(dest, verbose)


def coco_exclude_for(config):
    """Layers of the COCO file that cannot fit `config`: class heads unless NUM_CLASSES == 81, and
    `conv1` when IMAGE_CHANNEL_COUNT != 3 (Matterport's advice for grey-scale input)."""
    exclude = [] if config.NUM_CLASSES == COCO_NUM_CLASSES else list(COCO_CLASS_SPECIFIC)
    if getattr(config, "IMAGE_CHANNEL_COUNT", 3) != 3:
        exclude.append("conv1")
    return exclude


def load_coco_weights(keras_model, config, filepath=None, verbose=1):
    """`--weights coco`: find / check / download the COCO file and load it, excluding what cannot fit.

    Returns:
        `LoadReport`, with a note when class-specific heads were excluded automatically (and when the
        nucleus head of Config.NUCLEUS_MASKS, absent from the file, was left to train).
    """
    path = filepath or get_coco_weights(verbose)
    exclude = coco_exclude_for(config)
    report = load_weights(keras_model, path, by_name=True, exclude=exclude, verbose=0)
    if config.NUM_CLASSES != COCO_NUM_CLASSES:
        report.notes.append(f"NUM_CLASSES is {config.NUM_CLASSES}, not COCO's {COCO_NUM_CLASSES}: class-specific "
                            f"heads ({', '.join(COCO_CLASS_SPECIFIC)}) were excluded and keep their initial values")
    if "conv1" in exclude:
        report.notes.append(f"IMAGE_CHANNEL_COUNT is {config.IMAGE_CHANNEL_COUNT}: conv1 was excluded")
    if "mrcnn_nucleus_mask" in report.absent_in_file:
        report.notes.append("NUCLEUS_MASKS: mrcnn_nucleus_mask is not in Matterport's file; it is left to train")
    if verbose:
        print(report)
    return report
