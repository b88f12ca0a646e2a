"""Command-line interface: thin typer commands over the library."""

from __future__ import annotations

from typing import Annotated

import typer

from netsize.cli.compare import compare
from netsize.cli.export import export
from netsize.cli.grow import grow
from netsize.cli.prune import prune
from netsize.cli.train import train

app = typer.Typer(
    name="netsize",
    help="Right-size neural networks: grow them during training, prune them, compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from netsize import __version__

        typer.echo(f"netsize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
          = False) -> None:
    """Right-size neural networks: grow them during training, prune them, compare them."""


app.command(no_args_is_help=True)(grow)
app.command(no_args_is_help=True)(train)
app.command(no_args_is_help=True)(prune)
app.command(no_args_is_help=True)(compare)
app.command(no_args_is_help=True)(export)


def main() -> None:
    app()
