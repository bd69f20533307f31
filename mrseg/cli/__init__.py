"""The `mrseg` command: a thin click group; each subcommand lives in its own module here."""

import click

from mrseg import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mrseg")
def main() -> None:
    """Annotate, train on and evaluate images and videos with Mask R-CNN instance masks."""


# Subcommands register below, one line each, as they land.
from mrseg.cli.eval import eval_cmd; main.add_command(eval_cmd)  # noqa: E402, E702, I001
from mrseg.cli.predict import predict_cmd; main.add_command(predict_cmd)  # noqa: E402, E702, I001
from mrseg.cli.export import export_cmd; main.add_command(export_cmd)  # noqa: E402, E702, I001
from mrseg.cli.train import train_cmd; main.add_command(train_cmd)  # noqa: E402, E702, I001
from mrseg.cli.plot import plot_cmd; main.add_command(plot_cmd)  # noqa: E402, E702, I001
