"""Learning-rate schedules for `MaskRCNN.train` (Config.LEARNING_RATE_SCHEDULE).

Matterport kept the rate constant within a `train()` call and lowered it by hand between calls. "cosine"
warms the rate up and then decays it to zero along a cosine over the planned steps (detectron2's
WarmupCosineLR), the usual schedule for short runs from random weights. On BCCD-WBC it did not stop the
class head from swinging between majority types, so no preset uses it yet (measured: bench/RESULTS.md).
It is there to be set (`--set LEARNING_RATE_SCHEDULE=cosine`).

The schedule is a function of the global step: the epoch `train()` started at times STEPS_PER_EPOCH,
plus the optimizer's own step count. A run resumed at epoch k therefore continues on the same curve.
"""
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mrcnn_tf")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ~0 to `learning_rate` over `warmup_steps`, then a cosine down to
    `final_fraction * learning_rate` at `total_steps` (held there after it).

    Args:
        learning_rate: peak rate (float).
        total_steps: global step at which the cosine reaches its end (epochs x STEPS_PER_EPOCH).
        warmup_steps: global steps of linear warm-up (0: none).
        first_step: global step of the optimizer's step 0 (start epoch x STEPS_PER_EPOCH), so that a
            resumed run continues on the same curve.
        final_fraction: the end of the cosine as a fraction of `learning_rate`.

    Call: `schedule(step)` with the optimizer's step count (int scalar) -> float32 scalar rate.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, first_step=0, final_fraction=0.0):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.first_step = int(first_step)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32") + float(self.first_step)
        peak, warmup = self.learning_rate, float(self.warmup_steps)
        # (step + 1): the first update already moves a little, as detectron2's linear warm-up.
        warm = peak * ops.minimum(1.0, (step + 1.0) / max(warmup, 1.0))
        span = max(float(self.total_steps) - warmup, 1.0)
        progress = ops.clip((step - warmup) / span, 0.0, 1.0)
        low = peak * self.final_fraction
        cosine = low + (peak - low) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, warm, cosine)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "first_step": self.first_step,
                "final_fraction": self.final_fraction}


def learning_rate_for(config, learning_rate, start_epoch, epochs):
    """What `train()` hands the optimizer: the float itself ("constant") or a `WarmupCosineDecay` over
    epochs 0..`epochs` of this call, entered at `start_epoch` (with LEARNING_RATE_WARMUP_STEPS > 0 a
    "constant" rate is warmed up too)."""
    name = getattr(config, "LEARNING_RATE_SCHEDULE", "constant")
    warmup = int(getattr(config, "LEARNING_RATE_WARMUP_STEPS", 0))
    if name == "constant" and not warmup:
        return learning_rate  # Matterport's behaviour, and the optimizer's config stays a plain float
    steps = int(config.STEPS_PER_EPOCH)
    # "constant" with a warm-up: a cosine from the peak to the peak, i.e. flat after the warm-up.
    return WarmupCosineDecay(learning_rate, total_steps=int(epochs) * steps, warmup_steps=warmup,
                             first_step=int(start_epoch) * steps, final_fraction=1.0 if name == "constant" else 0.0)
