"""httpx transports that speak to each registry with its certs.d candidates, in Docker's order.

:class:`Transport` and :class:`AsyncTransport` are twins and thin: every decision of an
exchange (order, verdicts, replay, which answer to give back, what to remember) is in
:mod:`dockercerts.flow`; what is remembered per host is in :mod:`dockercerts._hosts`. A
transport only drives the flow: it sends with a candidate's own inner ``httpx`` transport
(watched at the ``ssl`` layer by :mod:`dockercerts._watch`, so a connection opened for a try
is told apart from a reused one), reads, waits and closes, and maps what it raises in one
place (:func:`_raise`). Read one twin and you have read both.
"""

from __future__ import annotations

import inspect
import ssl
import threading
import time
from typing import Any, Callable, Optional, Union

import anyio
import httpx

from . import canames
from ._aim import Home, aim
from ._drive import run
from ._hosts import Hosts, HostState, docker_host_names, host_dir_for_url
from ._options import OPTIONS_DOC, Options, options
from ._slots import Slot
from ._streams import Body, Release, in_memory
from ._watch import sends, watched
from .errors import CertsDirError, CertsDirTransportError, ClientCertificateRejected
from .flow import Close, Decision, Exchange, Learn, Read, Send, Sent, Wait, settle, steady
from .loader import Candidate
from .locate import StrPath
from .proxies import ProxyArg, ProxyRules
from .rejection import DOCKER, RejectionPolicy
from .routing import Target
from .scan import Password
from .trust import Trust

__all__ = ["AsyncTransport", "Transport", "docker_host_names", "host_dir_for_url"]

ATTEMPTS = "dockercerts.attempts"  # the response extension holding the exchange's records


# --- shared by the twins: what goes into the flow, what comes out of it -----------------------


def _start(request: httpx.Request, state: HostState[Any]) -> tuple[Optional[Home], Any]:
    """What an exchange changes in ``request`` and puts back (:func:`_end`): its own URL and
    headers while routing aims it elsewhere (``home``, when ``state`` routes), and its body
    stream, which a streamed body's :class:`~dockercerts._streams.Body` replaces (to tell
    whether it was read). ``handle_request`` skips the pair when neither applies, as for most
    requests: two calls of a steady request's dozen."""
    home = None if state.routes is None else Home(request)
    stream = request.stream
    if not isinstance(stream, httpx.ByteStream):
        request.stream = Body(stream)
    return home, stream


def _end(request: httpx.Request, stream: Any, home: Optional[Home]) -> None:
    request.stream = stream
    if home is not None:
        home.restore(request)


def _exchange(
    request: httpx.Request,
    state: HostState[Any],
    policy: RejectionPolicy,
    home: Optional[Home],
    *,
    exhaustive: bool = False,
    begin: Optional[Target] = None,
) -> Exchange[httpx.Response]:
    """The flow for ``request`` (after :func:`_start`). The path is given (routing on) only
    when the host's folder routes (containerd: ``home``); ``begin``: the steady lane's
    endpoint, where the walk starts."""
    body = request.stream if isinstance(request.stream, Body) else None
    timeout = request.extensions.get("timeout", {})
    return Exchange(
        state,
        policy,
        method=request.method,
        replayable=lambda: body is None or not body.started,
        wait_timeout=timeout.get("pool"),
        exhaustive=exhaustive,
        path=None if home is None else home.path,
        begin=begin,
    )


def _deliver(decision: Decision[httpx.Response], request: httpx.Request) -> httpx.Response:
    """Give back the decided response, or raise what the flow decided, as httpx expects of a
    transport: every error an :class:`httpx.TransportError`. The one place errors are mapped."""
    if decision.response is not None:
        decision.response.extensions[ATTEMPTS] = decision.attempts
        return decision.response
    error = decision.error
    if decision.rejected:
        raise ClientCertificateRejected(
            decision.directory, decision.attempts, request=request, note=decision.note
        ) from error
    assert error is not None
    if isinstance(error, CertsDirError):
        raise _folder_error(error, request) from error
    if isinstance(error, (ssl.SSLError, OSError)) and not isinstance(error, httpx.HTTPError):
        # anyio lets an ssl.SSLError through unwrapped; a completed handshake means the
        # failure came after connecting.
        fresh = bool(decision.attempts) and decision.attempts[-1].fresh
        kind = httpx.ReadError if fresh else httpx.ConnectError
        raise kind(str(error) or type(error).__name__, request=request) from error
    raise error


def _folder_error(exc: CertsDirError, request: httpx.Request) -> httpx.TransportError:
    return CertsDirTransportError(exc, request=request)


_DECIDED_BY_THE_FOLDER = {
    "verify": "trust comes from the certs.d folder of each host (see root= and trust=)",
    "cert": "client certificates come from the certs.d folder (<name>.cert + <name>.key)",
}


def _inner_options(inner: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for every inner transport, checked now: a mistake would
    otherwise surface at the first request, as a TypeError from inside httpx."""
    for name in options:
        if name in _DECIDED_BY_THE_FOLDER:
            raise TypeError(f"{name}= cannot be set: {_DECIDED_BY_THE_FOLDER[name]}")
    try:
        parameters = inspect.signature(inner).parameters
    except (TypeError, ValueError):  # no signature to read (a C callable): its own call checks
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        name = getattr(inner, "__name__", type(inner).__name__)
        raise TypeError(
            f"unexpected keyword argument {', '.join(unknown)} "
            f"(options other than dockercerts' own go to each {name})"
        )
    return options


class _Base:
    """What the twins share besides the flow: options, hosts, proxies, the plain transports."""

    _inner_type: type

    def __init__(
        self,
        *,
        root: Optional[StrPath] = None,
        platform: Optional[str] = None,
        trust: Optional[Trust] = None,
        password: Optional[Password] = None,
        policy: Union[RejectionPolicy, str] = DOCKER,
        refresh: float = 1.0,
        recheck: float = 60.0,
        max_hosts: int = 256,
        trust_env: bool = True,
        proxy: Optional[ProxyArg] = None,
        order: str = "docker",
        inner: Optional[Callable[..., Any]] = None,
        runtime: str = "docker",
        cert_dir: Optional[StrPath] = None,
        system: str = "openssl",
        client_certificates: bool = True,
        **transport_options: Any,
    ) -> None:
        self._options: Options = options(
            root,
            platform,
            trust,
            password,
            policy,
            refresh,
            recheck,
            order=order,
            runtime=runtime,
            cert_dir=cert_dir,
            system=system,
            client_certificates=client_certificates,
        )
        self._proxies = ProxyRules.make(proxy, trust_env=trust_env)
        self._inner: Callable[..., Any] = self._inner_type if inner is None else inner
        if not callable(self._inner):
            raise TypeError(f"inner= must be a callable that makes a transport, not {inner!r}")
        self._transport_options = _inner_options(self._inner, transport_options)
        self._hosts: Hosts[Any] = Hosts(self._options, self._make_for, max_hosts)
        self._plain: dict[Optional[str], Any] = {}
        self._plain_lock = threading.Lock()
        self._exhaustive = False  # the probe's mode: every candidate, nothing remembered

    def _make(self, candidate: Candidate, proxy: Optional[httpx.Proxy] = None) -> Any:
        """One candidate's inner transport (its context watched: see :mod:`._watch`)."""
        extra = {} if proxy is None else {"proxy": proxy}
        return self._inner(verify=watched(candidate.context), **self._transport_options, **extra)

    def _make_for(self, url: httpx.URL) -> Callable[[Candidate], Any]:
        proxy = self._proxies.for_url(url)
        if proxy is None:
            return self._make
        return lambda candidate: self._make(candidate, proxy)

    def _plain_for(self, url: httpx.URL) -> Any:
        """The transport for a non-TLS request: one per proxy, built once under a lock."""
        proxy = self._proxies.for_url(url)
        key = None if proxy is None else str(proxy.url)
        inner = self._plain.get(key)
        if inner is None:
            with self._plain_lock:
                inner = self._plain.get(key)
                if inner is None:
                    extra = {} if proxy is None else {"proxy": proxy}
                    inner = self._plain[key] = self._inner(**self._transport_options, **extra)
        return inner

    def _learn(self, request: httpx.Request) -> tuple[bytes, ...]:
        """The CA names ``request``'s server lists (blocking), for ``order="ca-names"``."""
        url = request.url
        connect = request.extensions.get("timeout", {}).get("connect")
        return canames.learn(url, self._proxies.for_url(url), connect)

    def _look(self, request: httpx.Request) -> HostState[Any]:
        """The host's state when :meth:`Hosts.current <dockercerts._hosts.Hosts.current>`
        left the look at its folder to this request (file system calls: they may block)."""
        try:
            return self._hosts.look(request.url)
        except CertsDirError as exc:
            raise _folder_error(exc, request) from exc

    def winner(self, url: Union[str, httpx.URL]) -> Optional[str]:
        """The name of the pair that last worked for ``url``'s host (``None``: none yet).

        Forgotten when the transport is closed.
        """
        return self._hosts.winner(httpx.URL(url))


_ARGS_DOC = (
    OPTIONS_DOC
    + """ Proxies follow httpx's environment rules
    (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) unless ``trust_env=False``; ``proxy=``
    replaces the environment's proxy URL. ``order="ca-names"`` (needs
    ``dockercerts[probe]``) reads, before the first search of a host with several pairs, the
    CA names its server asks client certificates from (one extra handshake, once per host and
    again after its folder changes; through an ``http://`` proxy too) and tries the pairs they
    list first, in Docker's order, then the others: see :mod:`dockercerts.canames`. The
    default, ``"docker"``, is Docker's order. The remaining keyword arguments (``http2``,
    ``limits``, ``retries``, ...) are passed to each inner transport; ``verify`` and ``cert``
    are refused with a :class:`TypeError`, since the folder decides them.

    ``client_certificates=False`` sends no client certificate: each host's one candidate is
    its folder's trust alone (:meth:`HostCerts.trust_only <dockercerts.HostCerts.trust_only>`),
    judged by the same flow. It asks what a registry answers Docker when Go finds no pair to
    send; ``dockercerts probe`` uses it for that.

    ``inner`` makes those inner transports (default: ``httpx.HTTPTransport``, or
    ``httpx.AsyncHTTPTransport`` for the async twin). It is called with keyword arguments
    only: ``verify`` (the candidate's ``ssl`` context, already watched for TLS 1.3 refusals;
    absent for plain ``http://``), ``proxy`` (when one applies) and the remaining keyword
    arguments, so a transport class, a ``functools.partial`` of one, or a function that wraps
    one all fit::

        >>> import functools, httpx, dockercerts
        >>> transport = dockercerts.Transport(
        ...     inner=functools.partial(httpx.HTTPTransport, local_address="127.0.0.1"))
"""
)


class Transport(_Base, httpx.BaseTransport):
    """An httpx transport that sends each HTTPS request with the host's certs.d candidates.

    Drop-in: every ``https://`` request uses the host directory of its ``host[:port]``
    under ``root`` (default: Docker's, :func:`~dockercerts.certs_root`). Candidates are tried
    in Docker's order; when the server rejects one (see :mod:`dockercerts.flow`) the same
    request is sent with the next. The one that works is remembered and tried first next
    time. ``http://`` requests go through a plain transport.

        >>> import httpx, dockercerts
        >>> with httpx.Client(transport=dockercerts.Transport()) as client:  # doctest: +SKIP
        ...     client.get("https://registry.example.com:5000/v2/")
    """

    __doc__ = (__doc__ or "") + _ARGS_DOC
    _inner_type = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https":
            inner: httpx.HTTPTransport = self._plain_for(url)
            return inner.handle_request(request)
        state = self._hosts.current(url) or self._look(request)
        if state.closable:  # retired transports nobody uses any more
            for done in state.drain():
                done.close()
        # Most requests have nothing for _start to change (no routing, a body in memory).
        plain = state.routes is None and isinstance(request.stream, httpx.ByteStream)
        home, stream = (None, None) if plain else _start(request, state)
        try:
            lane = steady(state, request.method, None if home is None else home.path)
            if lane is None:
                exchange = _exchange(request, state, self._options.policy, home)
                return _deliver(self._run(exchange, request, home), request)
            slot, target, _ = lane  # the steady state: the winner, without an exchange
            if home is not None:
                aim(request, target, home)
            sent = self._send(slot, request)
            records = settle(lane, sent)
            if records is None:  # to be judged: the exchange goes on from this try
                exchange = _exchange(request, state, self._options.policy, home, begin=target)
                return _deliver(self._run(exchange, request, home, (slot, sent)), request)
            response = sent.response
            assert response is not None  # settle accepts answers only
            response.extensions[ATTEMPTS] = records
            return response
        finally:
            if not plain:
                _end(request, stream, home)

    def decide(
        self, request: httpx.Request, *, every_candidate: bool = False
    ) -> Decision[httpx.Response]:
        """Send an HTTPS ``request`` as :meth:`handle_request` does, but return the flow's
        :class:`~dockercerts.flow.Decision` (the answer or the error, and every attempt)
        instead of raising; the caller closes ``decision.response``. ``every_candidate``
        tries them all, as ``dockercerts probe`` does, and changes nothing the transport
        remembers. Raises only :class:`~dockercerts.CertsDirTransportError`."""
        state = self._hosts.current(request.url) or self._look(request)
        if state.closable:  # retired transports nobody uses any more
            for done in state.drain():
                done.close()
        home, stream = _start(request, state)
        try:
            policy = self._options.policy
            exchange = _exchange(request, state, policy, home, exhaustive=every_candidate)
            return self._run(exchange, request, home)
        finally:
            _end(request, stream, home)

    def _run(
        self,
        exchange: Exchange[httpx.Response],
        request: httpx.Request,
        home: Optional[Home],
        first: Optional[tuple[Slot[Any], Sent[Any]]] = None,
    ) -> Decision[httpx.Response]:
        return run(
            exchange, lambda step: self._step(step, request, home), httpx.Response.close, first
        )

    def _step(self, step: Any, request: httpx.Request, home: Optional[Home]) -> Any:
        if isinstance(step, Send):
            aim(request, step.target, home)
            return self._send(step.slot, request)
        if isinstance(step, Read):
            response: httpx.Response = step.response
            try:
                raw = b"".join(response.iter_raw())
            finally:  # an interrupt too: the slot is given back
                response.close()
            return raw, in_memory(response, raw)
        if isinstance(step, Close):
            step.response.close()
            return None
        if isinstance(step, Learn):  # the server the next try goes to
            aim(request, step.target, home)
            return self._learn(request)
        assert isinstance(step, Wait)
        return step.turn.wait(step.timeout)

    @sends
    def _send(
        self, slot: Slot[httpx.HTTPTransport], request: httpx.Request
    ) -> Sent[httpx.Response]:
        sent: Sent[httpx.Response] = Sent()
        start = time.perf_counter()
        try:
            inner = slot.acquire()
        except CertsDirError as exc:  # a pair broken since the load: the flow raises it
            sent.failed(exc, start)
            return sent
        try:
            response = inner.handle_request(request)
        except BaseException as exc:
            released = slot.release()
            if released is not None:
                released.close()
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like: no verdict, slot given back
            sent.failed(exc, start)
            return sent
        response.stream = Release(response.stream, slot)
        sent.answered(response, response.status_code, response.headers, start)
        return sent

    def close(self) -> None:
        for done in self._hosts.retire_all():
            done.close()
        with self._plain_lock:
            plain, self._plain = list(self._plain.values()), {}
        for inner in plain:
            inner.close()


class AsyncTransport(_Base, httpx.AsyncBaseTransport):
    """The async twin of :class:`Transport`: same options, same behaviour, awaited.

        >>> import httpx, dockercerts
        >>> async def main():  # doctest: +SKIP
        ...     async with httpx.AsyncClient(transport=dockercerts.AsyncTransport()) as client:
        ...         await client.get("https://registry.example.com:5000/v2/")

    Whatever touches the file system runs in a worker thread, so that a large CA bundle does
    not stall the event loop: reading a host directory, checking it for changes (at most every
    ``refresh`` seconds, by one request while the others use the last good load; read again
    only when something changed), and building a candidate's ``ssl`` context the first time
    it is used.
    """

    __doc__ = (__doc__ or "") + _ARGS_DOC
    _inner_type = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https":
            inner: httpx.AsyncHTTPTransport = self._plain_for(url)
            return await inner.handle_async_request(request)
        state = self._hosts.current(url) or await self._load(request)
        if state.closable:  # retired transports nobody uses any more
            for done in state.drain():
                await done.aclose()
        # Most requests have nothing for _start to change (no routing, a body in memory).
        plain = state.routes is None and isinstance(request.stream, httpx.ByteStream)
        home, stream = (None, None) if plain else _start(request, state)
        try:
            lane = steady(state, request.method, None if home is None else home.path)
            if lane is None:
                exchange = _exchange(request, state, self._options.policy, home)
                return _deliver(await self._run(exchange, request, home), request)
            slot, target, _ = lane  # the steady state: the winner, without an exchange
            if home is not None:
                aim(request, target, home)
            sent = await self._send(slot, request)
            records = settle(lane, sent)
            if records is None:  # to be judged: the exchange goes on from this try
                exchange = _exchange(request, state, self._options.policy, home, begin=target)
                return _deliver(await self._run(exchange, request, home, (slot, sent)), request)
            response = sent.response
            assert response is not None  # settle accepts answers only
            response.extensions[ATTEMPTS] = records
            return response
        finally:
            if not plain:
                _end(request, stream, home)

    async def decide(
        self, request: httpx.Request, *, every_candidate: bool = False
    ) -> Decision[httpx.Response]:
        """The async twin of :meth:`Transport.decide`."""
        state = self._hosts.current(request.url) or await self._load(request)
        if state.closable:  # retired transports nobody uses any more
            for done in state.drain():
                await done.aclose()
        home, stream = _start(request, state)
        try:
            policy = self._options.policy
            exchange = _exchange(request, state, policy, home, exhaustive=every_candidate)
            return await self._run(exchange, request, home)
        finally:
            _end(request, stream, home)

    async def _run(
        self,
        exchange: Exchange[httpx.Response],
        request: httpx.Request,
        home: Optional[Home],
        first: Optional[tuple[Slot[Any], Sent[Any]]] = None,
    ) -> Decision[httpx.Response]:
        flow = exchange.flow(first)
        try:
            step = next(flow)
            while True:
                step = flow.send(await self._step(step, request, home))
        except StopIteration as end:
            decision: Decision[httpx.Response] = end.value
            return decision
        finally:
            flow.close()
            for held in exchange.holding():  # interrupted while keeping an answer
                with anyio.CancelScope(shield=True):
                    await held.aclose()

    async def _load(self, request: httpx.Request) -> HostState[Any]:
        """The host's state when :meth:`Hosts.current <dockercerts._hosts.Hosts.current>` has
        none ready: the folder is due for a look (a stat, maybe a load), off the loop."""
        return await anyio.to_thread.run_sync(self._look, request)

    async def _step(self, step: Any, request: httpx.Request, home: Optional[Home]) -> Any:
        if isinstance(step, Send):
            aim(request, step.target, home)
            return await self._send(step.slot, request)
        if isinstance(step, Read):
            response: httpx.Response = step.response
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:  # a cancellation too: the slot is given back
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            return raw, in_memory(response, raw)
        if isinstance(step, Close):
            with anyio.CancelScope(shield=True):
                await step.response.aclose()
            return None
        if isinstance(step, Learn):  # the server the next try goes to
            aim(request, step.target, home)
            return await anyio.to_thread.run_sync(self._learn, request)
        assert isinstance(step, Wait)
        return await _wait(step.turn, step.timeout)

    @sends
    async def _send(
        self, slot: Slot[httpx.AsyncHTTPTransport], request: httpx.Request
    ) -> Sent[httpx.Response]:
        sent: Sent[httpx.Response] = Sent()
        start = time.perf_counter()
        try:
            inner = slot.acquire(make=False)
            if inner is None:  # the context (system roots, CA files, key) off the event loop
                await anyio.to_thread.run_sync(slot.build)
                inner = slot.acquire()
        except CertsDirError as exc:  # a pair broken since the load: the flow raises it
            sent.failed(exc, start)
            return sent
        try:
            response = await inner.handle_async_request(request)
        except BaseException as exc:
            released = slot.release()
            if released is not None:
                with anyio.CancelScope(shield=True):  # closed even when cancelled
                    await released.aclose()
            if not isinstance(exc, Exception):
                raise  # a cancellation and the like: no verdict, slot given back
            sent.failed(exc, start)
            return sent
        response.stream = Release(response.stream, slot)
        sent.answered(response, response.status_code, response.headers, start)
        return sent

    async def aclose(self) -> None:
        for done in self._hosts.retire_all():
            await done.aclose()
        with self._plain_lock:
            plain, self._plain = list(self._plain.values()), {}
        for inner in plain:
            await inner.aclose()


async def _wait(turn: threading.Event, timeout: Optional[float]) -> bool:
    """Wait for another request's search to end without blocking the event loop.

    The turn is a ``threading.Event`` (the host state serves sync and async front ends, and
    any event loop), so it is polled, backing off to 50 ms: this happens only while a cold
    host's first request looks for the winner.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    while not turn.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True
