"""What the requests adapter (:mod:`dockercerts.requests`) changes in a ``PreparedRequest``
while the flow sends it, and puts back: its body, sent again after a rejection only when it
can be (:class:`Body`), and, routed, its URL and headers (:class:`Home`), which also says
which proxies each endpoint is sent through (:func:`endpoint_proxies`). Imported only by that
module, after it checked that requests is installed."""

from __future__ import annotations

import os
import urllib.request
from typing import Any, Optional
from urllib.parse import urlsplit

from requests.models import PreparedRequest
from requests.utils import get_environ_proxies, resolve_proxies

from .routing import Target, rewrite

__all__ = ["AS_IS", "Body", "EndpointProxies", "Home", "Started", "endpoint_proxies"]

Proxies = dict[str, str]


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


def endpoint_proxies(
    request: PreparedRequest, own_url: str, proxies: Optional[Proxies], trust_env: bool
) -> Proxies:
    """The proxies for ``request``, aimed at another URL than ``own_url``, for which requests
    chose ``proxies``: requests' rules for a URL that changed (``Session.rebuild_proxies``),
    the environment's entries for ``own_url`` taken out first.

    requests adds the environment's proxies (``HTTPS_PROXY``...) to ``proxies`` when
    ``own_url`` is not in ``NO_PROXY`` (the variable, or ``proxies["no_proxy"]``), and only
    when the session trusts the environment; its redirects keep them even where ``NO_PROXY``
    says otherwise (psf/requests#4914). Here they are recomputed for the endpoint: the
    entries requests would have added for ``own_url`` are dropped, and
    :func:`requests.utils.resolve_proxies` adds the environment's for ``request.url`` unless
    ``NO_PROXY`` names it. What is left of ``proxies`` (``proxies=``, the session's
    ``proxies``) keeps winning, for every endpoint, as it does in requests; an explicit entry
    equal to the environment's own is taken for the environment's.
    """
    given = proxies or {}
    if not trust_env:  # nothing came from the environment, nothing will
        return given
    added = get_environ_proxies(own_url, no_proxy=given.get("no_proxy"))
    if added:
        # Session.request adds every variable (setdefault); Session.send only the scheme's,
        # ALL_PROXY's value under the scheme when that is the one set.
        scheme = own_url.partition(":")[0].lower()
        for_scheme = added.get(scheme, added.get("all"))
        given = {
            key: value
            for key, value in given.items()
            if value != added.get(key) and not (key == scheme and value == for_scheme)
        }
    return resolve_proxies(request, given, trust_env)


# What endpoint_proxies reads of the environment where urllib reads proxies from the
# environment only (not macOS, not Windows, which add the system's settings): the variables
# of the schemes a registry request uses, ALL_PROXY, NO_PROXY (each spelling requests and
# urllib read) and REQUEST_METHOD, which makes urllib forget HTTP_PROXY. A mixed-case
# spelling (Https_Proxy), which urllib reads too, is not watched.
_ENVIRONMENT_ONLY = urllib.request.getproxies is urllib.request.getproxies_environment
_VARIABLES = (
    *("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"),
    *("all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY", "REQUEST_METHOD"),
)


class EndpointProxies:
    """:func:`endpoint_proxies` per endpoint, remembered (up to ``size`` entries) for as long
    as what it depends on is the same: the request's own origin, the endpoint, requests'
    ``proxies`` and the environment's proxy variables (read at each request, as requests
    reads them). Where urllib also reads the system's settings, nothing is remembered."""

    __slots__ = ("known", "size")

    def __init__(self, size: int) -> None:
        self.known: dict[tuple[Any, ...], Proxies] = {}
        self.size = size

    def get(
        self,
        request: PreparedRequest,
        own_url: str,
        target: Target,
        proxies: Optional[Proxies],
        trust_env: bool,
    ) -> Proxies:
        if not trust_env:
            return proxies or {}
        if not _ENVIRONMENT_ONLY:
            return endpoint_proxies(request, own_url, proxies, trust_env)
        try:
            key = (
                "/".join(own_url.split("/", 3)[:3]),  # scheme://netloc
                target.name,
                tuple(proxies.items()) if proxies else (),
                tuple(map(os.environ.get, _VARIABLES)),
            )
            found = self.known.get(key)
        except TypeError:  # a value that cannot be a key: not remembered
            return endpoint_proxies(request, own_url, proxies, trust_env)
        if found is None:
            found = endpoint_proxies(request, own_url, proxies, trust_env)
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[key] = found
        return found


class Home:
    """A request's own URL and headers, while routing points it at an endpoint: requests'
    side of :func:`dockercerts._aim.aim`; where it goes is :func:`~dockercerts.routing.rewrite`'s.

    :meth:`aim` gives back the proxies for the endpoint: ``proxies`` (requests' choice for
    the request's own URL) at the registry itself, :func:`endpoint_proxies` elsewhere (from
    the adapter's :class:`EndpointProxies`).

    The response keeps the endpoint's URL (``response.url``): a relative redirect from a
    mirror is resolved against the mirror, as containerd resolves it.
    """

    __slots__ = ("ends", "headers", "path", "proxies", "query", "trust_env", "url")

    def __init__(
        self,
        request: PreparedRequest,
        proxies: Optional[Proxies],
        trust_env: bool,
        ends: EndpointProxies,
    ) -> None:
        self.url = request.url
        self.headers = request.headers
        # requests' URL is already percent-encoded: the raw path and query, as rewrite takes.
        parts = urlsplit(request.url or "")
        self.path, self.query = parts.path or "/", parts.query
        self.proxies, self.trust_env, self.ends = proxies, trust_env, ends

    def aim(self, request: PreparedRequest, target: Optional[Target]) -> Optional[Proxies]:
        """Point ``request`` at ``target`` (``None``: its own URL); the proxies to send it
        through there."""
        if target is None or target.identity:
            request.url, request.headers = self.url, self.headers
            return self.proxies
        path, query = rewrite(target, self.path, self.query)
        request.url = f"{target.scheme}://{target.netloc}{path}{'?' + query if query else ''}"
        headers = self.headers.copy()
        if "Host" in headers:  # set by the caller for the registry; urllib3 sets it otherwise
            headers["Host"] = target.netloc
        for key, value in target.headers:
            # Added to the request's own, as Go's Header.Add: one field, values joined.
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request.headers = headers
        return self.ends.get(request, self.url or "", target, self.proxies, self.trust_env)

    def restore(self, request: PreparedRequest) -> None:
        request.url, request.headers = self.url, self.headers
