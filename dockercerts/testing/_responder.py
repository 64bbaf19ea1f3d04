"""What the test registry answers to one request: the ``reject`` modes' refusals, the
Bearer challenge and its ``/token``, ``/v2/`` and the catalog.

Internal to :class:`~dockercerts.testing.MTLSServer`, which reads the request, asks
:meth:`Registry.answer` and writes the bytes; nothing here touches a socket or a lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from dockercerts.testing._http import (
    Request,
    json_response,
    nginx_error_page,
    nginx_response,
    raw_response,
    reason_phrase,
)
from dockercerts.testing._tls import ClientCertInfo, RejectMode

__all__ = ["Answer", "Registry"]

# nginx's reasons for ``ssl_verify_client on``, word for word.
_NO_CERT_REASON = "No required SSL certificate was sent"
_BAD_CERT_REASON = "The SSL certificate error"


@dataclass(frozen=True)
class Answer:
    """The response to one request: its status, its bytes, whether the connection closes
    after it, and ``error`` when ``accept()`` raised (the server reports it in ``errors``)."""

    status: int
    payload: bytes
    close: bool
    error: Optional[str] = None


class Registry:
    """The answers of a registry behind a client-certificate check.

    ``reject``, ``status``, ``accept`` and ``status_headers`` are
    :class:`~dockercerts.testing.MTLSServer`'s parameters of the same names (checked here);
    ``repositories`` is the catalog; with ``auth_challenge`` a request without
    ``Authorization`` gets a ``401`` Bearer challenge pointing at ``/token``.
    """

    def __init__(
        self,
        *,
        reject: RejectMode,
        status: int,
        accept: Optional[Callable[[Optional[ClientCertInfo]], bool]],
        status_headers: Sequence[tuple[str, str]],
        repositories: Sequence[str],
        auth_challenge: bool,
    ) -> None:
        if reject not in ("tls", "http", "status"):
            raise ValueError(f"reject must be 'tls', 'http' or 'status', not {reject!r}")
        if accept is not None and reject != "status":
            raise ValueError("accept= only applies to reject='status'")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        self.reject = reject
        self.status = status
        self.accept = accept
        self.status_headers = list(status_headers)
        self.repositories = list(repositories)
        self.auth_challenge = auth_challenge

    def answer(self, request: Request, info: Optional[ClientCertInfo], port: int) -> Answer:
        """The answer to ``request`` from a client that presented ``info`` (``None``: no
        certificate), on a server listening on ``port`` (the challenge's realm names it)."""
        wants_close = request.headers.get("connection", "").lower() == "close" or (
            request.version == "HTTP/1.0"
            and request.headers.get("connection", "").lower() != "keep-alive"
        )
        head = request.method == "HEAD"
        refusal = self._refusal(info, wants_close, head)
        if refusal is not None:
            return refusal
        path = request.target.split("?", 1)[0]
        if path == "/token":
            token = {
                "token": "dockercerts-test-token",
                "access_token": "dockercerts-test-token",
                "expires_in": 300,
            }
            return Answer(200, json_response(200, token, close=wants_close, head=head), wants_close)
        if self.auth_challenge and "authorization" not in request.headers:
            challenge = f'Bearer realm="https://127.0.0.1:{port}/token",service="dockercerts-test"'
            body = {
                "errors": [
                    {"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}
                ]
            }
            payload = json_response(
                401, body, close=wants_close, head=head, extra=[("WWW-Authenticate", challenge)]
            )
            return Answer(401, payload, wants_close)
        content: object
        if path == "/v2/" or path == "/v2":
            content = {}
        elif path == "/v2/_catalog":
            content = {"repositories": self.repositories}
        else:
            content = {
                "method": request.method,
                "path": request.target,
                "body_length": len(request.body),
                "client_subject": info.subject if info else None,
                "client_fingerprint": info.fingerprint if info else None,
            }
        return Answer(200, json_response(200, content, close=wants_close, head=head), wants_close)

    def _refusal(
        self, info: Optional[ClientCertInfo], wants_close: bool, head: bool
    ) -> Optional[Answer]:
        """The answer of the ``"http"`` and ``"status"`` modes to a refused certificate;
        ``None`` when the request goes on to the registry."""
        if self.reject == "http" and (info is None or not info.trusted):
            reason = _NO_CERT_REASON if info is None else _BAD_CERT_REASON
            page = nginx_error_page(400, reason, "400 Bad Request")
            payload = raw_response(400, "Bad Request", page, nginx=True, close=True, head=head)
            return Answer(400, payload, True)
        if self.reject != "status":
            return None
        try:
            allowed = self.accept(info) if self.accept else bool(info and info.trusted)
        except Exception as exc:  # reported through srv.errors
            payload = nginx_response(500, reason_phrase(500), close=True, head=head)
            return Answer(500, payload, True, f"accept() raised {type(exc).__name__}: {exc}")
        if allowed:
            return None
        payload = nginx_response(
            self.status,
            reason_phrase(self.status),
            close=wants_close,
            head=head,
            extra=self.status_headers,
        )
        return Answer(self.status, payload, wants_close)
