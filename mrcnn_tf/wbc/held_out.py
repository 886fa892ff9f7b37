"""Scoring a held-out set while a network trains: the learning curves of the demo and the benchmarks.

`HeldOutEvaluation` is a Keras callback that copies the training weights into an inference model at fixed
epochs and scores the held-out set with `evaluate_dataset` (mask mAP50, COCO AP, typing); with a colour typer
it scores the same detections a second time, retyped, without running the network again.
"""
import time

import keras
import numpy as np

from mrcnn_tf.engine.progress import minutes_left


def copy_weights(source, target):
    """Copy weights between two Keras models layer by layer, matching layer names.

    Used to score a training model with an inference model of the same config without a file
    round trip (nested models and TimeDistributed wrappers copy as one layer each).

    Returns:
        Number of layers copied.
    """
    copied = 0
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    for layer in target.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            copied += 1
    return copied


class HeldOutEvaluation(keras.callbacks.Callback):
    """Scores a held-out set at fixed epochs and reports the training time they took.

    Training is defined by work (seeded epochs of STEPS_PER_EPOCH steps), not by a clock, so the same
    command reaches the same model on a fast or a slow CPU; the minutes are only reported. After the
    first epoch it prints an estimate of the time the remaining epochs will take on this machine.

    Args:
        mrcnn: the training `MaskRCNN`.
        val_dataset: prepared held-out dataset.
        epochs: the epoch training stops after (cumulative).
        score_every: score after every this many epochs, and always after the last one.
        echo: callable for one progress line per evaluation.
        typer: optional `ColourTyper` (COLOUR_TYPING): each point is scored a second time with the types it gives
            the detected cells, under "colour_typed" (it is fitted on the training cells' hand-drawn masks, so it
            does not change while the network trains).
        print_estimate: print the time estimate after the first epoch (off where `EpochProgress` prints one
            after every epoch).

    Attributes:
        curve: list of dicts (epoch, steps, minutes, mAP50, AP, accuracy, loss, and colour_typed when a typer
            is given); minutes count training only (data loading, tracing, steps), not the scoring.
        inference: the inference `MaskRCNN` holding the weights of the last evaluation.
        last_scores: the full `evaluate_dataset` result of the last evaluation.
    """

    def __init__(self, mrcnn, val_dataset, epochs, score_every=4, echo=print, typer=None, print_estimate=True):
        super().__init__()
        from mrcnn_tf.model import MaskRCNN

        self.mrcnn = mrcnn
        self.val_dataset = val_dataset
        self.epochs = int(epochs)
        self.score_every = max(1, int(score_every))
        self.echo = echo
        self.typer = typer
        self.print_estimate = print_estimate
        config = type(mrcnn.config).from_dict(mrcnn.config.to_dict())
        config.IMAGES_PER_GPU, config.GPU_COUNT = 1, 1
        config.refresh()
        self.inference = MaskRCNN("inference", config, mrcnn.model_dir)
        self.curve = []
        self.last_scores = None
        self._start = None
        self._paused = 0.0
        self._first_epoch = None
        self._first_step = None  # training seconds when the first step ended (it includes tracing the graph)

    def training_seconds(self):
        return time.perf_counter() - self._start - self._paused

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step is None:
            self._first_step = self.training_seconds()

    def on_train_begin(self, logs=None):
        if self._start is None:
            self._start = time.perf_counter()
            self._first_epoch = self.mrcnn.epoch

    def estimate_line(self, seconds, first_step, done):
        """The time estimate printed after the first epoch: its later steps and epoch end, times the epochs left.

        The first step includes tracing the graph (about a minute on a 2-core CPU), which later epochs
        do not repeat, so it is left out of the estimate.
        """
        steps = int(self.mrcnn.config.STEPS_PER_EPOCH)
        trace = first_step if first_step is not None and steps > 1 else 0.0
        left = minutes_left(seconds, first_step, steps, self.epochs - done)
        return (f"  epoch 1 took {seconds:.0f} s on this machine ({trace:.0f} s of it the first step, which traces "
                f"the graph): about {left:.0f} more minutes of training for the remaining {self.epochs - done} epochs")

    def evaluate(self, epoch, logs=None):
        from mrcnn_tf.evaluation.evaluate import evaluate_dataset

        began = time.perf_counter()
        minutes = self.training_seconds() / 60
        copy_weights(self.mrcnn.keras_model, self.inference.keras_model)
        # With a typer the detections are kept and retyped for the second score rather than detected again.
        recorder = _RecordedDetections(self.inference) if self.typer is not None else self.inference
        scores = self.last_scores = evaluate_dataset(recorder, self.val_dataset)
        point = {"epoch": int(epoch), "steps": int(epoch) * int(self.mrcnn.config.STEPS_PER_EPOCH),
                 "minutes": round(minutes, 2), "mAP50": scores["mAP50"], "AP": scores["AP"],
                 "accuracy": scores["accuracy"], "loss": float((logs or {}).get("loss", float("nan"))),
                 "per_class": scores.get("per_class"), "confusion_matrix": scores.get("confusion_matrix")}
        self.curve.append(point)
        self.echo(f"  epoch {epoch:3d} ({point['steps']} steps, {minutes:4.1f} min)  held-out mAP50 "
                  f"{_fmt(point['mAP50'])}  COCO AP {_fmt(point['AP'])}  typing accuracy {_fmt(point['accuracy'])}  "
                  f"loss {point['loss']:.3f}")
        if self.typer is not None:
            typed = evaluate_dataset(_RetypedReplay(recorder.calls, self.typer, self.inference.config),
                                     self.val_dataset)
            point["colour_typed"] = {key: typed.get(key) for key in ("mAP50", "AP", "accuracy", "per_class",
                                                                     "confusion_matrix")}
            self.echo(f"      typed by colour: mAP50 {_fmt(typed['mAP50'])}  COCO AP {_fmt(typed['AP'])}  typing "
                      f"accuracy {_fmt(typed['accuracy'])}")
        self._paused += time.perf_counter() - began
        return point

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if self.print_estimate and done == self._first_epoch + 1 and done < self.epochs:
            self.echo(self.estimate_line(self.training_seconds(), self._first_step, done))
        if done % self.score_every == 0 or done >= self.epochs:
            self.evaluate(done, logs)


class _RecordedDetections:
    """A model's `detect` that keeps each call's images and results (`calls`) for `_RetypedReplay`."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []

    def detect(self, images, verbose=0):
        results = self.model.detect(images, verbose=verbose)
        self.calls.append((images, results))
        return results


class _RetypedReplay:
    """Answers `detect` with the recorded calls in order, each cell retyped by `typer`: a second `evaluate_dataset`
    pass over the same images scores the colour typer on the network's own detections without running it again."""

    def __init__(self, calls, typer, config):
        self.calls, self.typer, self.config = iter(calls), typer, config

    def detect(self, images, verbose=0):
        from mrcnn_tf.wbc.colour_typing import retype

        recorded_images, results = next(self.calls)
        if len(images) != len(recorded_images):  # evaluate_dataset batches the same images the same way each pass
            raise RuntimeError(f"replay asked for {len(images)} images where {len(recorded_images)} were recorded")
        return [retype(result, image, self.typer) for result, image in zip(results, recorded_images)]


def _fmt(value):
    return "  n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"
