"""Testing your own registry client with dockercerts' pytest fixtures.

The fixtures come with the package (``pip install dockercerts``: the plugin registers itself):

* ``mtls_ca``: a CA for the session; issue the client certificates you need from it;
* ``mtls_ca_factory``: more CAs, e.g. a stranger whose certificates the registry refuses;
* ``certs_d``: an empty certs.d tree in the test's temporary folder;
* ``mtls_server``: starts local mTLS registries (``reject="tls"`` like docker-registry,
  ``"http"`` like nginx) and stops them when the test ends.

Run it with ``pytest examples/test_with_fixtures.py``. The project's test suite runs it too
(tests/test_examples_report.py), so it cannot rot.
"""

from __future__ import annotations

import httpx
import pytest

import dockercerts
from dockercerts.pytest_plugin import CAFactory, ServerFactory
from dockercerts.testing import CA, CertsD


@pytest.mark.parametrize("reject", ["tls", "http"])
def test_wrong_certificate_first_then_the_right_one(
    reject: str,
    mtls_ca: CA,
    mtls_ca_factory: CAFactory,
    certs_d: CertsD,
    mtls_server: ServerFactory,
) -> None:
    server = mtls_server(reject=reject)
    stranger = mtls_ca_factory(name="a CA the registry does not know").issue_client("eve")
    # Docker tries pairs in byte order of their names: the stranger's goes first.
    (
        certs_d.host(server.host)
        .ca(server.server_ca)
        .pair("a-stranger", stranger)
        .pair("b-alice", mtls_ca.issue_client("alice"))
    )

    transport = dockercerts.Transport(root=certs_d.path)
    with httpx.Client(transport=transport) as client:
        first = client.get(server.url + "/v2/_catalog")
        second = client.get(server.url + "/v2/_catalog")
        # Ask while the client is open: closing it closes the transport and its state.
        assert transport.winner(server.url) == "b-alice"

    assert first.status_code == second.status_code == 200
    assert first.json() == {"repositories": ["team/app"]}
    # The registry saw alice on every request it answered (the stranger never got one
    # through, or got nginx's 400 page).
    assert [r.client_subject for r in server.requests if r.status == 200] == ["CN=alice"] * 2


def test_loader_reads_the_tree_in_dockers_order(mtls_ca: CA, certs_d: CertsD) -> None:
    host = (
        certs_d.host("registry.test:5000")
        .ca(mtls_ca)
        .pair("b-second", mtls_ca.issue_client("second"))
        .pair("a-first", mtls_ca.issue_client("first"))
    )
    certs = dockercerts.load("registry.test:5000", root=certs_d.path)
    assert certs.directory == host.path
    assert [pair.name for pair in certs.pairs] == ["a-first", "b-second"]
    assert [pair.subject for pair in certs.pairs] == ["CN=first", "CN=second"]
    assert certs.warnings == ()


def test_a_ca_saved_as_cert_fails_like_docker(mtls_ca: CA, certs_d: CertsD) -> None:
    certs_d.host("registry.test:5000").ca_as_cert(mtls_ca)
    with pytest.raises(dockercerts.MissingKeyError) as caught:
        dockercerts.load("registry.test:5000", root=certs_d.path)
    assert str(caught.value) == (
        "missing key ca.key for client certificate ca.cert. "
        "CA certificates must use the extension .crt"
    )
