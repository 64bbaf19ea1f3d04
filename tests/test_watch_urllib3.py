"""The attempt watch (:mod:`dockercerts._watch`) under urllib3, which the requests adapter
drives: http.client reads a connection through ``makefile`` (``recv_into``), not ``recv`` as
httpcore does, so "did any response byte arrive" must be seen there too, or a TLS 1.3 refusal
(a fresh connection that closes before answering) could not be told from an answer."""

from __future__ import annotations

from typing import Any

import pytest
import urllib3

from dockercerts import _watch
from dockercerts.testing import CA

TLS_VERSIONS = ("1.2", "1.3")


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_watch_under_urllib3_tells_fresh_reused_and_answered(
    tls: str, mtls_server: Any, mtls_ca: CA
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    context = _watch.watched(srv.client_context(mtls_ca.issue_client("right")))
    with urllib3.PoolManager(ssl_context=context, retries=False) as pool:
        with _watch.Watch() as first:
            assert pool.request("GET", srv.url + "/v2/").status == 200
        with _watch.Watch() as second:
            assert pool.request("GET", srv.url + "/v2/").status == 200
    assert (first.fresh, first.tls_version, first.responded) == (True, f"TLSv{tls}", True)
    assert (second.fresh, second.tls_version) == (False, None)
    assert srv.handshakes == 1


def test_watch_under_urllib3_sees_a_tls13_refusal_before_any_byte(
    mtls_server: Any, mtls_ca_factory: Any
) -> None:
    """The refused certificate's connection was opened for the try, and nothing came back."""
    srv = mtls_server(reject="tls", tls_version="1.3")
    stranger = mtls_ca_factory(name="watch urllib3 stranger").issue_client("wrong")
    context = _watch.watched(srv.client_context(stranger))
    pool = urllib3.PoolManager(ssl_context=context, retries=False)
    with pool, _watch.Watch() as watch, pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", srv.url + "/v2/")
    assert (watch.fresh, watch.tls_version, watch.responded) == (True, "TLSv1.3", False)
