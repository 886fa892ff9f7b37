"""`mrcnn-tf`: one Click group for synth, fingerprint, train, evaluate, detect, demo and export.

User errors (`MrcnnError`) print one line and exit 2 without a traceback; ``mrcnn-tf --debug <command>``
shows it. Warnings print as one ``Warning: ...`` line.
"""
import importlib
import os
import sys
import warnings

import click

from mrcnn_tf import __version__
from mrcnn_tf.errors import MrcnnError

# Sub-commands live in their own modules and are imported only when run, so `mrcnn-tf --help`
# answers without importing TensorFlow. name -> (module, attribute, one-line help)
COMMANDS = {}


def register(name, module, attribute, short_help):
    COMMANDS[name] = (module, attribute, short_help)


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mrcnn-tf")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx, debug):
    """Mask R-CNN for white blood cells (LISC) on Keras 3 / TensorFlow."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    # A user sees "Warning: <what and fix>", not the source line that issued it (--debug keeps Python's format).
    click.echo(f"Warning: {' '.join(str(message).split())}", err=True)


def _quiet_pool_teardown(previous):
    """A `sys.unraisablehook` for after an error line: drops a thread pool's teardown error, reports the rest.

    When a collective aborts because a worker is gone, TensorFlow's eager all-reduce leaves its
    ``multiprocessing`` thread pool open; at interpreter exit ``Pool.__del__`` then writes to an
    already-closed pipe and Python prints "Exception ignored in ... OSError: Bad file descriptor"
    with a traceback under the command's one-line error. Nothing is lost there: it is shutdown noise.
    The hook holds everything it uses: it runs while modules are being torn down.
    """
    import multiprocessing.pool

    pool_del = multiprocessing.pool.Pool.__del__

    def hook(unraisable):
        if getattr(unraisable, "object", None) is pool_del and issubclass(unraisable.exc_type, OSError):
            return
        previous(unraisable)

    return hook


def _exit_after_error():
    """Exit 2 after the one-line error, without the thread-pool teardown traceback."""
    sys.unraisablehook = _quiet_pool_teardown(sys.unraisablehook)
    sys.exit(2)


def _os_error_text(exc):
    """What went wrong with the file and what to do, for the usual file-system errors."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return "a file is in the way where a folder is needed; choose another path or move the file"
    if isinstance(exc, PermissionError):
        return "permission denied; choose a location you can write to or fix its permissions"
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder; check the path"
    return f"{exc.strerror or exc}; check the path, its permissions and the free disk space"


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 muted.

    TensorFlow's C++ start-up lines (absl's "All log messages before InitializeLog", CUDA probes)
    are written straight to fd 2 before TF_CPP_MIN_LOG_LEVEL is read, so a user's one-line error
    would arrive under a screenful of them. A failed import restores stderr before it raises.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow_logs():
    """TF_CPP_MIN_LOG_LEVEL=3 unless the user set the variable (to any value) before starting mrcnn-tf.

    TensorFlow's C++ log lines ("failed call to cuInit" at level E on every CPU-only machine, oneDNN
    notes) are noise around our output and one-line errors. Importing mrcnn_tf already set level 2 (errors
    only), which still lets the CUDA probe's error through when the first op creates the devices.
    """
    from mrcnn_tf.backend import runtime

    current = os.environ.get(runtime.LOG_LEVEL_VARIABLE)
    if current is None or (runtime.USER_LOG_LEVEL is None and current == "2"):
        os.environ[runtime.LOG_LEVEL_VARIABLE] = "3"


def main(argv=None):
    """Console entry point: runs the group, turning user errors into one line on stderr.

    `MrcnnError` and file-system errors that name a file (permission denied, disk full ...) print
    ``Error: <message>`` and exit 2; ``mrcnn-tf --debug <command>`` re-raises them with the traceback.
    Any other exception is a bug and keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the group's own options (before the command name) can be --debug.
    command_at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    debug = "--debug" in argv[:command_at]
    previous = warnings.showwarning
    if not debug:
        warnings.showwarning = _one_line_warning
        quiet_tensorflow_logs()
        command = argv[command_at] if command_at < len(argv) else None
        if command in COMMANDS and command != "synth" and not {"-h", "--help"} & set(argv):
            _import_tensorflow_quietly()
    try:
        cli.main(args=argv, prog_name="mrcnn-tf", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MrcnnError as exc:
        if debug:
            raise
        click.echo(f"Error: {' '.join(str(exc).split())}", err=True)
        _exit_after_error()
    except OSError as exc:
        if debug or exc.filename is None:
            raise
        click.echo(f"Error: {exc.filename}: {_os_error_text(exc)}", err=True)
        _exit_after_error()
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    finally:
        warnings.showwarning = previous
    sys.exit(0)


register("synth", "mrcnn_tf.cli.synth", "synth", "Write a synthetic blood-smear set in the LISC layout.")
register("train", "mrcnn_tf.cli.train", "train", "Train on a LISC- or COCO-layout dataset (staged schedule).")
register("evaluate", "mrcnn_tf.cli.evaluate", "evaluate", "Score a checkpoint: mAP50, COCO AP, per-class AP, accuracy.")
register("detect", "mrcnn_tf.cli.detect", "detect", "Find and type cells in images: overlays, COCO JSON, counts.")
register("demo", "mrcnn_tf.cli.demo", "demo", "Train on real smears from scratch, score held-out fields, detect.")
register("fingerprint", "mrcnn_tf.cli.fingerprint", "fingerprint",
         "Measure a dataset and print the settings train would choose from it.")
register("export", "mrcnn_tf.cli.export", "export", "Export a checkpoint as a SavedModel with a serving signature.")
