#!/usr/bin/env python
"""Mask R-CNN for white blood cells (LISC): train, evaluate and detect from samples/lisc.

Matterport's sample-script habit (``python balloon.py train --dataset=... --weights=coco``) on top of
the project's own commands: each sub-command here *is* ``mrcnn-tf <command>``
(mrcnn_tf/cli/<command>.py, same options and output), except that ``--logs`` defaults to
``<repository>/logs`` wherever the script is run from, as in Matterport's samples.

Usage (see README.md beside this file for getting LISC and for the training schedule):

    # Train from Matterport's COCO weights: heads first, then all layers (staged schedule)
    python lisc.py train --dataset /path/to/LISC --weights coco

    # Continue the newest run under logs/
    python lisc.py train --dataset /path/to/LISC --weights last

    # Score the newest checkpoint on the validation split (mAP50, COCO AP, per-type AP, accuracy)
    python lisc.py evaluate --dataset /path/to/LISC --weights last --json results/val.json

    # Find, outline and type the cells of an image or a folder; write overlays and counts
    python lisc.py detect --weights last --input /path/to/smears --output results/

    python lisc.py COMMAND --help     # every option of a command
"""
import pathlib
import sys

import click

from mrcnn_tf.cli import COMMANDS, LazyGroup
from mrcnn_tf.errors import MrcnnError

ROOT_DIR = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_LOGS_DIR = ROOT_DIR / "logs"
SAMPLE_COMMANDS = ("train", "evaluate", "detect")


class SampleGroup(LazyGroup):
    """The project's lazily imported commands, limited to those this sample script offers."""

    def list_commands(self, ctx):
        return [name for name in SAMPLE_COMMANDS if name in COMMANDS]

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) if name in self.list_commands(ctx) else None


@click.group(cls=SampleGroup, context_settings={
    "help_option_names": ["-h", "--help"],
    # Only the default changes: --logs given on the command line still wins.
    "default_map": {name: {"logs": str(DEFAULT_LOGS_DIR)} for name in SAMPLE_COMMANDS},
})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def cli(debug):
    """Train, evaluate and detect white blood cells (LISC) with Mask R-CNN."""


def main(argv=None):
    """Run the script; a user error (`MrcnnError`) prints one line and exits 2, as `mrcnn-tf` does."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="lisc.py", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except MrcnnError as exc:
        if "--debug" in argv:
            raise
        click.echo(f"Error: {exc}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
