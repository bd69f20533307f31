"""The `mrseg` command: a thin click group, one module per subcommand, each imported only when its command
runs (or `--help` lists it), so `mrseg --version` or `mrseg predict` don't import what training needs."""

import importlib

import click

from mrseg import __version__

# name -> (module, attribute) of each subcommand
SUBCOMMANDS = {
    "predict": ("mrseg.cli.predict", "predict_cmd"),
    "train": ("mrseg.cli.train", "train_cmd"),
    "eval": ("mrseg.cli.eval", "eval_cmd"),
    "export": ("mrseg.cli.export", "export_cmd"),
    "plot": ("mrseg.cli.plot", "plot_cmd"),
    "convert": ("mrseg.cli.convert", "convert_cmd"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands (`SUBCOMMANDS`) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in SUBCOMMANDS:
            module, attribute = SUBCOMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mrseg")
def main() -> None:
    """Annotate, train on and evaluate images and videos with Mask R-CNN instance masks."""
