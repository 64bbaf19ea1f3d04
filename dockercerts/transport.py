"""httpx transports that speak to each registry with its certs.d candidates, in Docker's order.

:class:`Transport` and :class:`AsyncTransport` are twins: every decision lives in the shared
classes above them (which directory, which candidate first, was it rejected, what changed on
disk); the two transports only send, await and close. Read one and you have read both.

For each request:

1. :class:`_Hosts` finds the host's :class:`_HostState` (the directory named as Docker names
   it, loaded once and re-checked at most every ``refresh`` seconds);
2. the state orders its candidates: the one that last worked first, then the rest in
   Docker's order;
3. each attempt goes through that candidate's own inner ``httpx`` transport (its own pool,
   so the winner's keep-alive connections are reused), traced so that a connection opened
   for the attempt is told apart from a reused one;
4. :class:`~dockercerts.rejection.RejectionPolicy` judges each failure or answer; the first
   one not rejected is returned and remembered.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import httpx

from .errors import Attempt, CertsDirError, ClientCertificateRejected
from .loader import Candidate, HostCerts, StrPath, load_dir
from .locate import _platform, certs_root, host_dir
from .rejection import DOCKER, RejectionPolicy
from .scan import Password, snapshot
from .trust import Trust

__all__ = ["AsyncTransport", "Transport", "docker_host_names"]

log = logging.getLogger("dockercerts")

Inner = TypeVar("Inner", httpx.HTTPTransport, httpx.AsyncHTTPTransport)

_MAX_PEEK = 64 * 1024  # nginx's 400 page is ~250 bytes; never buffer a real payload


def docker_host_names(url: httpx.URL) -> tuple[str, ...]:
    """The host directory names Docker could use for ``url``, in the order they are tried.

    httpx lower-cases host names, drops the default port and strips IPv6 brackets; this
    rebuilds Docker's spelling. For port 443 the bare host comes first, then ``host:443``
    (as nerdctl does): the reference ``reg:443/app`` has its own folder in Docker.

        >>> docker_host_names(httpx.URL("https://[::1]:5000/v2/"))
        ('[::1]:5000',)
        >>> docker_host_names(httpx.URL("https://Reg.Example.com/v2/"))
        ('reg.example.com', 'reg.example.com:443')
    """
    host = url.raw_host.decode("ascii")
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is None or port == 443:
        return (host, f"{host}:443")
    return (f"{host}:{port}",)


@dataclass(frozen=True)
class _Options:
    root: Path
    platform: str
    trust: Optional[Trust]
    password: Optional[Password]
    policy: RejectionPolicy
    refresh: float


def _identity(certs: HostCerts, candidate: Candidate) -> tuple[object, ...]:
    """What a candidate's context depends on: equal identities may share a pool."""
    anchors = hashlib.sha256(b"".join(certs.ca_certificates)).hexdigest()
    pair = candidate.pair
    if pair is None:
        return (certs.trust, certs.uses_system_roots, anchors)
    files = tuple(e for e in certs.snapshot.entries if e[0] in (pair.cert.name, pair.key.name))
    return (certs.trust, certs.uses_system_roots, anchors, pair.name, pair.fingerprint, files)


class _HostState(Generic[Inner]):
    """One registry host: its candidates, their inner transports and the winner. One lock.

    Requests read ``attempts`` without the lock: it is replaced, never mutated. The lock
    guards reloads and bookkeeping and is never held while waiting on the network.
    """

    def __init__(
        self, names: tuple[str, ...], options: _Options, make: Callable[[Candidate], Inner]
    ):
        self.names = names
        self._options = options
        self._make: Callable[[Candidate], Inner] = make
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._inner: dict[tuple[object, ...], Inner] = {}
        self._retired: list[Inner] = []
        self._warned = False
        self.certs: Optional[HostCerts] = None
        self.order: tuple[tuple[Candidate, Inner], ...] = ()
        self.attempts: tuple[tuple[Candidate, Inner], ...] = ()
        self.winner: Optional[str] = None

    def _directory(self) -> Path:
        dirs = [
            host_dir(name, root=self._options.root, platform=self._options.platform)
            for name in self.names
        ]
        return next((d for d in dirs if os.path.isdir(d)), dirs[0])

    def refresh(self) -> None:
        """Reload when ``refresh`` seconds have passed and the directory changed on disk."""
        now = time.monotonic()
        if now - self._checked < self._options.refresh:
            return
        with self._lock:
            if now - self._checked < self._options.refresh:
                return
            directory = self._directory()
            current = self.certs
            unchanged = (
                current is not None
                and current.directory == directory
                and snapshot(directory) == current.snapshot
            )
            if unchanged:
                # Back to the last good load (or never left it): a later break warns again.
                self._warned = False
            else:
                try:
                    self._install(self._load(directory))
                except CertsDirError as exc:
                    if current is None:
                        raise
                    if not self._warned:
                        self._warned = True
                        log.warning(
                            "%s changed and is now broken; still using the last good load: %s",
                            directory,
                            exc,
                        )
            self._checked = now

    def _load(self, directory: Path) -> HostCerts:
        certs = load_dir(
            directory,
            platform=self._options.platform,
            trust=self._options.trust,
            password=self._options.password,
        )
        self._warned = False
        return certs

    def _install(self, certs: HostCerts) -> None:
        """Swap in new candidates, keeping the pools of those whose files did not change."""
        before = (
            {} if self.certs is None else {c.name: _identity(self.certs, c) for c, _ in self.order}
        )
        kept: dict[tuple[object, ...], Inner] = {}
        order = []
        for candidate in certs.candidates():
            key = _identity(certs, candidate)
            inner = self._inner.get(key) or kept.get(key) or self._make(candidate)
            kept[key] = inner
            order.append((candidate, inner))
        self._retired.extend(t for k, t in self._inner.items() if k not in kept)
        after = {c.name: _identity(certs, c) for c, _ in order}
        if self.winner is not None and before.get(self.winner) != after.get(self.winner):
            log.info(
                "%s: %s changed; trying candidates in order again", certs.directory, self.winner
            )
            self.winner = None
        self._inner, self.certs, self.order = kept, certs, tuple(order)
        self._rank()
        log.debug("%s: candidates %s", certs.directory, [c.name for c, _ in order])

    def _rank(self) -> None:
        """Put the winner first, the others after it in Docker's order."""
        first = [item for item in self.order if item[0].name == self.winner]
        self.attempts = tuple(first + [item for item in self.order if item not in first])

    def settle(self, candidate: Candidate) -> None:
        """Remember ``candidate`` as the one to try first from now on."""
        if self.winner != candidate.name:
            with self._lock:
                log.info(
                    "%s: using client certificate %s", self.names[0], candidate.name or "(none)"
                )
                self.winner = candidate.name
                self._rank()

    def take_retired(self) -> list[Inner]:
        """Retired transports that no request uses any more, for the caller to close."""
        if not self._retired:
            return []
        with self._lock:
            idle = [t for t in self._retired if _is_idle(t)]
            self._retired = [t for t in self._retired if t not in idle]
        return idle

    def all_inner(self) -> list[Inner]:
        """Every inner transport, handed over for closing; the state is empty afterwards."""
        with self._lock:
            inner = list(self._inner.values()) + self._retired
            self._inner, self._retired = {}, []
            self.order = self.attempts = ()
            self.certs, self._checked = None, float("-inf")
        return inner


def _is_idle(inner: Union[httpx.HTTPTransport, httpx.AsyncHTTPTransport]) -> bool:
    pool = getattr(inner, "_pool", None)
    connections = getattr(pool, "connections", None)
    if connections is None:
        return False
    return all(c.is_idle() or c.is_closed() for c in connections)


class _Hosts(Generic[Inner]):
    """Host states by ``(host, port)``, least recently used evicted past ``max_hosts``."""

    def __init__(
        self, options: _Options, make: Callable[[Candidate], Inner], max_hosts: int
    ) -> None:
        if max_hosts < 1:
            raise ValueError("max_hosts must be >= 1")
        self._options = options
        self._make: Callable[[Candidate], Inner] = make
        self._max = max_hosts
        self._states: OrderedDict[tuple[bytes, Optional[int]], _HostState[Inner]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted: list[Inner] = []

    def get(self, url: httpx.URL) -> tuple[_HostState[Inner], tuple[tuple[Candidate, Inner], ...]]:
        """The host's state, refreshed, and the attempts to make for one request.

        The attempts are taken while the state is still registered: one evicted by another
        thread or task meanwhile hands its transports over for closing and is looked up again.
        """
        key = (url.raw_host, url.port)
        while True:
            with self._lock:
                state = self._states.get(key)
                if state is None:
                    state = _HostState(docker_host_names(url), self._options, self._make)
                    self._states[key] = state
                    while len(self._states) > self._max:
                        _, old = self._states.popitem(last=False)
                        self.evicted.extend(old.all_inner())
                else:
                    self._states.move_to_end(key)
            state.refresh()
            with self._lock:
                if self._states.get(key) is state:
                    return state, state.attempts
                self.evicted.extend(state.all_inner())

    def take_closable(self, state: _HostState[Inner]) -> list[Inner]:
        closable = state.take_retired()
        if self.evicted:
            with self._lock:
                idle = [t for t in self.evicted if _is_idle(t)]
                self.evicted = [t for t in self.evicted if t not in idle]
            closable.extend(idle)
        return closable

    def everything(self) -> list[Inner]:
        with self._lock:
            states = list(self._states.values())
            self._states.clear()
            inner, self.evicted = list(self.evicted), []
        for state in states:
            inner.extend(state.all_inner())
        return inner

    def winner(self, url: httpx.URL) -> Optional[str]:
        with self._lock:
            state = self._states.get((url.raw_host, url.port))
        return None if state is None else state.winner


class _Watch:
    """The ``trace`` extension for one attempt: did it open a connection, did bytes arrive?

    It forwards every event to the caller's own ``trace`` callback, if any.
    """

    __slots__ = ("fresh", "responded", "user")

    def __init__(self, user: Any) -> None:
        self.fresh = False
        self.responded = False
        self.user = user

    def note(self, name: str) -> None:
        if name == "connection.start_tls.complete":
            self.fresh = True
        elif name.endswith(".receive_response_headers.complete"):
            self.responded = True

    def sync(self, name: str, info: dict[str, Any]) -> None:
        self.note(name)
        if self.user is not None:
            self.user(name, info)

    async def asyncio(self, name: str, info: dict[str, Any]) -> None:
        self.note(name)
        if self.user is not None:
            await self.user(name, info)


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Decides whether a request body can be sent again after a rejection.

    Bytes can always be replayed. A stream can be replayed only while nothing of it has
    been read: this wrapper records the first read and passes the data through untouched.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.started = False
        self.replayable = isinstance(stream, httpx.ByteStream)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.started = True
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.started = True
            yield chunk

    def can_retry(self) -> bool:
        return self.replayable or not self.started


class _Tries:
    """One request across its attempts: the verdicts, the log lines, the final error."""

    def __init__(
        self,
        request: httpx.Request,
        state: _HostState[Any],
        policy: RejectionPolicy,
        body: _Body,
    ) -> None:
        self.request = request
        self.state = state
        self.policy = policy
        self.body = body
        self.attempts: list[Attempt] = []

    def _rejected(self, candidate: Candidate, reason: str, last: bool) -> None:
        self.attempts.append(Attempt(candidate.name, reason))
        log.info(
            "%s: client certificate %s rejected (%s)%s",
            self.state.names[0],
            candidate.name or "(none)",
            reason,
            "" if last else "; trying the next one",
        )
        if last and not self.body.can_retry():
            log.warning("%s: %s", self.state.names[0], _BODY_NOTE)

    def error(self, candidate: Candidate, exc: Exception, watch: _Watch, last: bool) -> bool:
        """True when ``exc`` rejects the candidate; False to let ``exc`` propagate as it is."""
        reason = self.policy.error_verdict(exc, fresh=watch.fresh, responded=watch.responded)
        if reason is None:
            return False
        self._rejected(candidate, reason, last)
        return True

    def response(
        self, candidate: Candidate, response: httpx.Response, body: bytes, last: bool
    ) -> bool:
        """True when ``response`` rejects the candidate; otherwise the candidate has won."""
        reason = self.policy.response_verdict(self.request, response, body)
        if reason is None:
            self.state.settle(candidate)
            return False
        self._rejected(candidate, reason, last)
        return True

    def give_up(self) -> ClientCertificateRejected:
        """The error for a request whose every attempt was rejected at the TLS level."""
        note = "" if self.body.can_retry() else _BODY_NOTE
        certs = self.state.certs
        directory = certs.directory if certs is not None else Path(self.state.names[0])
        return ClientCertificateRejected(
            directory, tuple(self.attempts), request=self.request, note=note
        )


_BODY_NOTE = "the request body was a stream already sent, so it could not be replayed"


def _peek_size(response: httpx.Response) -> bool:
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= _MAX_PEEK


def _options(
    root: Optional[StrPath],
    platform: Optional[str],
    trust: Optional[Trust],
    password: Optional[Password],
    policy: Union[RejectionPolicy, str],
    refresh: float,
) -> _Options:
    plat = _platform(platform)
    if refresh < 0:
        raise ValueError("refresh must be >= 0 seconds")
    return _Options(
        root=certs_root(platform=plat) if root is None else Path(root),
        platform=plat,
        trust=trust,
        password=password,
        policy=RejectionPolicy.preset(policy) if isinstance(policy, str) else policy,
        refresh=refresh,
    )


class Transport(httpx.BaseTransport):
    """An httpx transport that sends each HTTPS request with the host's certs.d candidates.

    Drop-in: every ``https://`` request uses the host directory of its ``host[:port]``
    under ``root`` (default: Docker's, :func:`~dockercerts.certs_root`). Candidates are tried
    in Docker's order; when the server rejects one (see
    :class:`~dockercerts.rejection.RejectionPolicy`) the same request is sent with the next.
    The one that works is remembered and tried first next time. ``http://`` requests go
    through a plain transport.

        >>> import httpx, dockercerts
        >>> with httpx.Client(transport=dockercerts.Transport()) as client:  # doctest: +SKIP
        ...     client.get("https://registry.example.com:5000/v2/")

    ``refresh`` is how often (seconds) a host directory is checked for changes; 0 checks on
    every request. ``max_hosts`` bounds how many hosts keep their pools. The remaining
    keyword arguments (``http2``, ``limits``, ``retries``, ``proxy``, ...) are passed to
    each inner :class:`httpx.HTTPTransport`.
    """

    def __init__(
        self,
        *,
        root: Optional[StrPath] = None,
        platform: Optional[str] = None,
        trust: Optional[Trust] = None,
        password: Optional[Password] = None,
        policy: Union[RejectionPolicy, str] = DOCKER,
        refresh: float = 1.0,
        max_hosts: int = 256,
        **transport_options: Any,
    ) -> None:
        self._options = _options(root, platform, trust, password, policy, refresh)
        self._transport_options = transport_options
        self._hosts: _Hosts[httpx.HTTPTransport] = _Hosts(self._options, self._make, max_hosts)
        self._plain = httpx.HTTPTransport(**transport_options)

    def _make(self, candidate: Candidate) -> httpx.HTTPTransport:
        return httpx.HTTPTransport(verify=candidate.context, **self._transport_options)

    def winner(self, url: Union[str, httpx.URL]) -> Optional[str]:
        """The name of the pair that last worked for ``url``'s host (``None``: none yet)."""
        return self._hosts.winner(httpx.URL(url))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return self._plain.handle_request(request)
        state, attempts = self._hosts.get(request.url)
        for inner in self._hosts.take_closable(state):
            inner.close()
        stream, extensions = request.stream, request.extensions
        body = _Body(stream)
        tries = _Tries(request, state, self._options.policy, body)
        if not body.replayable:
            request.stream = body
        try:
            for number, (candidate, inner) in enumerate(attempts, 1):
                watch = _Watch(extensions.get("trace"))
                request.extensions = {**extensions, "trace": watch.sync}
                try:
                    response = inner.handle_request(request)
                except Exception as exc:
                    last = number == len(attempts) or not body.can_retry()
                    if not tries.error(candidate, exc, watch, last):
                        raise
                    if last:
                        raise tries.give_up() from exc
                    continue
                peek = b""
                if tries.policy.needs_body(response) and _peek_size(response):
                    peek = b"".join(response.iter_raw())
                    response.close()
                    response = _replace_stream(response, peek)
                last = number == len(attempts) or not body.can_retry()
                if not tries.response(candidate, response, peek, last) or last:
                    return response
                response.close()
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            request.stream, request.extensions = stream, extensions

    def close(self) -> None:
        for inner in self._hosts.everything():
            inner.close()
        self._plain.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`Transport`: same options, same behaviour, awaited.

    >>> import httpx, dockercerts
    >>> async def main():  # doctest: +SKIP
    ...     async with httpx.AsyncClient(transport=dockercerts.AsyncTransport()) as client:
    ...         await client.get("https://registry.example.com:5000/v2/")
    """

    def __init__(
        self,
        *,
        root: Optional[StrPath] = None,
        platform: Optional[str] = None,
        trust: Optional[Trust] = None,
        password: Optional[Password] = None,
        policy: Union[RejectionPolicy, str] = DOCKER,
        refresh: float = 1.0,
        max_hosts: int = 256,
        **transport_options: Any,
    ) -> None:
        self._options = _options(root, platform, trust, password, policy, refresh)
        self._transport_options = transport_options
        self._hosts: _Hosts[httpx.AsyncHTTPTransport] = _Hosts(self._options, self._make, max_hosts)
        self._plain = httpx.AsyncHTTPTransport(**transport_options)

    def _make(self, candidate: Candidate) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=candidate.context, **self._transport_options)

    def winner(self, url: Union[str, httpx.URL]) -> Optional[str]:
        """The name of the pair that last worked for ``url``'s host (``None``: none yet)."""
        return self._hosts.winner(httpx.URL(url))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return await self._plain.handle_async_request(request)
        state, attempts = self._hosts.get(request.url)
        for inner in self._hosts.take_closable(state):
            await inner.aclose()
        stream, extensions = request.stream, request.extensions
        body = _Body(stream)
        tries = _Tries(request, state, self._options.policy, body)
        if not body.replayable:
            request.stream = body
        try:
            for number, (candidate, inner) in enumerate(attempts, 1):
                watch = _Watch(extensions.get("trace"))
                request.extensions = {**extensions, "trace": watch.asyncio}
                try:
                    response = await inner.handle_async_request(request)
                except Exception as exc:
                    last = number == len(attempts) or not body.can_retry()
                    if not tries.error(candidate, exc, watch, last):
                        raise
                    if last:
                        raise tries.give_up() from exc
                    continue
                peek = b""
                if tries.policy.needs_body(response) and _peek_size(response):
                    peek = b"".join([chunk async for chunk in response.aiter_raw()])
                    await response.aclose()
                    response = _replace_stream(response, peek)
                last = number == len(attempts) or not body.can_retry()
                if not tries.response(candidate, response, peek, last) or last:
                    return response
                await response.aclose()
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            request.stream, request.extensions = stream, extensions

    async def aclose(self) -> None:
        for inner in self._hosts.everything():
            await inner.aclose()
        await self._plain.aclose()


def _replace_stream(response: httpx.Response, raw: bytes) -> httpx.Response:
    """The same response with its (already read) raw body held in memory."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=response.extensions,
    )
