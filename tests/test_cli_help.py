"""Help as a user reads it: sentences whole, defaults whole, examples on one line, at 80 columns."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from netsize.cli import app, reflowed

COMMANDS = ["grow", "train", "prune", "compare", "export"]
runner = CliRunner()


def _help(command: str, columns: int) -> list[str]:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _description(lines: list[str]) -> list[str]:
    """The text between the usage line and the first panel."""
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    return [line.strip() for line in lines[start:end] if line.strip()]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_paragraphs_are_not_broken_mid_sentence(command: str):
    # at 300 columns every paragraph fits a line, so a line must end a sentence or be an example
    for line in _description(_help(command, 300)):
        assert line.startswith("Example: ") or re.search(r"[.:?)]$", line), line


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_cuts_nothing_and_keeps_examples_whole(command: str):
    lines = _help(command, 80)
    assert all(len(line) <= 80 for line in lines)
    assert not any("…" in line for line in lines), [line for line in lines if "…" in line]
    description = _description(lines)
    examples = [i for i, line in enumerate(description) if line.startswith("Example: ")]
    assert examples, "every command's help has an example"
    for i in examples:  # a wrapped example would continue on a line that is not an example
        assert i + 1 == len(description) or description[i + 1].startswith("Example: ")


def test_reflowed_joins_prose_and_keeps_examples_apart():
    doc = """First line.

    A sentence broken
    over two lines.

    Example: netsize grow a.yaml
    Example: netsize grow b.yaml
    """
    assert reflowed(doc) == ("First line.\n\nA sentence broken over two lines.\n\n"
                             "Example: netsize grow a.yaml\nExample: netsize grow b.yaml")
