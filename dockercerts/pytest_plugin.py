"""pytest fixtures for mutual-TLS tests, registered automatically (entry point ``dockercerts``).

Fixtures:

``mtls_ca`` (session)
    A root :class:`~dockercerts.testing.CA` shared by the whole session.
``mtls_ca_factory`` (session)
    ``mtls_ca_factory(name=..., key_type=...) -> CA`` makes further CAs (another team's CA,
    an unrelated "wrong" CA). Each call makes a new CA.
``certs_d`` (function)
    A :class:`~dockercerts.testing.CertsD` rooted at ``tmp_path / "certs.d"``.
``mtls_server`` (function)
    ``mtls_server(**options) -> MTLSServer``: starts a server (default ``client_ca=mtls_ca``),
    and stops every server it started when the test ends.

Example::

    import httpx

    def test_docker_style_client(mtls_ca, mtls_ca_factory, certs_d, mtls_server):
        srv = mtls_server(reject="http")
        stranger = mtls_ca_factory(name="stranger").issue_client("eve")
        ctx = srv.client_context(stranger)
        assert httpx.get(srv.url + "/v2/", verify=ctx).status_code == 400

        certs_d.host(srv.host).ca(srv.server_ca).pair("alice", mtls_ca.issue_client("alice"))

The fixtures keep no global state: every CA and server belongs to a pytest session or test, so
the plugin works under ``pytest-xdist`` (each worker has its own session CAs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from dockercerts.testing import CA, CertsD, KeyType, MTLSServer

__all__ = ["CAFactory", "ServerFactory"]


class CAFactory(Protocol):
    """The type of the ``mtls_ca_factory`` fixture."""

    def __call__(self, name: str = ..., *, key_type: KeyType = ...) -> CA: ...


class ServerFactory(Protocol):
    """The type of the ``mtls_server`` fixture: keyword options of :class:`MTLSServer`."""

    def __call__(self, **options: Any) -> MTLSServer: ...


class _CARegistry:
    """The CAs one pytest session created, so servers can let their certificates through."""

    def __init__(self) -> None:
        self.cas: list[CA] = []

    def make(self, name: str = "dockercerts extra CA", *, key_type: KeyType = "ec") -> CA:
        ca = CA(name=name, key_type=key_type)
        self.cas.append(ca)
        return ca


@pytest.fixture(scope="session")
def _dockercerts_ca_registry() -> _CARegistry:
    return _CARegistry()


@pytest.fixture(scope="session")
def mtls_ca(_dockercerts_ca_registry: _CARegistry) -> CA:
    """A root CA (``CN=dockercerts test CA``, P-256) shared by the whole test session.

    Issue what a test needs from it; certificates are cheap, so give each test its own::

        def test_pair(mtls_ca, certs_d):
            certs_d.host("localhost:5443").ca(mtls_ca).pair("c", mtls_ca.issue_client("c"))
    """
    return _dockercerts_ca_registry.make("dockercerts test CA")


@pytest.fixture(scope="session")
def mtls_ca_factory(_dockercerts_ca_registry: _CARegistry) -> CAFactory:
    """Make more root CAs: ``mtls_ca_factory(name="other", key_type="ec") -> CA``.

    Servers from ``mtls_server`` let certificates of every CA made here (and of ``mtls_ca``)
    through the handshake, so ``reject="http"``/``"status"`` can refuse them at the HTTP level::

        def test_wrong_ca(mtls_ca_factory, mtls_server):
            eve = mtls_ca_factory(name="wrong").issue_client("eve")
            srv = mtls_server(reject="http")
            ...  # eve's requests get nginx's "400 The SSL certificate error"

    A CA built directly with ``CA()`` is unknown to those servers: its certificates fail the
    handshake (``unknown_ca``) unless passed as ``mtls_server(handshake_cas=[...])``.
    """
    return _dockercerts_ca_registry.make


@pytest.fixture
def certs_d(tmp_path: Path) -> CertsD:
    """A fresh :class:`~dockercerts.testing.CertsD` tree at ``tmp_path / "certs.d"``.

    Each test gets its own, empty; host directories appear as you ask for them::

        def test_layout(certs_d, mtls_ca):
            host = certs_d.host("localhost:5443").ca(mtls_ca)
            assert host.names() == ["ca.crt"]
    """
    return CertsD(tmp_path / "certs.d")


@pytest.fixture
def mtls_server(mtls_ca: CA, _dockercerts_ca_registry: _CARegistry) -> Iterator[ServerFactory]:
    """Start :class:`~dockercerts.testing.MTLSServer` instances; all stop when the test ends.

    ``mtls_server(**options)`` takes the server's keyword options. Defaults: ``client_ca`` is
    ``mtls_ca`` and ``handshake_cas`` is every CA the session's ``mtls_ca_factory`` made::

        def test_registry(mtls_ca, mtls_server):
            srv = mtls_server(reject="tls", tls_version="1.2")
            ctx = srv.client_context(mtls_ca.issue_client("alice"))
            assert httpx.get(srv.url + "/v2/", verify=ctx).status_code == 200
    """
    started: list[MTLSServer] = []

    def start(**options: Any) -> MTLSServer:
        options.setdefault("client_ca", mtls_ca)
        options.setdefault("handshake_cas", list(_dockercerts_ca_registry.cas))
        server = MTLSServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
