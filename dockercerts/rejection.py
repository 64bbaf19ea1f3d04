"""Did the server reject the client certificate? One place judges errors and answers.

A rejected certificate shows up in three ways (observed against real servers):

1. a TLS alert during the handshake (TLS 1.2) or on the first read after it (TLS 1.3);
2. with TLS 1.3, sometimes only as a connection that closed before any response byte, on a
   connection opened for this request (its exception chain holds no ``ssl.SSLError``);
3. an HTTP answer: nginx's 400 page, 401, 403, 495, 496, or a 5xx.

:class:`RejectionPolicy` turns one observation into a :class:`Verdict` with its layer:

* ``"certificate"``: the server refused the certificate itself (a TLS alert, the TLS 1.3
  close, nginx's certificate pages, 495/496). Another candidate may do better, and this one
  is not worth trying again soon;
* ``"authorization"``: a 401 without a challenge or a 403, Docker's "4xx authentication
  error": another candidate may carry other rights;
* ``"server"``: a 5xx, which Docker's documentation also counts on a first contact.

A 401 carrying a ``WWW-Authenticate`` challenge is no verdict at all: it is the registry's
token handshake (or a token that expired or lacks a scope), and the client needs it as is.
What an exchange does with a verdict (move on, stop, which answer to give back) is
:mod:`dockercerts.flow`'s business. Timeouts, refused connections, DNS failures and
server-certificate failures are never rejections: another client certificate cannot help.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, Optional, Union

import httpx

__all__ = [
    "CERTIFICATE_STATUSES",
    "DEFAULT_ALERTS",
    "DOCKER",
    "DOCKER_LEGACY",
    "IDEMPOTENT_METHODS",
    "NGINX_TITLES",
    "TLS13_REFUSAL",
    "TLS_ONLY",
    "Layer",
    "RejectionPolicy",
    "Verdict",
    "alert_name",
]

#: TLS alerts a server sends when it refuses the client's certificate (names as in RFC 8446).
DEFAULT_ALERTS = frozenset(
    {
        "bad_certificate",
        "unknown_ca",
        "certificate_required",
        "certificate_unknown",
        "certificate_expired",
        "certificate_revoked",
        "unsupported_certificate",
        "access_denied",
        "handshake_failure",
    }
)

#: nginx's titles for ``ssl_verify_client on`` failures (its 400 page, not compressed).
NGINX_TITLES = (
    b"<title>400 No required SSL certificate was sent</title>",
    b"<title>400 The SSL certificate error</title>",
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

#: Rejecting statuses that speak about the certificate itself (nginx's own codes, and a 400
#: for servers whose ``error_page`` hides nginx's page); other rejecting 4xx statuses are
#: the authorization layer.
CERTIFICATE_STATUSES = frozenset({400, 495, 496})

#: The lowest status that can carry a verdict: a 2xx or 3xx says nothing about the certificate.
JUDGED_FROM = 400

#: The reason given for a certificate refused after a TLS 1.3 handshake (see ``judge_error``).
TLS13_REFUSAL = "refused after the TLS 1.3 handshake"

Layer = Literal["certificate", "authorization", "server"]


@dataclass(frozen=True)
class Verdict:
    """Why an attempt rejects its candidate, and at which layer (see the module docstring)."""

    layer: Layer
    reason: str


# OpenSSL names alerts SSLV3_ALERT_BAD_CERTIFICATE, TLSV1_ALERT_UNKNOWN_CA,
# TLSV13_ALERT_CERTIFICATE_REQUIRED ...; httpx keeps the text, so match the text.
_ALERT = re.compile(r"\b(?:SSLV3|TLSV1|TLSV13)_ALERT_([A-Z_]+)\b")
_CLOSED_TYPES: tuple[type[BaseException], ...] = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)
# Where the timeouts hide once httpx has mapped them.
_NEVER: tuple[type[BaseException], ...] = (httpx.TimeoutException, ssl.SSLCertVerificationError)

ServerErrors = Literal["idempotent", "all", "none"]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it (``__cause__`` and ``__context__``), once each."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)


def alert_name(exc: BaseException) -> Optional[str]:
    """The TLS alert named anywhere in ``exc``'s chain, lower case (``"unknown_ca"``), or None.

    >>> alert_name(httpx.ConnectError("[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"))
    'unknown_ca'
    """
    for item in _chain(exc):
        texts = [str(item)]
        # ``reason`` is set by ``_ssl`` only; an SSLError raised from Python code has none.
        reason = getattr(item, "reason", None)
        if isinstance(item, ssl.SSLError) and reason:
            texts.append(reason)
        for text in texts:
            match = _ALERT.search(text)
            if match:
                return match.group(1).lower()
    return None


def _never_rejection(exc: BaseException) -> Optional[str]:
    for item in _chain(exc):
        if isinstance(item, _NEVER):
            return type(item).__name__
        # ``reason`` is set by ``_ssl`` only; httpx keeps only the text: look at both.
        if getattr(item, "reason", None) == "CERTIFICATE_VERIFY_FAILED" or (
            "CERTIFICATE_VERIFY_FAILED" in str(item)
        ):
            return "server certificate verification failed"
    return None


def _silent_close(exc: BaseException) -> bool:
    return any(isinstance(item, _CLOSED_TYPES) for item in _chain(exc)) or _is_anyio_close(exc)


def _is_anyio_close(exc: BaseException) -> bool:
    # anyio is httpx's async backend; compare by name so sync users need not import it.
    return any(
        type(item).__name__ in ("BrokenResourceError", "EndOfStream", "ClosedResourceError")
        for item in _chain(exc)
    )


@dataclass(frozen=True)
class RejectionPolicy:
    """Which failures mean "the server refused this client certificate, try the next one".

    * ``alerts``: TLS alert names that reject the certificate;
    * ``silent_close``: a connection opened for this request that closed (or reset) before
      any response byte counts as a rejection (TLS 1.3 with anyio shows nothing else);
    * ``statuses``: HTTP statuses that reject it;
    * ``nginx_400``: a 400 carrying one of nginx's two client-certificate titles rejects it;
    * ``server_errors``: whether a 5xx rejects it, for ``"idempotent"`` methods, ``"all"``
      or ``"none"``;
    * ``challenge_is_token_auth``: a 401 with ``WWW-Authenticate`` is the registry's token
      handshake (or a token that expired or lacks a scope), not a verdict on the certificate,
      whether or not the request carried ``Authorization``.

    Presets: :data:`DOCKER` (the default), :data:`DOCKER_LEGACY` (Docker 1.2-1.3: transport
    errors, 403 and any 5xx), :data:`TLS_ONLY`. Adjust one with :func:`dataclasses.replace`
    or :meth:`with_statuses`::

        >>> policy = DOCKER.with_statuses(401, 403, 418)
        >>> sorted(policy.statuses)
        [401, 403, 418]
    """

    alerts: frozenset[str] = DEFAULT_ALERTS
    silent_close: bool = True
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({401, 403, 495, 496}))
    nginx_400: bool = True
    server_errors: ServerErrors = "idempotent"
    challenge_is_token_auth: bool = True

    @classmethod
    def preset(cls, name: str) -> RejectionPolicy:
        """A named preset: ``"docker"``, ``"docker-legacy"`` or ``"tls-only"``."""
        try:
            return _PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown rejection policy {name!r}; choose one of {', '.join(_PRESETS)}"
            ) from None

    def with_statuses(self, *statuses: int) -> RejectionPolicy:
        """This policy with exactly ``statuses`` as the rejecting HTTP statuses."""
        return replace(self, statuses=frozenset(statuses))

    def judge_error(
        self,
        exc: BaseException,
        *,
        fresh: bool,
        responded: bool,
        tls_version: Optional[str] = None,
    ) -> Optional[Verdict]:
        """The verdict ``exc`` carries (always the certificate layer), or ``None``.

        ``fresh``: a TLS connection was opened for this attempt; ``responded``: response
        bytes had arrived; ``tls_version``: what that connection negotiated
        (``"TLSv1.3"``), if known. They matter only for the silent-close rule, which applies
        to TLS 1.3 alone: in TLS 1.2 the server judges the certificate inside the handshake,
        so a completed handshake means the certificate was accepted.

            >>> DOCKER.judge_error(httpx.ConnectTimeout("timed out"), fresh=False,
            ...                    responded=False) is None
            True
        """
        if _never_rejection(exc) is not None:
            return None
        alert = alert_name(exc)
        if alert is not None and alert not in self.alerts:
            return None
        # TLS 1.3: the server judges the certificate after the client's handshake is done;
        # whether its alert is read before its reset is a race the client cannot win (anyio
        # usually loses it, a blocking socket usually wins). One text for both, so the same
        # refusal reads the same in sync and async; the alert, when seen, is in the record.
        after_handshake = fresh and not responded
        if alert is not None:
            if after_handshake and tls_version == "TLSv1.3":
                return Verdict("certificate", TLS13_REFUSAL)
            return Verdict("certificate", f"TLS alert {alert}")
        if (
            self.silent_close
            and after_handshake
            and tls_version != "TLSv1.2"
            and _silent_close(exc)
        ):
            if tls_version == "TLSv1.3":
                return Verdict("certificate", TLS13_REFUSAL)
            return Verdict("certificate", "connection closed before any response")
        return None

    def error_verdict(
        self,
        exc: BaseException,
        *,
        fresh: bool,
        responded: bool,
        tls_version: Optional[str] = None,
    ) -> Optional[str]:
        """The reason of :meth:`judge_error`, or ``None``."""
        verdict = self.judge_error(exc, fresh=fresh, responded=responded, tls_version=tls_version)
        return None if verdict is None else verdict.reason

    def judges(self, status: int) -> bool:
        """Whether an answer with this status can carry a verdict at all (a 2xx or 3xx never
        does: :data:`JUDGED_FROM`); the flow asks this first, so a steady 200 is never looked
        at further."""
        return status >= JUDGED_FROM

    def needs_body(self, status: Union[int, httpx.Response]) -> bool:
        """Whether judging an answer with this status needs its body (nginx's 400 page)."""
        code = status.status_code if isinstance(status, httpx.Response) else status
        return self.nginx_400 and code == 400

    def judge_answer(
        self, method: str, status: int, *, challenge: bool, body: bytes = b""
    ) -> Optional[Verdict]:
        """The verdict an HTTP answer carries, or ``None`` when it is the server's answer.

        ``challenge``: the answer has a ``WWW-Authenticate`` header; ``body``: the start of
        the body, needed for a 400 only (:meth:`needs_body`).

            >>> DOCKER.judge_answer("GET", 401, challenge=True) is None  # token handshake
            True
            >>> DOCKER.judge_answer("GET", 502, challenge=False)
            Verdict(layer='server', reason='HTTP 502')
        """
        if not self.judges(status):
            return None
        if status == 400 and self.nginx_400:
            for title in NGINX_TITLES:
                if title in body:
                    # The text between "<title>400 " and "</title>".
                    return Verdict("certificate", f"HTTP 400 {title[11:-8].decode()}")
            if method == "HEAD":
                # nginx answers a HEAD with its page's status and no page: a 400 that may be a
                # refused certificate or the server's own. Judged as a server error (move on
                # at first contact, returned from the known winner), never remembered.
                return self._server_error(method, "HTTP 400 to a HEAD (no page to read)")
        if status >= 500:
            return self._server_error(method, f"HTTP {status}")
        if status not in self.statuses:
            return None
        if status == 401 and challenge and self.challenge_is_token_auth:
            return None
        layer: Layer = "certificate" if status in CERTIFICATE_STATUSES else "authorization"
        return Verdict(layer, f"HTTP {status}")

    def _server_error(self, method: str, reason: str) -> Optional[Verdict]:
        if self.server_errors == "all" or (
            self.server_errors == "idempotent" and method in IDEMPOTENT_METHODS
        ):
            return Verdict("server", reason)
        return None

    def response_verdict(
        self, request: httpx.Request, response: httpx.Response, body: bytes = b""
    ) -> Optional[str]:
        """The reason of :meth:`judge_answer` for an httpx request and response, or ``None``."""
        verdict = self.judge_answer(
            request.method,
            response.status_code,
            challenge="www-authenticate" in response.headers,
            body=body,
        )
        return None if verdict is None else verdict.reason


#: The default: the documented promise, recognising what real servers send.
DOCKER = RejectionPolicy()
#: Docker 1.2-1.3 exactly: a transport-level rejection, a 403 or any 5xx.
DOCKER_LEGACY = RejectionPolicy(
    statuses=frozenset({403}), nginx_400=False, server_errors="all", challenge_is_token_auth=False
)
#: Only TLS-level rejections; every HTTP answer is returned as is.
TLS_ONLY = RejectionPolicy(statuses=frozenset(), nginx_400=False, server_errors="none")

_PRESETS = {"docker": DOCKER, "docker-legacy": DOCKER_LEGACY, "tls-only": TLS_ONLY}
