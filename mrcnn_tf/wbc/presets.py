"""Named configuration presets: ``mrcnn-tf train --config NAME`` instead of long ``--set`` lists.

A preset is a `Config` subclass, registered by name as ``"module:ClassName"`` (imported only when
chosen, so ``mrcnn-tf train --help`` stays fast). Adding one is one line in `PRESETS`::

    "bccd": "mrcnn_tf.wbc.bccd:BccdConfig",

A preset may also name the schedule `mrcnn-tf train --weights none` runs when no ``--schedule`` is given
(`SCRATCH_SCHEDULES`): a recipe defined by its amount of work, not only by its settings.

``--set KEY=VALUE`` applies on top of the preset. The config saved beside each checkpoint holds
every value, so evaluate, detect and export need no ``--config``.
"""
import importlib

from mrcnn_tf.errors import ConfigError

# name -> "module:ClassName" (or the class itself); the first entry is the default.
PRESETS = {
    "lisc": "mrcnn_tf.lisc:LiscConfig",  # the full LISC recipe: ResNet-50 FPN at 512 px
    "demo": "mrcnn_tf.wbc.demo:DemoConfig",  # CPU-sized: ResNet-18 at 256 px, BatchNorm trained from scratch
    "bccd": "mrcnn_tf.wbc.bccd:BccdConfig",  # real smears from scratch on a CPU: ResNet-18 at 320 px, balanced types
}
DEFAULT_PRESET = "lisc"
# `mrcnn-tf train --weights none` without --schedule: the preset's SCRATCH_SCHEDULES entry, else this.
DEFAULT_SCRATCH_SCHEDULE = "all:40"
SCRATCH_SCHEDULES = {
    "bccd": "all:16",  # 800 seeded steps, BccdConfig's recipe (measured: bench/RESULTS.md)
}


def preset_names():
    """The registered preset names, in registry order."""
    return tuple(PRESETS)


def config_class(name):
    """The Config subclass registered as `name` (case-insensitive).

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ConfigError(f"--config {name}: unknown preset; use one of {', '.join(PRESETS)} "
                          "(change single settings with --set KEY=VALUE)")
    target = PRESETS[key]
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
    return target


def make_config(name=DEFAULT_PRESET):
    """A fresh instance of the preset `name`."""
    return config_class(name)()


def scratch_schedule(name=None):
    """The ``--schedule`` that preset `name` trains from random weights with (DEFAULT_SCRATCH_SCHEDULE if none)."""
    return SCRATCH_SCHEDULES.get(str(name or DEFAULT_PRESET).strip().lower(), DEFAULT_SCRATCH_SCHEDULE)
