"""`mrseg plot RUN_DIR`: loss, lr and AP curves of a training run to a PNG (needs the `plot` extra)."""

from __future__ import annotations

import click


@click.command("plot")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="PNG to write [default: RUN_DIR/results.png].")
def plot_cmd(run_dir: str, out: str | None) -> None:
    """Draw the training curves of RUN_DIR (its metrics.jsonl) into a PNG."""
    from mrseg.engine.train.plots import PlotError, plot_run

    try:
        path = plot_run(run_dir, out)
    except PlotError as e:
        raise click.ClickException(str(e)) from e
    click.echo(str(path))
