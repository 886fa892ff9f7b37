"""The training engine: the driver, schedules, callbacks, checkpoints, PreciseBN, weight averaging, distribution."""
