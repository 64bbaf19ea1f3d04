"""Pointing an httpx request at a containerd endpoint, and back: what the httpx front ends do
with :func:`dockercerts.routing.rewrite`'s result. The decisions (which endpoint, when) are
the flow's; this only rewrites the request's URL and headers, and restores them."""

from __future__ import annotations

from typing import Optional

import httpx

from .routing import Target, rewrite

__all__ = ["Home", "aim"]

try:  # httpx's parsed URL, for routing's rewrite (see moved); absent: the public way
    from httpx._urlparse import ParseResult as _ParseResult
except ImportError:  # pragma: no cover - another httpx
    _ParseResult = None  # type: ignore[assignment,misc]


def aim(request: httpx.Request, target: Optional[Target], home: Optional[Home]) -> None:
    """Point ``request`` at ``target`` (:func:`~dockercerts.routing.rewrite`), from its own
    URL and headers (``home``, put back by :meth:`Home.restore` when the exchange ends;
    ``None`` when the host routes nothing: then neither is ever changed)."""
    if home is None:
        return
    if target is None or target.identity:
        if request.url is not home.url:
            home.restore(request)
        return
    path, query = rewrite(target, home.path, home.query)
    request.url = moved(home.url, target, path, query)
    request.headers = headed(home.headers, target)


def headed(headers: httpx.Headers, target: Target) -> httpx.Headers:
    """The request's own ``headers`` for ``target``: ``Host`` is the endpoint's, and its
    ``[header]`` values are added to the request's own (Go's ``Header.Add``).

    Built from httpx's header list when it has one: ``Headers.copy()`` and a ``Host``
    assignment re-encode every header (~1.5 µs, half the routing's cost); the list is the
    same items with the ``Host`` one replaced. Other httpx versions go the public way.
    """
    items = getattr(headers, "_list", None)
    if isinstance(items, list) and target.netloc_ascii is not None:
        host = (b"Host", b"host", target.netloc_ascii)
        listed = list(items)
        for index, item in enumerate(listed):
            if item[1] == b"host":  # first in the requests httpx builds: found at once
                listed[index] = host
                break
        else:
            listed.insert(0, host)
        moved = httpx.Headers.__new__(httpx.Headers)
        moved._list = listed
        moved._encoding = None
    else:
        moved = headers.copy()
        moved["Host"] = target.netloc
    if target.headers:
        moved = httpx.Headers([*moved.multi_items(), *target.headers])
    return moved


def moved(url: httpx.URL, target: Target, path: str, query: str) -> httpx.URL:
    """``url`` sent to ``target`` with ``path`` and ``query``.

    Built from httpx's parsed parts when it has them: every part was checked already (the
    request's path and query by httpx, the endpoint by the hosts.toml parser, ``ns`` is
    quoted), and parsing the whole URL again costs ~30 µs for a digest's path, ten times
    the rest of the routing. Other httpx versions, or a non-ASCII host, go the public way.
    """
    parts = getattr(url, "_uri_reference", None)
    if _ParseResult is not None and parts is not None and target.netloc_ascii is not None:
        moved = httpx.URL.__new__(httpx.URL)
        # tuple.__new__: a NamedTuple's own __new__ is Python code, this is its C core.
        moved._uri_reference = tuple.__new__(
            _ParseResult,
            (
                target.scheme,
                parts.userinfo,
                target.host,
                target.port,
                path,
                query or None,
                parts.fragment,
            ),
        )
        return moved
    return url.copy_with(
        scheme=target.scheme,
        host=target.host,
        port=target.port,
        raw_path=(path + "?" + query if query else path).encode("ascii"),
    )


class Home:
    """A request's own URL and headers, while routing points it elsewhere; its raw path
    and query (percent-encoded, as sent), which routing reads and rewrites."""

    __slots__ = ("headers", "path", "query", "url")

    def __init__(self, request: httpx.Request) -> None:
        url = self.url = request.url
        self.headers = request.headers
        parts = getattr(url, "_uri_reference", None)  # httpx's parsed URL: see moved
        if _ParseResult is not None and parts is not None:
            self.path, self.query = parts.path or "/", parts.query or ""
        else:
            self.path, _, self.query = url.raw_path.decode("ascii").partition("?")

    def restore(self, request: httpx.Request) -> None:
        request.url, request.headers = self.url, self.headers
