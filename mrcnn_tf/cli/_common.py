"""Click options shared by the evaluate, detect and export commands, and the library helpers they call.

`--weights last|PATH --logs DIR` becomes an inference `MaskRCNN` whose config is the JSON saved beside the
checkpoint (`mrcnn_tf.wbc.runs`); `load_dataset` reads ``--dataset DIR`` (COCO or LISC layout).
"""
import click

# The commands' names for the library helpers they call.
from mrcnn_tf.inference.detect_folder import class_names_for, list_images  # noqa: F401
from mrcnn_tf.wbc.runs import load_config, load_dataset  # noqa: F401
from mrcnn_tf.wbc.runs import load_inference_model as _load_inference_model


def weights_options(function):
    """Click options --weights, --logs and --set (applied bottom-up, so listed in reverse)."""
    function = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                            help="Change a setting of the saved config, e.g. --set DETECTION_MIN_CONFIDENCE=0.3.")(
        function)
    function = click.option("--logs", default="logs", show_default=True, type=click.Path(file_okay=False),
                            help="Training logs folder (searched by --weights last).")(function)
    function = click.option("--weights", default="last", show_default=True,
                            help="'last' (newest checkpoint under --logs) or a weight file path.")(function)
    return function


def load_inference_model(weights, logs, overrides=(), colour_typing=True):
    """`mrcnn_tf.wbc.runs.load_inference_model`, its notes on standard error."""
    return _load_inference_model(weights, logs, overrides, colour_typing, echo=lambda line: click.echo(line, err=True))
