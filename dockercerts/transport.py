"""httpx transports that speak to each registry with its certs.d candidates, in Docker's order.

:class:`Transport` and :class:`AsyncTransport` are twins: every decision lives in the shared
classes above them (which directory, which candidate first, was it rejected, what changed on
disk); the two transports only send, await and close. Read one and you have read both.

For each request:

1. :class:`_Hosts` finds the host's :class:`_HostState` (the directory named as Docker names
   it, loaded once and re-checked at most every ``refresh`` seconds);
2. the state orders its candidates: the one that last worked first, then the rest in
   Docker's order;
3. each attempt goes through that candidate's own inner ``httpx`` transport (a
   :class:`_Slot`: built on first use, its own pool, so the winner's keep-alive connections
   are reused), watched at the ``ssl`` layer (:mod:`dockercerts._watch`) so that a
   connection opened for the attempt is told apart from a reused one;
4. :class:`~dockercerts.rejection.RejectionPolicy` judges each failure or answer; the first
   one not rejected is returned and remembered.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar, Union

import anyio
import httpx

from ._watch import Watch, watched
from .errors import Attempt, CertsDirError, ClientCertificateRejected
from .loader import Candidate, HostCerts, StrPath, _read_dir
from .locate import _platform, certs_root, host_dir
from .rejection import DOCKER, RejectionPolicy
from .scan import Password, snapshot
from .trust import Trust

__all__ = ["AsyncTransport", "Transport", "docker_host_names", "host_dir_for_url"]

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


def host_dir_for_url(
    url: Union[str, httpx.URL],
    *,
    root: Optional[StrPath] = None,
    platform: Optional[str] = None,
) -> Path:
    """The host directory the transport reads for ``url``: the first of
    :func:`docker_host_names` that exists under ``root``, else the first one.

        >>> host_dir_for_url("https://reg:5000/v2/", root="/etc/docker/certs.d").name
        'reg:5000'
    """
    plat = _platform(platform)
    base = certs_root(platform=plat) if root is None else Path(root)
    return _first_dir(_host_dirs(docker_host_names(httpx.URL(url)), base, plat))


def _host_dirs(names: tuple[str, ...], root: Path, platform: str) -> tuple[Path, ...]:
    return tuple(host_dir(name, root=root, platform=platform) for name in names)


def _first_dir(dirs: tuple[Path, ...]) -> Path:
    """The first of ``dirs`` that is a folder, else the first one."""
    if len(dirs) == 1:
        return dirs[0]
    return next((d for d in dirs if os.path.isdir(d)), dirs[0])


@dataclass(frozen=True)
class _Options:
    root: Path
    platform: str
    trust: Optional[Trust]
    password: Optional[Password] = field(repr=False)
    policy: RejectionPolicy
    refresh: float


def _identity(
    trust: tuple[object, ...], certs: HostCerts, candidate: Candidate
) -> tuple[object, ...]:
    """What a candidate's context depends on: equal identities may share a pool.

    ``trust`` is the part all of a folder's candidates share (see :func:`_trust_identity`).
    """
    pair = candidate.pair
    if pair is None:
        return trust
    files = tuple(e for e in certs.snapshot.entries if e[0] in (pair.cert.name, pair.key.name))
    return (*trust, pair.name, pair.fingerprint, files)


def _trust_identity(certs: HostCerts) -> tuple[object, ...]:
    anchors = hashlib.sha256(b"".join(certs.ca_certificates)).hexdigest()
    return (certs.trust, certs.uses_system_roots, anchors)


class _Slot(Generic[Inner]):
    """One candidate's inner transport: built on first use, closed once retired and unused.

    ``acquire`` and ``release`` count the requests (and open responses) using it, so a
    transport retired by a reload or an eviction is closed by whoever leaves it last, never
    under a request that is still running.

    The count is a list of tokens, not an integer under the lock: ``list.append`` and
    ``list.pop`` are atomic, so the common path (a live slot) takes no lock. The order makes
    it safe: a user appends its token *before* reading ``_inner``, and ``_take_if_done``
    empties ``_inner`` *before* looking at the tokens (putting it back if it sees one), so a
    user either is seen and keeps the transport, or reads ``None`` and waits for the lock.
    """

    __slots__ = ("_inner", "_lock", "_make", "_retired", "_users", "candidate", "key")

    def __init__(
        self, candidate: Candidate, key: tuple[object, ...], make: Callable[[Candidate], Inner]
    ) -> None:
        self.candidate = candidate
        self.key = key
        self._make: Callable[[Candidate], Inner] = make
        self._inner: Optional[Inner] = None
        self._lock = threading.Lock()
        self._users: list[None] = []
        self._retired = False

    def acquire(self) -> Inner:
        self._users.append(None)
        inner = self._inner
        if inner is not None:
            return inner
        with self._lock:
            if self._inner is None:
                try:
                    self._inner = self._make(self.candidate)
                except BaseException:
                    self._users.pop()
                    raise
            return self._inner

    def release(self) -> Optional[Inner]:
        """Drop one user; returns the transport for the caller to close when it was the last."""
        self._users.pop()
        if not self._retired:
            return None
        with self._lock:
            return self._take_if_done()

    def retire(self) -> Optional[Inner]:
        """No new request will pick this slot; returns the transport if nobody uses it."""
        with self._lock:
            self._retired = True
            return self._take_if_done()

    def _take_if_done(self) -> Optional[Inner]:
        inner, self._inner = self._inner, None
        if self._users:  # someone is (or is about to be) using it: put it back
            self._inner = inner
            return None
        return inner


class _HostState(Generic[Inner]):
    """One registry host: its candidates' slots and the winner. One lock.

    Requests read ``attempts`` without the lock: it is replaced, never mutated. The lock
    guards reloads and bookkeeping and is never held while waiting on the network.
    """

    def __init__(
        self, names: tuple[str, ...], options: _Options, make: Callable[[Candidate], Inner]
    ) -> None:
        self.names = names
        self._options = options
        # Named once (a hostile name raises here, before any file is touched); which of them
        # exists is looked up at every check, since folders come and go.
        self._dirs = _host_dirs(names, options.root, options.platform)
        self._make: Callable[[Candidate], Inner] = make
        self._lock = threading.Lock()
        self.due = float("-inf")  # when to look at the directory again
        self._broken_since: Optional[str] = None
        self._said: set[tuple[str, str]] = set()
        self.certs: Optional[HostCerts] = None
        self.slots: tuple[_Slot[Inner], ...] = ()
        self.attempts: tuple[_Slot[Inner], ...] = ()
        self.winner: Optional[str] = None
        self.closable: list[Inner] = []
        self.evicted = False
        self.used = 0.0

    def _directory(self) -> Path:
        return _first_dir(self._dirs)

    def refresh(self, now: float) -> None:
        """Reload when ``due`` has come and the directory changed on disk."""
        with self._lock:
            if now < self.due:
                return
            directory = self._directory()
            current = self.certs
            if (
                current is not None
                and current.directory == directory
                and snapshot(directory) == current.snapshot
            ):
                self._broken_since = None
            else:
                self._reload(directory, current)
            self.due = now + self._options.refresh

    def _reload(self, directory: Path, current: Optional[HostCerts]) -> None:
        try:
            certs = _read_dir(
                directory,
                platform=self._options.platform,
                trust=self._options.trust,
                password=self._options.password,
            )
        except CertsDirError as exc:
            if current is None:
                raise
            # A string, not the exception: a kept log record must not keep its traceback
            # alive, whose frames hold key bytes and the whole client.
            message = str(exc)
            if self._broken_since != message:
                self._broken_since = message
                log.warning(
                    "%s changed and is now broken; still using the last good load: %s",
                    directory,
                    message,
                )
            return
        self._broken_since = None
        for warning in certs.warnings:
            # Reloads (a Kubernetes rotation, say) must not repeat the same warning.
            if (warning.code, str(warning.path)) not in self._said:
                self._said.add((warning.code, str(warning.path)))
                log.warning("%s: %s", directory, warning)
        self._install(certs)

    def _install(self, certs: HostCerts) -> None:
        """Swap in new candidates, keeping the slots of those whose files did not change."""
        old = {slot.key: slot for slot in self.slots}
        before = {slot.candidate.name: slot.key for slot in self.slots}
        slots = []
        trust = _trust_identity(certs)  # hashed once for all the candidates
        for candidate in certs.candidates():
            key = _identity(trust, certs, candidate)
            slot = old.pop(key, None) or _Slot(candidate, key, self._make)
            slots.append(slot)
        for slot in old.values():
            self._retire(slot)
        after = {slot.candidate.name: slot.key for slot in slots}
        if self.winner is not None and before.get(self.winner) != after.get(self.winner):
            log.info(
                "%s: %s changed; trying candidates in order again", certs.directory, self.winner
            )
            self.winner = None
        self.certs, self.slots = certs, tuple(slots)
        self._rank()
        log.debug("%s: candidates %s", certs.directory, [s.candidate.name for s in slots])

    def _retire(self, slot: _Slot[Inner]) -> None:
        inner = slot.retire()
        if inner is not None:
            self.closable.append(inner)

    def _rank(self) -> None:
        """Put the winner first, the others after it in Docker's order."""
        first = [slot for slot in self.slots if slot.candidate.name == self.winner]
        self.attempts = tuple(first + [slot for slot in self.slots if slot not in first])

    def settle(self, candidate: Candidate) -> None:
        """Remember ``candidate`` as the one to try first from now on."""
        if self.winner != candidate.name:
            with self._lock:
                log.info(
                    "%s: using client certificate %s", self.names[0], candidate.name or "(none)"
                )
                self.winner = candidate.name
                self._rank()

    def drain(self) -> list[Inner]:
        """Transports retired and unused, for the caller to close (in its own sync/async way)."""
        if not self.closable:
            return []
        with self._lock:
            done, self.closable = self.closable, []
        return done

    def retire_all(self) -> list[Inner]:
        """Retire every slot (eviction, close); returns what can be closed at once."""
        with self._lock:
            self.evicted = True
            for slot in self.slots:
                self._retire(slot)
            self.slots = self.attempts = ()
            self.certs, self.due = None, float("-inf")
            done, self.closable = self.closable, []
        return done


class _Hosts(Generic[Inner]):
    """Host states by ``(host, port)``; past ``max_hosts`` the least recently used is evicted.

    Lookups take no lock: a dict read is atomic, and only inserts (rare) need the lock.
    """

    def __init__(
        self, options: _Options, make: Callable[[Candidate], Inner], max_hosts: int
    ) -> None:
        if max_hosts < 1:
            raise ValueError("max_hosts must be >= 1")
        self._options = options
        self._make: Callable[[Candidate], Inner] = make
        self._max = max_hosts
        self._states: dict[tuple[bytes, Optional[int]], _HostState[Inner]] = {}
        self._lock = threading.Lock()
        self.closable: list[Inner] = []

    def get(self, url: httpx.URL) -> tuple[_HostState[Inner], tuple[_Slot[Inner], ...]]:
        """The host's state, refreshed, and the slots to try for one request, in order."""
        key = (url.raw_host, url.port)
        now = time.monotonic()
        while True:
            state = self._states.get(key)
            if state is None or state.evicted:
                state = self._insert(key, url, now)
            state.used = now
            if now >= state.due:
                state.refresh(now)
            attempts = state.attempts
            # Evicted meanwhile by another thread: its slots are retired; look up again.
            if not state.evicted:
                return state, attempts

    def _insert(
        self, key: tuple[bytes, Optional[int]], url: httpx.URL, now: float
    ) -> _HostState[Inner]:
        with self._lock:
            state = self._states.get(key)
            if state is not None and not state.evicted:
                return state
            # First: a name that is no registry host raises here and evicts nobody.
            state = _HostState(docker_host_names(url), self._options, self._make)
            if len(self._states) >= self._max:
                oldest = min(self._states, key=lambda k: self._states[k].used)
                self.closable.extend(self._states.pop(oldest).retire_all())
            state.used = now
            self._states[key] = state
            return state

    def drain(self, state: _HostState[Inner]) -> list[Inner]:
        """Retired, unused transports of ``state`` and of evicted hosts, for the caller to close."""
        if not (state.closable or self.closable):
            return []
        done = state.drain()
        if self.closable:
            with self._lock:
                done, self.closable = done + self.closable, []
        return done

    def retire_all(self) -> list[Inner]:
        with self._lock:
            states = list(self._states.values())
            self._states.clear()
            done, self.closable = self.closable, []
        for state in states:
            done.extend(state.retire_all())
        return done

    def winner(self, url: httpx.URL) -> Optional[str]:
        state = self._states.get((url.raw_host, url.port))
        return None if state is None else state.winner


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A streamed request body, which can be sent again only while nothing of it was read.

    (Bytes, ``httpx.ByteStream``, can always be replayed and are not wrapped.) This records
    the first read and passes the data through untouched.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.started = True
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.started = True
            yield chunk


def _streamed_body(stream: Any) -> Optional[_Body]:
    """The wrapper a request body needs to be judged replayable, or None for plain bytes."""
    return None if isinstance(stream, httpx.ByteStream) else _Body(stream)


class _Release(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that releases its slot when closed (closing a retired transport)."""

    def __init__(self, stream: Any, slot: _Slot[Any]) -> None:
        self._stream = stream
        self._slot: Optional[_Slot[Any]] = slot

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # type: ignore[no-any-return]

    def _leave(self) -> Any:
        slot, self._slot = self._slot, None
        return None if slot is None else slot.release()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            done = self._leave()
            if done is not None:
                done.close()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            done = self._leave()
            if done is not None:
                await done.aclose()


class _Tries:
    """One request across its attempts: the verdicts, the log lines, the final error."""

    __slots__ = ("attempts", "body", "policy", "request", "state")

    def __init__(
        self,
        request: httpx.Request,
        state: _HostState[Any],
        policy: RejectionPolicy,
        body: Optional[_Body],
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
        if last and not self.can_retry():
            log.warning("%s: %s", self.state.names[0], _BODY_NOTE)

    def can_retry(self) -> bool:
        """Whether the request can be sent again: bytes, or a stream not yet read."""
        return self.body is None or not self.body.started

    def error(self, candidate: Candidate, exc: Exception, watch: Watch, last: bool) -> bool:
        """True when ``exc`` rejects the candidate; False to let ``exc`` propagate as it is."""
        reason = self.policy.error_verdict(
            exc, fresh=watch.fresh, responded=watch.responded, tls_version=watch.tls_version
        )
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
        note = "" if self.can_retry() else _BODY_NOTE
        certs = self.state.certs
        directory = certs.directory if certs is not None else Path(self.state.names[0])
        return ClientCertificateRejected(
            directory, tuple(self.attempts), request=self.request, note=note
        )


_BODY_NOTE = "the request body was a stream already sent, so it could not be replayed"


def _peek_size(response: httpx.Response) -> bool:
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= _MAX_PEEK


def _replace_stream(response: httpx.Response, raw: bytes) -> httpx.Response:
    """The same response with its (already read) raw body held in memory."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=response.extensions,
    )


_DECIDED_BY_THE_FOLDER = {
    "verify": "trust comes from the certs.d folder of each host (see root= and trust=)",
    "cert": "client certificates come from the certs.d folder (<name>.cert + <name>.key)",
}


def _inner_options(inner: type, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for every inner transport, checked now: a mistake would
    otherwise surface at the first request, as a TypeError from inside httpx."""
    for name in options:
        if name in _DECIDED_BY_THE_FOLDER:
            raise TypeError(f"{name}= cannot be set: {_DECIDED_BY_THE_FOLDER[name]}")
    unknown = sorted(set(options) - set(inspect.signature(inner).parameters))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {', '.join(unknown)} "
            f"(options other than dockercerts' own go to each {inner.__name__})"
        )
    return options


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
    each inner :class:`httpx.HTTPTransport`; ``verify`` and ``cert`` are refused with a
    :class:`TypeError`, since the folder decides them.
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
        self._transport_options = _inner_options(httpx.HTTPTransport, transport_options)
        self._hosts: _Hosts[httpx.HTTPTransport] = _Hosts(self._options, self._make, max_hosts)
        self._plain: Optional[httpx.HTTPTransport] = None

    def _make(self, candidate: Candidate) -> httpx.HTTPTransport:
        return httpx.HTTPTransport(verify=watched(candidate.context), **self._transport_options)

    def winner(self, url: Union[str, httpx.URL]) -> Optional[str]:
        """The name of the pair that last worked for ``url``'s host (``None``: none yet).

        Forgotten when the transport is closed.
        """
        return self._hosts.winner(httpx.URL(url))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            if self._plain is None:
                self._plain = httpx.HTTPTransport(**self._transport_options)
            return self._plain.handle_request(request)
        state, attempts = self._hosts.get(request.url)
        for done in self._hosts.drain(state):
            done.close()
        stream = request.stream
        body = _streamed_body(stream)
        tries = _Tries(request, state, self._options.policy, body)
        if body is not None:
            request.stream = body
        try:
            for number, slot in enumerate(attempts, 1):
                watch = Watch()
                inner = slot.acquire()
                try:
                    with watch:
                        response = inner.handle_request(request)
                except BaseException as exc:
                    released = slot.release()
                    if released is not None:
                        released.close()
                    if not isinstance(exc, Exception):
                        raise  # KeyboardInterrupt and the like: no verdict, slot given back
                    last = number == len(attempts) or not tries.can_retry()
                    if not tries.error(slot.candidate, exc, watch, last):
                        raise
                    if last:
                        raise tries.give_up() from exc
                    continue
                response.stream = _Release(response.stream, slot)
                peek = b""
                if tries.policy.needs_body(response) and _peek_size(response):
                    try:
                        peek = b"".join(response.iter_raw())
                    finally:  # an interrupt too: the slot is given back
                        response.close()
                    response = _replace_stream(response, peek)
                last = number == len(attempts) or not tries.can_retry()
                if not tries.response(slot.candidate, response, peek, last) or last:
                    return response
                response.close()
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            request.stream = stream

    def close(self) -> None:
        for done in self._hosts.retire_all():
            done.close()
        if self._plain is not None:
            self._plain.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`Transport`: same options, same behaviour, awaited.

        >>> import httpx, dockercerts
        >>> async def main():  # doctest: +SKIP
        ...     async with httpx.AsyncClient(transport=dockercerts.AsyncTransport()) as client:
        ...         await client.get("https://registry.example.com:5000/v2/")

    Host directories are read with blocking file I/O: a ``stat`` per file at most every
    ``refresh`` seconds, and a full read only when something changed.
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
        self._transport_options = _inner_options(httpx.AsyncHTTPTransport, transport_options)
        self._hosts: _Hosts[httpx.AsyncHTTPTransport] = _Hosts(self._options, self._make, max_hosts)
        self._plain: Optional[httpx.AsyncHTTPTransport] = None

    def _make(self, candidate: Candidate) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(
            verify=watched(candidate.context), **self._transport_options
        )

    def winner(self, url: Union[str, httpx.URL]) -> Optional[str]:
        """The name of the pair that last worked for ``url``'s host (``None``: none yet).

        Forgotten when the transport is closed.
        """
        return self._hosts.winner(httpx.URL(url))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            if self._plain is None:
                self._plain = httpx.AsyncHTTPTransport(**self._transport_options)
            return await self._plain.handle_async_request(request)
        state, attempts = self._hosts.get(request.url)
        for done in self._hosts.drain(state):
            await done.aclose()
        stream = request.stream
        body = _streamed_body(stream)
        tries = _Tries(request, state, self._options.policy, body)
        if body is not None:
            request.stream = body
        try:
            for number, slot in enumerate(attempts, 1):
                watch = Watch()
                inner = slot.acquire()
                try:
                    with watch:
                        response = await inner.handle_async_request(request)
                except BaseException as exc:
                    released = slot.release()
                    if released is not None:
                        with anyio.CancelScope(shield=True):  # closed even when cancelled
                            await released.aclose()
                    if not isinstance(exc, Exception):
                        raise  # a cancellation and the like: no verdict, slot given back
                    last = number == len(attempts) or not tries.can_retry()
                    if not tries.error(slot.candidate, exc, watch, last):
                        raise
                    if last:
                        raise tries.give_up() from exc
                    continue
                response.stream = _Release(response.stream, slot)
                peek = b""
                if tries.policy.needs_body(response) and _peek_size(response):
                    try:
                        peek = b"".join([chunk async for chunk in response.aiter_raw()])
                    finally:  # a cancellation too: the slot is given back
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                    response = _replace_stream(response, peek)
                last = number == len(attempts) or not tries.can_retry()
                if not tries.response(slot.candidate, response, peek, last) or last:
                    return response
                await response.aclose()
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            request.stream = stream

    async def aclose(self) -> None:
        for done in self._hosts.retire_all():
            await done.aclose()
        if self._plain is not None:
            await self._plain.aclose()
