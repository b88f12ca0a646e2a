"""Developer sessions: `nox -s tests`, `slow`, `fuzz`, `lint`, `typecheck` and `smoke`.

Each session installs netsize into its own virtual environment (torch included, a few GB the first
time); pass `-R` to reuse them on later runs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "smoke"]
PYTHON = ["3.11"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The default test run (what CI runs): everything not marked slow."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", *session.posargs)


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """End-to-end runs that take minutes (the digits acceptance run)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The recipe fuzzer and the bad-input cases, with the slow one-epoch run of every mutant."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", "-m", "slow or not slow", "tests/test_fuzz_recipes.py",
                "tests/test_bad_inputs.py", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "netsize", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "netsize")


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """Every tiny recipe end to end through the command line."""
    session.install("-e", ".")
    tmp = session.create_tmp()
    for recipe in ("mlp_iris", "cnn_digits", "teacher_student"):
        session.run("netsize", "grow", f"recipes/tiny/{recipe}.yaml", "--out",
                    f"{tmp}/{recipe}")
