"""The pytest plugin, exercised the way users meet it: loaded by its ``pytest11`` entry point.

Nothing here passes ``-p dockercerts.pytest_plugin``: if the entry point were missing, the inner
runs would not find the fixtures.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USES_ALL_FIXTURES = """
import httpx
import pytest

from dockercerts.testing import CA, CertsD, MTLSServer

SEEN = {}


def test_registered_under_the_entry_point_name(request):
    assert request.config.pluginmanager.get_plugin("dockercerts") is not None


def test_fixtures(mtls_ca, mtls_ca_factory, certs_d, mtls_server, tmp_path):
    assert isinstance(mtls_ca, CA)
    assert mtls_ca.subject == "CN=dockercerts test CA"
    assert isinstance(certs_d, CertsD)
    assert certs_d.root == tmp_path / "certs.d"

    stranger = mtls_ca_factory(name="stranger")
    assert stranger.subject == "CN=stranger"
    assert mtls_ca_factory(name="stranger") is not stranger

    srv = mtls_server(reject="http", tls_version="1.3")
    assert isinstance(srv, MTLSServer)
    good = srv.client_context(mtls_ca.issue_client("alice"))
    assert httpx.get(srv.url + "/v2/", verify=good).status_code == 200
    # The factory's CA reaches the HTTP check (handshake_cas) and is refused there.
    bad = httpx.get(srv.url + "/v2/", verify=srv.client_context(stranger.issue_client("eve")))
    assert bad.status_code == 400
    assert b"400 The SSL certificate error" in bad.content

    certs_d.host(srv.host).ca(srv.server_ca).pair("alice", mtls_ca.issue_client("alice"))
    assert sorted(p.name for p in (certs_d.root / srv.host).iterdir()) == [
        "alice.cert", "alice.key", "ca.crt"
    ]
    SEEN["ca"] = mtls_ca
    SEEN["server"] = srv


def test_session_ca_is_shared_and_servers_were_stopped(mtls_ca):
    assert mtls_ca is SEEN["ca"]
    srv = SEEN["server"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/v2/", verify=srv.client_context(None), timeout=2)


def test_several_servers_in_one_test(mtls_server, mtls_ca):
    a = mtls_server()
    b = mtls_server(reject="status", status=496)
    assert a.port != b.port
    assert httpx.get(b.url + "/v2/", verify=b.client_context(None)).status_code == 496
"""


def test_fixtures_come_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_uses_plugin=USES_ALL_FIXTURES)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_fixtures_vanish_when_the_plugin_is_disabled(pytester: pytest.Pytester) -> None:
    """Control: the same file fails without the entry point, so the test above can fail."""
    pytester.makepyfile(test_uses_plugin=USES_ALL_FIXTURES)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:dockercerts")
    result.stdout.fnmatch_lines(["*fixture 'mtls_ca' not found*"])
    assert result.ret != 0


def test_works_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_parallel="""
        import httpx
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_each_worker_has_its_own_session(i, mtls_ca, mtls_server):
            srv = mtls_server(reject="tls", tls_version="1.2")
            ctx = srv.client_context(mtls_ca.issue_client(f"c{i}"))
            assert httpx.get(srv.url + "/v2/", verify=ctx).status_code == 200
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio", "-n", "2"
    )
    result.assert_outcomes(passed=4)
