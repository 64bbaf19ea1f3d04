"""The rejection policy over constructed exceptions and responses: no sockets.

What real servers send is pinned by ``test_peers.py`` and exercised end to end by
``test_transport*.py``; here each rule of :class:`~dockercerts.RejectionPolicy` is checked
on its own, including the shapes httpx and anyio give to a rejected certificate.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from typing import Optional

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockercerts import DOCKER, DOCKER_LEGACY, TLS_ONLY, RejectionPolicy
from dockercerts.rejection import DEFAULT_ALERTS, IDEMPOTENT_METHODS, NGINX_TITLES, alert_name

# The OpenSSL spelling of every alert that rejects a client certificate (as real servers
# send them: test_peers.py).
OPENSSL_ALERTS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake_failure",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate_revoked",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate_required",
}

NGINX_PAGE = (
    b"<html>\r\n<head>{title}</head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>{detail}</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
)


def ssl_error(reason: str) -> ssl.SSLError:
    """An ``ssl.SSLError`` as OpenSSL raises it for a received alert."""
    words = reason.lower().replace("_", " ")
    exc = ssl.SSLError(1, f"[SSL: {reason}] {words} (_ssl.c:2580)")
    exc.reason = reason
    exc.library = "SSL"
    return exc


def wrapped(outer: type[Exception], inner: BaseException, *, message: Optional[str] = None):
    """``outer`` raised ``from inner``, as httpcore and httpx map exceptions."""
    exc = outer(str(inner) if message is None else message)
    exc.__cause__ = inner
    return exc


def request(method: str = "GET", **headers: str) -> httpx.Request:
    return httpx.Request(method, "https://localhost:5443/v2/", headers=headers)


def response(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body)


def nginx_400(title: bytes) -> bytes:
    detail = title[len(b"<title>400 ") : -len(b"</title>")]
    return NGINX_PAGE.replace(b"{title}", title).replace(b"{detail}", detail)


# --- TLS alerts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("openssl", "name"), sorted(OPENSSL_ALERTS.items()))
def test_alert_name_reads_openssl_spelling(openssl: str, name: str) -> None:
    assert alert_name(ssl_error(openssl)) == name
    # httpx keeps only the text: the name is read from the message of the mapped error.
    assert alert_name(httpx.ConnectError(str(ssl_error(openssl)))) == name


def test_alert_name_walks_cause_and_context() -> None:
    inner = ssl_error("TLSV1_ALERT_UNKNOWN_CA")
    caused = wrapped(httpx.ReadError, inner, message="")
    assert alert_name(caused) == "unknown_ca"
    context = httpx.ReadError("")
    context.__context__ = RuntimeError("middle")
    context.__context__.__cause__ = inner
    assert alert_name(context) == "unknown_ca"
    assert alert_name(httpx.ReadError("")) is None


def test_alert_name_survives_a_cycle() -> None:
    a, b = httpx.ReadError(""), RuntimeError("x")
    a.__context__, b.__context__ = b, a
    assert alert_name(a) is None


@pytest.mark.parametrize("openssl", sorted(OPENSSL_ALERTS))
@pytest.mark.parametrize("outer", [httpx.ConnectError, httpx.ReadError])
@pytest.mark.parametrize("fresh", [True, False])
def test_every_rejecting_alert_is_a_rejection(
    openssl: str, outer: type[Exception], fresh: bool
) -> None:
    """TLS 1.2 (ConnectError) and 1.3 (ReadError); an alert is a verdict on a reused
    connection too: it names the certificate."""
    exc = wrapped(outer, ssl_error(openssl))
    assert DOCKER.error_verdict(exc, fresh=fresh, responded=False) == (
        f"TLS alert {OPENSSL_ALERTS[openssl]}"
    )
    assert set(OPENSSL_ALERTS.values()) == DEFAULT_ALERTS


def test_bare_ssl_error_is_a_rejection() -> None:
    """anyio can let the ``ssl.SSLError`` escape unwrapped."""
    verdict = DOCKER.error_verdict(
        ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), fresh=True, responded=False
    )
    assert verdict == "TLS alert certificate_required"


@pytest.mark.parametrize(
    "openssl",
    ["TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_ILLEGAL_PARAMETER", "TLSV1_ALERT_DECODE_ERROR"],
)
def test_other_alerts_are_not_rejections(openssl: str) -> None:
    exc = wrapped(httpx.ConnectError, ssl_error(openssl))
    # Even on a fresh connection: the alert says what went wrong, and it is not the cert.
    assert DOCKER.error_verdict(exc, fresh=True, responded=False) is None


def test_custom_alert_set() -> None:
    policy = dataclasses.replace(DOCKER, alerts=frozenset({"unknown_ca"}))
    unknown = wrapped(httpx.ConnectError, ssl_error("TLSV1_ALERT_UNKNOWN_CA"))
    bad = wrapped(httpx.ConnectError, ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"))
    assert policy.error_verdict(unknown, fresh=True, responded=False) == "TLS alert unknown_ca"
    assert policy.error_verdict(bad, fresh=True, responded=False) is None


# --- silent closes (TLS 1.3 with anyio) --------------------------------------------------------


def anyio_reset() -> httpx.ReadError:
    """``ReadError('')`` <- ``anyio.BrokenResourceError`` <- ``ConnectionResetError``."""
    import anyio

    reset = ConnectionResetError(104, "Connection reset by peer")
    broken = anyio.BrokenResourceError()
    broken.__cause__ = reset
    return wrapped(httpx.ReadError, broken, message="")


SILENT_CLOSES = {
    "read error, empty message": lambda: httpx.ReadError(""),
    "anyio reset chain": anyio_reset,
    "disconnected": lambda: httpx.RemoteProtocolError(
        "Server disconnected without sending a response."
    ),
    "write error": lambda: wrapped(httpx.WriteError, BrokenPipeError(32, "Broken pipe")),
    "ssl eof": lambda: wrapped(
        httpx.ReadError, ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    ),
    "reset": lambda: wrapped(httpx.ReadError, ConnectionResetError(104, "reset")),
}


@pytest.mark.parametrize("make", SILENT_CLOSES.values(), ids=list(SILENT_CLOSES))
def test_silent_close_counts_only_on_a_fresh_connection(make) -> None:  # type: ignore[no-untyped-def]
    verdict = DOCKER.error_verdict(make(), fresh=True, responded=False)
    assert verdict is not None
    assert verdict.startswith("connection closed before any response")
    # A kept-alive connection the server closed is not a verdict on the certificate.
    assert DOCKER.error_verdict(make(), fresh=False, responded=False) is None
    # Neither is a close after response bytes arrived.
    assert DOCKER.error_verdict(make(), fresh=True, responded=True) is None
    # And the rule can be switched off.
    quiet = dataclasses.replace(DOCKER, silent_close=False)
    assert quiet.error_verdict(make(), fresh=True, responded=False) is None


def test_ssl_errors_built_in_python_are_judged() -> None:
    """``ssl.SSLError`` raised from Python code (not by ``_ssl``) has no ``reason``
    attribute: the policy reads the message instead of failing with AttributeError."""
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert not hasattr(eof, "reason")
    verdict = DOCKER.error_verdict(wrapped(httpx.ReadError, eof), fresh=True, responded=False)
    assert verdict is not None
    assert verdict.startswith("connection closed before any response")
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    assert alert_name(alert) == "unknown_ca"
    assert DOCKER.error_verdict(alert, fresh=False, responded=False) == "TLS alert unknown_ca"
    verify = ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert DOCKER.error_verdict(verify, fresh=True, responded=False) is None
    # Also when it hides behind an empty-message read error.
    hidden = wrapped(httpx.ReadError, verify, message="")
    assert DOCKER.error_verdict(hidden, fresh=True, responded=False) is None


# --- never rejections ------------------------------------------------------------------------


def never_cases() -> dict[str, BaseException]:
    verify = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer"
    )
    verify.reason = "CERTIFICATE_VERIFY_FAILED"
    timeout_with_alert = wrapped(httpx.ReadTimeout, ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"))
    return {
        "connect timeout": httpx.ConnectTimeout("timed out"),
        "read timeout": wrapped(httpx.ReadTimeout, TimeoutError("timed out"), message=""),
        "pool timeout": httpx.PoolTimeout(""),
        "timeout hiding an alert": timeout_with_alert,
        "server certificate": wrapped(httpx.ConnectError, verify),
        "server certificate, text only": httpx.ConnectError(str(verify)),
        "bare verification error": verify,
        "refused": wrapped(httpx.ConnectError, ConnectionRefusedError(111, "Connection refused")),
        "dns": wrapped(
            httpx.ConnectError, socket.gaierror(-2, "Name or service not known"), message=""
        ),
        "unrelated": ValueError("boom"),
    }


@pytest.mark.parametrize("name", list(never_cases()))
@pytest.mark.parametrize(
    "policy", [DOCKER, DOCKER_LEGACY, TLS_ONLY], ids=["docker", "legacy", "tls"]
)
def test_never_a_rejection(name: str, policy: RejectionPolicy) -> None:
    exc = never_cases()[name]
    assert policy.error_verdict(exc, fresh=True, responded=False) is None
    assert policy.error_verdict(exc, fresh=False, responded=False) is None


# --- HTTP answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("title", NGINX_TITLES)
def test_nginx_400_titles(title: bytes) -> None:
    res = response(400, nginx_400(title), connection="close")
    assert DOCKER.needs_body(res)
    detail = title[len(b"<title>400 ") : -len(b"</title>")].decode()
    assert detail in ("No required SSL certificate was sent", "The SSL certificate error")
    # The verdict names nginx's title in full: it ends up in the user's error message.
    assert DOCKER.response_verdict(request(), res, nginx_400(title)) == f"HTTP 400 {detail}"


def test_other_400_is_not_a_rejection() -> None:
    body = b'{"errors":[{"code":"NAME_INVALID"}]}'
    assert DOCKER.response_verdict(request(), response(400, body), body) is None
    # Without the body the title cannot be seen: no verdict.
    assert DOCKER.response_verdict(request(), response(400)) is None
    no_nginx = dataclasses.replace(DOCKER, nginx_400=False)
    page = nginx_400(NGINX_TITLES[0])
    assert not no_nginx.needs_body(response(400, page))
    assert no_nginx.response_verdict(request(), response(400, page), page) is None


def test_a_400_to_a_head_is_judged_as_a_server_error() -> None:
    """nginx answers a HEAD with its certificate page's status and no body, so the page
    cannot be told from the server's own 400: like a 5xx, it moves on at first contact and is
    returned as is from the known winner (the server layer), never remembered against a pair."""
    verdict = DOCKER.judge_answer("HEAD", 400, challenge=False)
    assert verdict is not None
    assert verdict.layer == "server"
    assert "HEAD" in verdict.reason
    # A GET carries the page: its 400 without nginx's title is the server's answer.
    assert DOCKER.judge_answer("GET", 400, challenge=False) is None
    # Policies that do not read nginx's page, or never move on for the server, return it.
    assert (
        dataclasses.replace(DOCKER, nginx_400=False).judge_answer("HEAD", 400, challenge=False)
        is None
    )
    assert (
        dataclasses.replace(DOCKER, server_errors="none").judge_answer("HEAD", 400, challenge=False)
        is None
    )


@pytest.mark.parametrize("status", [401, 403, 495, 496])
def test_auth_statuses(status: int) -> None:
    assert DOCKER.response_verdict(request(), response(status)) == f"HTTP {status}"
    assert DOCKER.response_verdict(request("POST"), response(status)) == f"HTTP {status}"


def test_token_challenge_passes_through() -> None:
    challenge = {"www-authenticate": 'Bearer realm="https://auth.example/token"'}
    res = response(401, **challenge)
    assert DOCKER.response_verdict(request(), res) is None
    # An expired or under-scoped token: the same challenge, the same verdict (none).
    assert DOCKER.response_verdict(request(Authorization="Bearer abc"), res) is None
    # A 401 without a challenge is a verdict.
    assert DOCKER.response_verdict(request(), response(401)) == "HTTP 401"
    strict = dataclasses.replace(DOCKER, challenge_is_token_auth=False)
    assert strict.response_verdict(request(), res) == "HTTP 401"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS | {"POST", "PATCH"}))
def test_server_errors(status: int, method: str) -> None:
    res = response(status)
    idempotent = method in IDEMPOTENT_METHODS
    expected = f"HTTP {status}" if idempotent else None
    assert DOCKER.response_verdict(request(method), res) == expected
    assert DOCKER_LEGACY.response_verdict(request(method), res) == f"HTTP {status}"
    assert TLS_ONLY.response_verdict(request(method), res) is None
    none = dataclasses.replace(DOCKER, server_errors="none")
    assert none.response_verdict(request(method), res) is None


def test_presets() -> None:
    assert RejectionPolicy.preset("docker") is DOCKER
    assert RejectionPolicy.preset("docker-legacy") is DOCKER_LEGACY
    assert RejectionPolicy.preset("tls-only") is TLS_ONLY
    with pytest.raises(ValueError, match="unknown rejection policy 'nginx'"):
        RejectionPolicy.preset("nginx")


def test_legacy_preset_is_docker_1_2() -> None:
    """Transport errors, 403 and any 5xx; nothing else."""
    page = nginx_400(NGINX_TITLES[0])
    assert DOCKER_LEGACY.response_verdict(request(), response(403)) == "HTTP 403"
    assert DOCKER_LEGACY.response_verdict(request("POST"), response(500)) == "HTTP 500"
    for status in (401, 495, 496):
        assert DOCKER_LEGACY.response_verdict(request(), response(status)) is None
    assert DOCKER_LEGACY.response_verdict(request(), response(400, page), page) is None
    alert = wrapped(httpx.ConnectError, ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"))
    assert DOCKER_LEGACY.error_verdict(alert, fresh=True, responded=False)


def test_tls_only_preset() -> None:
    page = nginx_400(NGINX_TITLES[1])
    for status in (401, 403, 495, 496, 500):
        assert TLS_ONLY.response_verdict(request(), response(status)) is None
    assert TLS_ONLY.response_verdict(request(), response(400, page), page) is None
    alert = wrapped(httpx.ReadError, ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"))
    assert TLS_ONLY.error_verdict(alert, fresh=True, responded=False)
    assert TLS_ONLY.error_verdict(httpx.ReadError(""), fresh=True, responded=False)


def test_custom_policy() -> None:
    policy = DOCKER.with_statuses(418)
    assert policy.statuses == frozenset({418})
    assert policy.response_verdict(request(), response(418)) == "HTTP 418"
    assert policy.response_verdict(request(), response(403)) is None
    # The original is untouched (frozen dataclass).
    assert DOCKER.statuses == frozenset({401, 403, 495, 496})


@given(status=st.integers(100, 399), method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]))
def test_success_and_redirects_never_reject(status: int, method: str) -> None:
    for policy in (DOCKER, DOCKER_LEGACY, TLS_ONLY):
        assert policy.response_verdict(request(method), response(status)) is None


@given(status=st.integers(402, 499).filter(lambda s: s not in (403, 495, 496)))
def test_other_client_errors_never_reject(status: int) -> None:
    assert DOCKER.response_verdict(request(), response(status)) is None
