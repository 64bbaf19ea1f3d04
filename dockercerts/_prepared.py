"""What the requests adapter (:mod:`dockercerts.requests`) changes in a ``PreparedRequest``
while the flow sends it, and puts back: its body, sent again after a rejection only when it
can be (:class:`Body`), and, routed, its URL and headers (:class:`Home`). Imported only by
that module, after it checked that requests is installed."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

from requests.models import PreparedRequest

from .routing import Target, rewrite

__all__ = ["AS_IS", "Body", "Home", "Started"]


class Started:
    """A streamed body (an iterator, or a file that cannot seek), which can be sent again only
    while nothing of it was read; records the first read and passes the data through."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.started = False


class StartedIterator(Started):
    def __iter__(self) -> Any:
        for chunk in self.body:
            self.started = True
            yield chunk


class StartedFile(Started):
    def read(self, *args: Any) -> Any:
        data = self.body.read(*args)
        if data:
            self.started = True
        return data


class Body:
    """How a request's body goes out again after a rejection: bytes and text as they are, a
    file that can seek rewound to where requests found it, a stream only if nothing of it was
    read (the flow asks :meth:`replayable`). :meth:`of` gives the shared :data:`AS_IS` for a
    body sent as it is (none, bytes, text: most requests), which costs nothing."""

    __slots__ = ("original", "position", "request", "stream")

    def __init__(self, request: Optional[PreparedRequest] = None) -> None:
        self.request = request
        self.original: Any = None if request is None else request.body
        self.position: Optional[int] = None
        self.stream: Optional[Started] = None

    @classmethod
    def of(cls, request: PreparedRequest) -> Body:
        body = request.body
        if body is None or isinstance(body, (bytes, bytearray, str)):
            return AS_IS
        made = cls(request)
        position = getattr(request, "_body_position", None)  # requests' own, for redirects
        if hasattr(body, "read") and isinstance(position, int):
            made.position = position
        else:
            made.stream = StartedFile(body) if hasattr(body, "read") else StartedIterator(body)
            request.body = made.stream
        return made

    def replayable(self) -> bool:
        return self.stream is None or not self.stream.started

    def rewind(self) -> None:
        if self.position is not None:
            self.original.seek(self.position)

    def restore(self) -> None:
        if self.request is not None:
            self.request.body = self.original


AS_IS = Body()


class Home:
    """A request's own URL and headers, while routing points it at an endpoint: requests'
    side of :func:`dockercerts._aim.aim`; where it goes is :func:`~dockercerts.routing.rewrite`'s.

    The response keeps the endpoint's URL (``response.url``): a relative redirect from a
    mirror is resolved against the mirror, as containerd resolves it.
    """

    __slots__ = ("headers", "path", "query", "url")

    def __init__(self, request: PreparedRequest) -> None:
        self.url = request.url
        self.headers = request.headers
        # requests' URL is already percent-encoded: the raw path and query, as rewrite takes.
        parts = urlsplit(request.url or "")
        self.path, self.query = parts.path or "/", parts.query

    def aim(self, request: PreparedRequest, target: Optional[Target]) -> None:
        if target is None or target.identity:
            request.url, request.headers = self.url, self.headers
            return
        path, query = rewrite(target, self.path, self.query)
        request.url = f"{target.scheme}://{target.netloc}{path}{'?' + query if query else ''}"
        headers = self.headers.copy()
        if "Host" in headers:  # set by the caller for the registry; urllib3 sets it otherwise
            headers["Host"] = target.netloc
        for key, value in target.headers:
            # Added to the request's own, as Go's Header.Add: one field, values joined.
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request.headers = headers

    def restore(self, request: PreparedRequest) -> None:
        request.url, request.headers = self.url, self.headers
