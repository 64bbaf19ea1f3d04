"""Shared test configuration.

The ``mtls_ca``, ``mtls_ca_factory``, ``certs_d`` and ``mtls_server`` fixtures come from the
``dockercerts`` pytest plugin, loaded through its ``pytest11`` entry point: install the package
(``pip install -e .``) before running the tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from dockercerts.cli import main


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    """``run(*argv) -> (exit status, stdout, stderr)`` for the CLI's ``main`` in this process."""

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call
