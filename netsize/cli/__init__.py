"""Command-line interface: thin typer commands over the library."""

from __future__ import annotations

import inspect
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


def reflowed(doc: str | None) -> str:
    """A docstring as help text: each paragraph one line (rich wraps it to the terminal),
    `Example:` lines kept apart. Typer's rich help keeps the docstring's own line breaks, which
    would break sentences at the source's 100 columns whatever the terminal width."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    out = []
    for paragraph in paragraphs:
        lines, prose = [], []
        for line in paragraph.splitlines():
            if line.startswith("Example:"):
                lines.append(line)
            else:
                prose.append(line.strip())
        out.append("\n".join([" ".join(prose)] * bool(prose) + lines))
    return "\n\n".join(out)


for command in (grow, train, prune, compare, export):
    app.command(no_args_is_help=True, help=reflowed(command.__doc__))(command)


def main() -> None:
    app()
