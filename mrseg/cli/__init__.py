"""The `mrseg` command: a thin click group; each subcommand lives in its own module here."""

import click

from mrseg import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mrseg")
def main() -> None:
    """Annotate, train on and evaluate images and videos with Mask R-CNN instance masks."""


# Subcommands register below, one line each, as they land.
