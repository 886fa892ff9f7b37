"""Matterport's notebook hooks on a Keras 3 model: `MaskRCNN.ancestor` names and `MaskRCNN.run_graph` values.

Matterport's notebooks walk the TF1 graph for op names such as ``"ROI/refined_anchors:0"`` and hand
the tensors they find to ``run_graph``. Keras 3 keeps no TF1 graph: the steps inside a layer are not
tensors of the model. A layer that can show its steps declares ``INSPECTION_STAGES`` and an
``inspection_stages(inputs)`` method (`ProposalLayer` does); `find_ancestor` turns a Matterport name
into a `GraphStage` that names one of them, and `evaluate` computes it from the layer's inputs, which
the model itself computes. Nothing of this is part of the model, so training and detection never pay
for it.
"""
import collections
import re

import keras

from mrcnn_tf.errors import MrcnnError

# "LAYER[/OP][:INDEX]": TF1 tensor names as Matterport's notebooks write them.
_NAME_RE = re.compile(r"(?P<layer>[^/:]+)(?:/(?P<op>[^:]+))?(?::\d+)?")
# TF 1.3 named the NMS node "ROI/rpn_non_max_suppression:0", later versions put it one level down
# (".../NonMaxSuppressionV2:0", "V3"); a "_N" suffix was the node of image N of the batch.
_NMS_RE = re.compile(r"rpn_non_max_suppression(?:_(?P<image>\d+))?(?:/NonMaxSuppressionV\d+)?")


class GraphStage:
    """An inner value of a layer's computation that the Keras graph does not hold (for `run_graph`).

    Args:
        layer: the layer that computes it (e.g. the "ROI" `ProposalLayer`).
        stage: key of ``layer.inspection_stages(...)`` (e.g. "refined_anchors").
        name: the name it was asked for (Matterport's TF1 op name).
        image: None for a value of the whole batch [B, ...]; an image index for a per-image value
            (Matterport's NMS node held one image's kept indices, without padding).
    """

    def __init__(self, layer, stage, name, image=None):
        self.layer = layer
        self.stage = stage
        self.name = name
        self.image = image

    def select(self, stages):
        """This stage's value out of ``layer.inspection_stages(...)``'s dict."""
        value = stages[self.stage]
        if self.image is None:
            return value
        if self.image >= len(value):
            raise MrcnnError(f"run_graph: {self.name!r} is the value of image {self.image}, but only "
                             f"{len(value)} image(s) were given")
        value = value[self.image]
        return value[value >= 0]  # -1 pads the kept indices to a fixed length

    def __repr__(self):
        return f"<GraphStage {self.name!r}: {self.layer.name}.inspection_stages()[{self.stage!r}]>"


def _upstream_layers(tensor):
    """Layers that compute `tensor`, its own layer first, then breadth-first towards the inputs."""
    layers, seen_layers, seen_tensors = [], set(), set()
    queue = collections.deque([tensor])
    while queue:
        current = queue.popleft()
        history = getattr(current, "_keras_history", None)
        if history is None or id(current) in seen_tensors:
            continue
        seen_tensors.add(id(current))
        operation = history.operation
        if id(operation) not in seen_layers:
            seen_layers.add(id(operation))
            layers.append(operation)
        queue.extend(operation._inbound_nodes[history.node_index].input_tensors)
    return layers


def _stage_names(model):
    return [f"'{layer.name}/{stage}:0'" for layer in model.layers for stage in getattr(layer, "INSPECTION_STAGES", ())]


def find_ancestor(model, tensor, name):
    """The tensor or `GraphStage` that Matterport's ``ancestor(tensor, name)`` found by TF1 op name.

    Args:
        model: the `keras.Model` that holds `tensor`.
        tensor: a tensor of `model` (e.g. ``model.get_layer("ROI").output``); the named layer must
            be the one computing it or one upstream of it.
        name: "LAYER/STAGE:0" (e.g. "ROI/refined_anchors:0"), or "LAYER[:0]" for a layer's output.
            Keras' numbered copies ("ROI_1") match too, as in Matterport.

    Returns:
        the layer's output tensor, or a `GraphStage`.

    Raises:
        MrcnnError: for a name that cannot exist in a Keras 3 model, saying what to ask for instead.
    """
    if getattr(tensor, "_keras_history", None) is None:
        raise MrcnnError(f"ancestor: {tensor!r} is not a tensor of the model; start from a layer output, e.g. "
                         "model.keras_model.get_layer('ROI').output")
    match = _NAME_RE.fullmatch(str(name))
    if match is None:
        raise MrcnnError(f"ancestor: cannot read {name!r}; give 'LAYER/STAGE:0' (e.g. 'ROI/refined_anchors:0') "
                         "or a layer name")
    layer_re = re.compile(re.escape(match["layer"]) + r"(_\d+)*")
    layer = next((candidate for candidate in _upstream_layers(tensor) if layer_re.fullmatch(candidate.name)), None)
    if layer is None:
        if any(layer_re.fullmatch(candidate.name) for candidate in model.layers):
            raise MrcnnError(f"ancestor: layer {match['layer']!r} is not computed before the output of "
                             f"{tensor._keras_history.operation.name!r}; start from the output of a layer after it")
        raise MrcnnError(f"ancestor: the model has no layer {match['layer']!r} (model.keras_model.summary() lists "
                         "them); the inner steps mrcnn_tf can show are " + ", ".join(_stage_names(model)))
    op = match["op"]
    if not op:
        return layer.output
    stages = getattr(layer, "INSPECTION_STAGES", ())
    nms = _NMS_RE.fullmatch(op)
    if nms and "rpn_non_max_suppression" in stages:
        return GraphStage(layer, "rpn_non_max_suppression", name, image=int(nms["image"] or 0))
    if op in stages:
        return GraphStage(layer, op, name)
    choices = [f"'{layer.name}/{stage}:0'" for stage in stages] or _stage_names(model)
    raise MrcnnError(f"ancestor: {name!r} is a TensorFlow 1 op inside layer {layer.name!r}, which Keras 3 does not "
                     f"keep; ask for model.keras_model.get_layer('{layer.name}').output, or one of the inner steps "
                     f"mrcnn_tf can show: {', '.join(choices)}")


def as_output(model, name, item):
    """A `run_graph` output spec checked and resolved: layer names become that layer's output."""
    if isinstance(item, str):
        try:
            return model.get_layer(item).output
        except ValueError:
            raise MrcnnError(f"run_graph: output {name!r}: the model has no layer {item!r} "
                             "(model.keras_model.summary() lists them)") from None
    if item is None:
        raise MrcnnError(f"run_graph: output {name!r} is None (an ancestor() that found nothing?); give a layer "
                         "output, a layer name or a stage from model.ancestor()")
    if isinstance(item, GraphStage) or getattr(item, "_keras_history", None) is not None:
        return item
    raise MrcnnError(f"run_graph: output {name!r} is a {type(item).__name__}, not a tensor of the model; give "
                     "model.keras_model.get_layer(NAME).output as is (Keras 3 refuses tf ops such as tf.identity "
                     "on it), a layer name, or a stage from model.ancestor()")


def _call_inputs(layer):
    """The input tensors of the (single) call of `layer` in its model."""
    if not layer._inbound_nodes:
        raise MrcnnError(f"run_graph: layer {layer.name!r} is not part of this model")
    return list(layer._inbound_nodes[0].input_tensors)


def evaluate(model, inputs, outputs):
    """Values of `outputs` for `inputs` fed to the first inputs of `model`.

    Args:
        model: a `keras.Model`.
        inputs: arrays for ``model.inputs[:len(inputs)]``.
        outputs: list of (name, tensor or `GraphStage`), as resolved by `as_output`.

    Returns:
        OrderedDict name -> numpy array.
    """
    tensors = [item for _, item in outputs if not isinstance(item, GraphStage)]
    stage_layers = []
    for _, item in outputs:
        if isinstance(item, GraphStage) and item.layer not in stage_layers:
            stage_layers.append(item.layer)
    layer_inputs = [_call_inputs(layer) for layer in stage_layers]
    fetched = tensors + [tensor for group in layer_inputs for tensor in group]
    try:
        probe = keras.Model(model.inputs[:len(inputs)], fetched)
    except ValueError as error:
        fed = ", ".join(t.name for t in model.inputs[:len(inputs)])
        raise MrcnnError(f"run_graph feeds only {fed}; an output needs another input (in training mode the "
                         f"ground truth): use a model built with mode='inference' ({str(error).splitlines()[0]})") \
            from None
    values = probe(inputs, training=False)
    values = [keras.ops.convert_to_numpy(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    stages, offset = {}, len(tensors)
    for layer, group in zip(stage_layers, layer_inputs):
        stages[id(layer)] = layer.inspection_stages(values[offset:offset + len(group)])
        offset += len(group)
    plain = iter(values[:len(tensors)])
    result = collections.OrderedDict()
    for name, item in outputs:
        result[name] = item.select(stages[id(item.layer)]) if isinstance(item, GraphStage) else next(plain)
    return result
