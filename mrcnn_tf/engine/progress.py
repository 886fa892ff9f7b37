"""One readable line per epoch: losses, the epoch's time and an estimate of the time left.

Training is defined by work (epochs of STEPS_PER_EPOCH steps), so the same command takes minutes on one CPU
and an hour on another; after each epoch the line says how long the rest will take on this machine.
"""
import time

import keras

# PreciseBN recomputes BatchNorm's statistics at each epoch's end, after Keras has validated with the lagging
# moving averages: a from-scratch run's first val_loss values are large for that reason alone.
VAL_LOSS_NOTE = ("val_loss is measured before BatchNorm's statistics are recomputed at the epoch's end "
                 "(BN_STATS_BATCHES): large in a from-scratch run's first epochs, it is no sign of divergence; "
                 "checkpoints and held-out scores use the recomputed statistics")


def minutes_left(epoch_seconds, first_step_seconds, steps_per_epoch, epochs_left):
    """Minutes the `epochs_left` remaining epochs will take, from one measured epoch.

    The first epoch of a `fit` call includes tracing the graph in its first step (about a minute on a 2-core
    CPU), which later epochs do not repeat: give that step's seconds as `first_step_seconds` to leave it out
    (None or 0 when the epoch measured did not trace).
    """
    steps = int(steps_per_epoch)
    trace = first_step_seconds if first_step_seconds and steps > 1 else 0.0
    per_epoch = (epoch_seconds - trace) * steps / max(steps - 1, 1) if trace else epoch_seconds
    return per_epoch * max(int(epochs_left), 0) / 60


class EpochProgress(keras.callbacks.Callback):
    """Prints ``epoch 3/16: loss 1.234, val_loss 2.345 (24 s; about 5.2 min left)`` after every epoch.

    Put it after the callbacks whose time belongs to an epoch (held-out scoring, checkpoints): it measures
    the wall time from one epoch's end to the next.

    Args:
        total_epochs: the epoch the run ends after (cumulative, as `MaskRCNN.train`'s `epochs`).
        steps_per_epoch: the config's STEPS_PER_EPOCH.
        echo: callable taking one line.
        explain_val_loss: print `VAL_LOSS_NOTE` once with the first line (PreciseBN runs from scratch).
    """

    def __init__(self, total_epochs, steps_per_epoch, echo=print, explain_val_loss=False):
        super().__init__()
        self.total_epochs = int(total_epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.echo = echo
        self.explain_val_loss = bool(explain_val_loss)
        self.lines = []
        self._last_end = None
        self._first_step = None
        self._fit_start = None
        self._traced_epoch = None

    def on_train_begin(self, logs=None):
        self._fit_start = self._last_end = time.perf_counter()
        self._first_step = None
        self._traced_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._traced_epoch is None:
            self._traced_epoch = epoch  # the first epoch of this fit call traces the graph

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step is None:
            self._first_step = time.perf_counter() - self._fit_start

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        seconds, self._last_end = now - self._last_end, now
        done = epoch + 1
        first_step = self._first_step if epoch == self._traced_epoch else None
        left = minutes_left(seconds, first_step, self.steps_per_epoch, self.total_epochs - done)
        losses = ", ".join(f"{key} {float(value):.3f}" for key, value in (logs or {}).items()
                           if key in ("loss", "val_loss"))
        tail = f"about {left:.1f} min left" if done < self.total_epochs else "done"
        line = f"epoch {done}/{self.total_epochs}: {losses or 'no loss logged'} ({seconds:.0f} s; {tail})"
        if self.explain_val_loss and not self.lines and "val_loss" in (logs or {}):
            line += f"\n  note: {VAL_LOSS_NOTE}"
        self.lines.append(line)
        self.echo(line)
