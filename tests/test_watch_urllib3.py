"""The attempt watch (:mod:`dockercerts._watch`) under urllib3, which the requests adapter
drives: http.client reads a connection through ``makefile`` (``recv_into``), not ``recv`` as
httpcore does, so "did any response byte arrive" must be seen there too, or a TLS 1.3 refusal
(a fresh connection that closes before answering) could not be told from an answer.

Each case runs with both ways an attempt is found: a function marked with ``sends`` (what
the front ends use) and a ``Watch`` in effect."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import urllib3

from dockercerts import _watch
from dockercerts.testing import CA

TLS_VERSIONS = ("1.2", "1.3")


@_watch.sends
def _marked(sent: _watch.Watch, call: Callable[[], Any]) -> Any:
    return call()


def _by_watch(call: Callable[[], Any]) -> tuple[_watch.Watch, Any]:
    with _watch.Watch() as watch:
        return watch, call()


def _by_sends(call: Callable[[], Any]) -> tuple[_watch.Watch, Any]:
    watch = _watch.Watch()  # only its fields: not entered
    return watch, _marked(watch, call)


REGISTRATIONS = pytest.mark.parametrize("watching", [_by_sends, _by_watch], ids=["sends", "Watch"])


@REGISTRATIONS
@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_watch_under_urllib3_tells_fresh_reused_and_answered(
    tls: str, watching: Any, mtls_server: Any, mtls_ca: CA
) -> None:
    srv = mtls_server(reject="tls", tls_version=tls)
    context = _watch.watched(srv.client_context(mtls_ca.issue_client("right")))
    with urllib3.PoolManager(ssl_context=context, retries=False) as pool:
        first, answer = watching(lambda: pool.request("GET", srv.url + "/v2/"))
        assert answer.status == 200
        second, answer = watching(lambda: pool.request("GET", srv.url + "/v2/"))
        assert answer.status == 200
    assert (first.fresh, first.tls_version, first.responded) == (True, f"TLSv{tls}", True)
    assert (second.fresh, second.tls_version) == (False, None)
    assert srv.handshakes == 1


@REGISTRATIONS
def test_watch_under_urllib3_sees_a_tls13_refusal_before_any_byte(
    watching: Any, mtls_server: Any, mtls_ca_factory: Any
) -> None:
    """The refused certificate's connection was opened for the try, and nothing came back."""
    srv = mtls_server(reject="tls", tls_version="1.3")
    stranger = mtls_ca_factory(name="watch urllib3 stranger").issue_client("wrong")
    context = _watch.watched(srv.client_context(stranger))

    def request() -> Any:
        with pytest.raises(urllib3.exceptions.HTTPError):
            pool.request("GET", srv.url + "/v2/")

    with urllib3.PoolManager(ssl_context=context, retries=False) as pool:
        watch, _ = watching(request)
    assert (watch.fresh, watch.tls_version, watch.responded) == (True, "TLSv1.3", False)


def test_the_nearest_attempt_is_told(mtls_server: Any, mtls_ca: CA) -> None:
    """A marked function inside a ``Watch`` gets the handshake: the innermost attempt, as a
    front end's try inside a caller's watch."""
    srv = mtls_server(reject="tls")
    context = _watch.watched(srv.client_context(mtls_ca.issue_client("right")))
    with urllib3.PoolManager(ssl_context=context, retries=False) as pool, _watch.Watch() as outer:
        inner, answer = _by_sends(lambda: pool.request("GET", srv.url + "/v2/"))
    assert answer.status == 200
    assert (inner.fresh, outer.fresh) == (True, False)


def test_a_send_function_must_name_its_attempt() -> None:
    """A renamed variable would watch nothing: refused where the function is marked."""

    def elsewhere(attempt: object) -> None:
        return None

    with pytest.raises(TypeError, match="elsewhere has no variable 'sent'"):
        _watch.sends(elsewhere)
