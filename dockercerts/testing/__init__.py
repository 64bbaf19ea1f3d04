"""Test helpers for mutual TLS and certs.d, usable with or without pytest.

* :mod:`~dockercerts.testing.pki`: :class:`CA` and :class:`Leaf`, an in-memory PKI;
* :mod:`~dockercerts.testing.certs_d`: :class:`CertsD` / :class:`HostDir`, certs.d tree builders;
* :mod:`~dockercerts.testing.server`: :class:`MTLSServer`, a loopback registry that rejects
  client certificates the way docker-registry and nginx do.

Example::

    from dockercerts.testing import CA, CertsD, MTLSServer

    ca = CA()
    with MTLSServer(client_ca=ca, reject="http") as srv:
        CertsD(tmp / "certs.d").host(srv.host).ca(srv.server_ca).pair(
            "client", ca.issue_client("alice")
        )

The pytest plugin (:mod:`dockercerts.pytest_plugin`) wraps these as the ``mtls_ca``,
``mtls_ca_factory``, ``certs_d`` and ``mtls_server`` fixtures.
"""

from __future__ import annotations

from dockercerts.testing.certs_d import CertsD, HostDir
from dockercerts.testing.pki import (
    CA,
    KeyType,
    Leaf,
    TLSVersion,
    client_ssl_context,
    load_cert_chain,
    set_tls_version,
)
from dockercerts.testing.server import (
    ClientCertInfo,
    MTLSServer,
    RejectMode,
    RequestRecord,
    nginx_error_page,
)

__all__ = [
    "CA",
    "CertsD",
    "ClientCertInfo",
    "HostDir",
    "KeyType",
    "Leaf",
    "MTLSServer",
    "RejectMode",
    "RequestRecord",
    "TLSVersion",
    "client_ssl_context",
    "load_cert_chain",
    "nginx_error_page",
    "set_tls_version",
]
