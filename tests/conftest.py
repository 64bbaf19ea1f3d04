"""Shared test configuration.

The ``mtls_ca``, ``mtls_ca_factory``, ``certs_d`` and ``mtls_server`` fixtures come from the
``dockercerts`` pytest plugin, loaded through its ``pytest11`` entry point: install the package
(``pip install -e .``) before running the tests.

Here: the CLI's ``run`` fixture, and what the modules that start real peers (``peers.py``)
share: the peers' binaries (each fixture skips, or fails under
``DOCKERCERTS_REQUIRE_PEERS=1``, when its binary is missing), and a token server with a
plain-HTTP registry using it (``tokenserver.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from peers import RegistryPeer, require_peer
from tokenserver import TokenServer
from warnings_parity import checked

from dockercerts.cli import main

# The token server's grants: team/app is pull-only, team/rw can be pushed to.
GRANTS = {"repository:team/app": ["pull"], "repository:team/rw": ["pull", "push"]}


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    """``run(*argv) -> (exit status, stdout, stderr)`` for the CLI's ``main`` in this process."""

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def _binary(name: str) -> Any:
    @pytest.fixture(scope="session")
    def fixture() -> str:
        return require_peer(name)

    fixture.__doc__ = f"The path of the {name} binary (see ``peers.require_peer``)."
    return fixture


nginx_bin = _binary("nginx")
registry_bin = _binary("docker-registry")
haproxy_bin = _binary("haproxy")
tinyproxy_bin = _binary("tinyproxy")


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with TokenServer(grant=GRANTS) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(registry_bin: str, tokens: TokenServer) -> Iterator[RegistryPeer]:
    """Plain-HTTP registry with token auth: the upstream TLS fronts proxy to."""
    with RegistryPeer(token_auth=tokens.auth, binary=registry_bin) as peer:
        yield peer


@pytest.fixture(autouse=True)
def _inspect_warnings_are_the_librarys(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """In the CLI tests, every inspect report's warnings must equal ``load(...).warnings``
    (see warnings_parity.py); a mismatch fails the test that made the report."""
    if not request.module.__name__.startswith("test_cli"):
        yield
        return
    from dockercerts import cli

    seen: list[str] = []
    monkeypatch.setattr(cli, "inspect_report", checked(cli.inspect_report, seen))
    yield
    if os.environ.get("DOCKERCERTS_PARITY_LOG"):  # to count what the check covered
        with open(os.environ["DOCKERCERTS_PARITY_LOG"], "a", encoding="utf-8") as out:
            out.writelines(f"{request.node.nodeid} {line}\n" for line in seen)
    mismatches = [line for line in seen if line.startswith("MISMATCH")]
    assert not mismatches, "\n".join(mismatches)
