"""containerd's routing of a registry request over its ``hosts.toml`` endpoints, as pure
functions (no sockets, no files, no state).

containerd (``core/remotes/docker/resolver.go``) sends an operation to the endpoints that
have its capability, the ``[host]`` tables in file order, then ``server``. This module says
which operation a request is (:func:`operation`), how a request is rewritten for an endpoint
(:class:`Target`, :func:`rewrite`), in which order the endpoints are walked
(:func:`walk_order`) and how an endpoint's failure ranks against another's (:func:`rank`).
:mod:`dockercerts.flow` takes the walk's decisions with them; the transports apply
:func:`rewrite`'s result to the request they send.

The operation of a request (:func:`operation`):

=====================================================  ===========  ===========================
request                                                operation    endpoints used
=====================================================  ===========  ===========================
``GET``/``HEAD /v2/<name>/manifests/<tag>``            resolve      ``pull`` **and** ``resolve``
``GET``/``HEAD /v2/<name>/manifests/<digest>``         pull         ``pull``
``GET``/``HEAD /v2/<name>/blobs/<digest>``             pull         ``pull``
``GET``/``HEAD /v2/<name>/referrers/<digest>``         referrers    ``referrers``
anything else (uploads, ``PUT``, ``DELETE``, tags      push         ``push`` (normally only
list, catalog, the ``/v2/`` ping)                                   ``server``)
=====================================================  ===========  ===========================

containerd filters hosts with ``Capabilities.Has(caps)``: every bit asked for, so a tag is
resolved only at endpoints with both ``pull`` and ``resolve``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, TypeVar
from urllib.parse import parse_qsl, quote_plus, urlencode

from .hoststoml import HUB, HUB_HOST, Endpoint
from .locate import split_port

__all__ = [
    "NEEDS",
    "Target",
    "operation",
    "rank",
    "rewrite",
    "target",
    "walk_order",
]

#: The capabilities an endpoint needs for each operation.
NEEDS: dict[str, frozenset[str]] = {
    "resolve": frozenset(("pull", "resolve")),
    "pull": frozenset(("pull",)),
    "referrers": frozenset(("referrers",)),
    "push": frozenset(("push",)),
}

# ``<name>`` may hold slashes; the last segment is the tag or digest, the one before it the
# kind of object. Read from the end with string operations: a regular expression over the
# whole path (``/v2/.+/(manifests|blobs|referrers)/[^/]+``) backtracks along the name and
# costs a third more, for every routed request.
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_KINDS = {"manifests": "resolve", "blobs": "pull", "referrers": "referrers"}


def operation(method: str, path: str) -> str:
    """The operation containerd would do for a request: ``"resolve"``, ``"pull"``,
    ``"referrers"`` or ``"push"`` (see the module's table).

        >>> operation("GET", "/v2/library/alpine/manifests/3.20")
        'resolve'
        >>> operation("HEAD", "/v2/library/alpine/blobs/sha256:abc")
        'pull'
        >>> operation("PUT", "/v2/library/alpine/manifests/3.20")
        'push'
    """
    if method not in ("GET", "HEAD"):
        return "push"
    head, _, reference = path.rpartition("/")
    name, _, kind = head.rpartition("/")
    found = _KINDS.get(kind)
    # ``name`` is "/v2/<name>", a name of one character at least.
    if found is None or not reference or len(name) < 5 or not name.startswith("/v2/"):
        return "push"
    if found == "resolve" and _DIGEST.fullmatch(reference):
        return "pull"  # a manifest by digest
    return found


@dataclass(frozen=True)
class Target:
    """One endpoint as a request to ``registry`` is rewritten for it.

    ``name`` is the endpoint's URL as containerd requests it (``https://mirror:5000/v2``);
    ``prefix`` replaces the request's ``/v2`` (the endpoint's path: ``override_path``
    makes it the whole API root); ``ns`` is the ``?ns=`` value, ``None`` at the registry
    itself; ``headers`` are the ``[header]`` values, added to the request's. ``identity``:
    the request goes out unchanged (the registry itself at ``/v2``, no header).
    """

    name: str
    scheme: str
    host: str
    port: Optional[int]
    netloc: str
    prefix: str
    ns: Optional[str]
    #: ``ns=<registry>`` quoted, the whole query of a request without one (the usual case).
    ns_query: str
    headers: tuple[tuple[str, str], ...]
    capabilities: frozenset[str]
    identity: bool
    #: ``netloc`` as ASCII bytes, as a ``Host`` header carries it; ``None`` for an IDNA host
    #: (then a request is rewritten the slower, public way). Read for every routed request.
    netloc_ascii: Optional[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ascii_ = self.netloc.encode("ascii") if self.netloc.isascii() else None
        object.__setattr__(self, "netloc_ascii", ascii_)


def _is_proxy(endpoint_host: str, registry: str) -> bool:
    """containerd's ``RegistryHost.isProxy``: the endpoint is not the registry itself
    (``registry-1.docker.io`` is ``docker.io``)."""
    return endpoint_host != registry and not (registry == HUB and endpoint_host == HUB_HOST)


def target(endpoint: Endpoint, registry: str, request_netloc: str) -> Target:
    """``endpoint`` of ``registry``'s folder as :func:`rewrite` uses it; ``request_netloc``
    is the request's own ``host[:port]`` (to tell when nothing changes)."""
    name, port_text = split_port(endpoint.host)
    port = int(port_text) if port_text and port_text.isdigit() else None
    if port is not None and port == (443 if endpoint.scheme == "https" else 80):
        port = None
    host = name.strip("[]").lower()
    ns = registry if _is_proxy(endpoint.host, registry) else None
    headers = tuple((key, value) for key, values in endpoint.header for value in values)
    netloc = endpoint.host if port is not None else name
    home = netloc.lower() == request_netloc.lower()
    # An http:// endpoint at the request's own host (containerd's default for a loopback
    # registry on a port) is tried over HTTPS first by containerd; the request is HTTPS.
    scheme = "https" if home else endpoint.scheme
    identity = home and endpoint.path == "/v2" and ns is None and not headers
    return Target(
        name=endpoint.url,
        scheme=scheme,
        host=host,
        port=port,
        netloc=netloc,
        prefix=endpoint.path,
        ns=ns,
        ns_query="" if ns is None else "ns=" + quote_plus(ns),
        headers=headers,
        capabilities=frozenset(endpoint.capabilities),
        identity=identity,
    )


def rewrite(aim: Target, path: str, query: str) -> tuple[str, str]:
    """The path and query a request with ``path`` and ``query`` (without ``?``) is sent
    with to ``aim``: the endpoint's path in place of ``/v2``, and ``ns=<registry>`` added
    to the query when the endpoint is not the registry (containerd's ``addNamespace``:
    the query re-encoded, keys sorted, as Go's ``url.Values.Encode``).

        >>> from dockercerts.hoststoml import Endpoint
        >>> mirror = Endpoint("m", "https", "m:5000", "/cache/v2")
        >>> rewrite(target(mirror, "docker.io", "registry-1.docker.io"), "/v2/a/blobs/x", "")
        ('/cache/v2/a/blobs/x', 'ns=docker.io')
    """
    if path == "/v2" or path.startswith("/v2/"):
        path = aim.prefix + path[3:]
    if aim.ns is None:
        return path, query
    if not query:
        return path, aim.ns_query
    pairs = [*parse_qsl(query, keep_blank_values=True), ("ns", aim.ns)]
    pairs.sort(key=lambda pair: pair[0])  # stable: the values of one key keep their order
    return path, urlencode(pairs)


T = TypeVar("T")


def walk_order(route: Sequence[tuple[Target, T]], sticky: Optional[str]) -> tuple[int, ...]:
    """The positions in ``route`` to try, in order: from the endpoint that answered last for
    this operation (``sticky``, its name, while it is remembered), then those after it, then
    those before it (they failed less than ``recheck`` seconds ago: tried last, not dropped).

        >>> m = Endpoint("m", "https", "m", "/v2")
        >>> s = Endpoint("", "https", "reg", "/v2")
        >>> route = [(target(m, "reg", "reg"), 0), (target(s, "reg", "reg"), 1)]
        >>> walk_order(route, None), walk_order(route, "https://reg/v2")
        ((0, 1), (1, 0))
    """
    count = len(route)
    start = 0
    if sticky is not None:
        start = next((i for i, (aim, _) in enumerate(route) if aim.name == sticky), 0)
    return tuple((start + step) % count for step in range(count))


# How useful an endpoint's failure is when every endpoint failed (higher is better): a TLS
# failure or transport error < a certificate page (says nothing about the image) < 404 <
# any other status > 399. containerd ranks transport < 404 < other; the certificate page
# is the flow's own rank between the TLS failure and an answer.
TRANSPORT, PAGE, NOT_FOUND, STATUS = 0, 1, 2, 3


def rank(status: Optional[int], certificate_page: bool) -> int:
    """The rank of an endpoint's failure: ``status`` ``None`` for no answer (a transport
    error, or every certificate refused in TLS)."""
    if status is None:
        return TRANSPORT
    if certificate_page:
        return PAGE
    return NOT_FOUND if status == 404 else STATUS
