"""Developer sessions: ``nox -s tests``, ``lint``, ``demo``, ``bench``, ``soak``.

Each session builds its own virtual environment, so a fresh machine needs only Python and nox.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite (real peers are skipped unless nginx/docker-registry exist)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy --strict."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Run ``dockercerts demo``: a local mTLS registry, a certs.d tree, the transport at work."""
    session.install("-e", ".")
    session.run("dockercerts", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against a local mTLS server; writes benchmarks/results.md."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """The reliability tests in their long profile (longer soak, more fuzzing examples)."""
    session.install("-e", ".[test]")
    session.env["DOCKERCERTS_SOAK"] = "1"
    session.env["DOCKERCERTS_SOAK_FIGURES"] = "docs/soak-figures.md"  # generated, like results.md
    session.run("python", "-m", "pytest", "-m", "reliability", *session.posargs)
