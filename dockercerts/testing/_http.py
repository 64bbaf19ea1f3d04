"""HTTP/1.1 as the test server speaks it: requests read from a TLS socket, responses written
byte for byte as docker-registry and nginx write theirs (nginx's error pages included).
Internal to :mod:`dockercerts.testing.server` (reading) and ``_responder`` (writing);
``nginx_error_page`` is public in the server module."""

from __future__ import annotations

import email.utils
import http
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

_EXTRA_REASONS = {495: "SSL Certificate Error", 496: "SSL Certificate Required"}

__all__ = [
    "BadRequest",
    "Reader",
    "Request",
    "json_response",
    "nginx_error_page",
    "nginx_response",
    "raw_response",
    "read_request",
    "reason_phrase",
]

_MAX_LINE = 65536


_MAX_HEADERS = 200


def nginx_error_page(status: int, title_reason: str, h1: Optional[str] = None) -> bytes:
    """nginx's built-in error page, byte for byte.

    ``nginx_error_page(400, "No required SSL certificate was sent", "400 Bad Request")`` is the
    page nginx sends when ``ssl_verify_client on`` sees no certificate.
    """
    title = f"{status} {title_reason}"
    lines = [
        "<html>",
        f"<head><title>{title}</title></head>",
        "<body>",
        f"<center><h1>{h1 or title}</h1></center>",
    ]
    if h1 is not None:
        lines.append(f"<center>{title_reason}</center>")
    lines += ["<hr><center>nginx</center>", "</body>", "</html>", ""]
    return "\r\n".join(lines).encode("ascii")


def reason_phrase(status: int) -> str:
    """The reason phrase for ``status`` (nginx's own for 495 and 496), else ``"Error"``."""
    if status in _EXTRA_REASONS:
        return _EXTRA_REASONS[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class BadRequest(Exception):
    """The request cannot be parsed; answer 400 and close."""


@dataclass
class Request:
    """One request as read: ``headers`` with lower-cased names, ``body`` de-chunked."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes


class Reader:
    """A read buffer over the TLS socket that can tell when it holds nothing unread.

    ``io.BufferedReader`` cannot say that without a blocking read, and an idle connection is
    handed back to the selector only when no request bytes are waiting anywhere.
    """

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = bytearray()

    @property
    def idle(self) -> bool:
        return not self.buf and self.sock.pending() == 0

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def readline(self, limit: int) -> bytes:
        start = 0
        while True:
            end = self.buf.find(b"\n", start, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self.buf) >= limit:
                return self._take(limit)
            start = len(self.buf)
            if not self._fill():
                return self._take(len(self.buf))

    def read(self, size: int) -> bytes:
        while len(self.buf) < size and self._fill():
            pass
        return self._take(min(size, len(self.buf)))

    def _take(self, size: int) -> bytes:
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out


def read_request(reader: Reader, tls: ssl.SSLSocket) -> Optional[Request]:
    """The next request on the connection (``None`` when the client closed it between
    requests); raises :class:`BadRequest` for what nginx would answer 400 to."""
    line = reader.readline(_MAX_LINE + 1)
    while line in (b"\r\n", b"\n"):  # RFC 9112: ignore blank lines before a request
        line = reader.readline(_MAX_LINE + 1)
    if not line:
        return None
    if len(line) > _MAX_LINE or not line.endswith(b"\n"):
        raise BadRequest
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        hline = reader.readline(_MAX_LINE + 1)
        if not hline or len(hline) > _MAX_LINE:
            raise BadRequest
        if hline in (b"\r\n", b"\n"):
            break
        name, sep, value = hline.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    else:
        raise BadRequest
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = 0
    if not chunked and "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise BadRequest from None
        if length < 0:
            raise BadRequest
    if headers.get("expect", "").lower() == "100-continue" and (chunked or length):
        tls.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = read_chunked(reader) if chunked else read_exact(reader, length)
    return Request(method, target, version, headers, body)


def read_exact(reader: Reader, length: int) -> bytes:
    data = reader.read(length) if length else b""
    if len(data) != length:
        raise OSError("connection closed inside the request body")
    return data


def read_chunked(reader: Reader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = reader.readline(_MAX_LINE + 1)
        if not size_line.endswith(b"\n"):
            raise BadRequest
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest from None
        if size == 0:
            break
        parts.append(read_exact(reader, size))
        if reader.readline(3) not in (b"\r\n", b"\n"):
            raise BadRequest
    while True:  # trailers, up to the final blank line
        trailer = reader.readline(_MAX_LINE + 1)
        if not trailer or trailer in (b"\r\n", b"\n"):
            break
    return b"".join(parts)


def json_response(
    status: int,
    content: object,
    *,
    close: bool,
    head: bool,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A docker-registry JSON response (compact JSON, the API version header)."""
    body = json.dumps(content, separators=(",", ":")).encode()
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Docker-Distribution-API-Version", "registry/2.0"),
        *extra,
    ]
    return raw_response(
        status, reason_phrase(status), body, headers=headers, close=close, head=head
    )


def nginx_response(
    status: int,
    reason: str,
    *,
    close: bool,
    head: bool = False,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """An nginx error response with its built-in page for ``status``."""
    page = nginx_error_page(status, reason)
    return raw_response(status, reason, page, headers=extra, nginx=True, close=close, head=head)


def raw_response(
    status: int,
    reason: str,
    body: bytes,
    *,
    headers: Sequence[tuple[str, str]] = (),
    nginx: bool = False,
    close: bool,
    head: bool,
) -> bytes:
    """A response's bytes (only the head for ``head``), with nginx's headers for ``nginx``."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    if nginx:
        lines.append("Server: nginx")
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    if nginx:
        lines.append("Content-Type: text/html")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close" if close else "Connection: keep-alive")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + body
