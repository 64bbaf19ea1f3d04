"""Transports and clients the sections measure with: the real wrapper over an in-memory inner
transport, the real transport with every host name resolved to one loopback server, and
clients that ignore the environment."""

from __future__ import annotations

from typing import Any, Optional

import httpcore
import httpx

import dockercerts

_OK = httpx.Response(200, content=b"{}")
_BODY = httpx.ByteStream(b"{}")


def ok(request: httpx.Request) -> httpx.Response:
    # One prebuilt response, reset as new: building a Response (~9 µs) would only add noise
    # to the baseline. Callers close it, as a client does.
    _OK.stream, _OK.is_closed, _OK.is_stream_consumed = _BODY, False, False
    return _OK


def _mocked(**options: Any) -> httpx.MockTransport:
    return httpx.MockTransport(ok)


def MockedTransport(**options: Any) -> dockercerts.Transport:
    """The real wrapper around an in-memory inner transport: measures the wrapper alone."""
    return dockercerts.Transport(inner=_mocked, **options)


def MockedAsyncTransport(**options: Any) -> dockercerts.AsyncTransport:
    return dockercerts.AsyncTransport(inner=_mocked, **options)


class Loopback(httpcore.SyncBackend):
    """Like ``curl --resolve``: every host name connects to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        return super().connect_tcp("127.0.0.1", self.port, timeout, local_address, socket_options)


def resolve_to_loopback(inner: httpx.HTTPTransport, port: int) -> httpx.HTTPTransport:
    inner._pool._network_backend = Loopback(port)
    return inner


def LoopbackTransport(*, port: int, **options: Any) -> dockercerts.Transport:
    """The real transport; only the TCP connect goes to the one loopback server."""

    def inner(**kwargs: Any) -> httpx.HTTPTransport:
        return resolve_to_loopback(httpx.HTTPTransport(**kwargs), port)

    return dockercerts.Transport(inner=inner, **options)


def contexts_built(transport: Any) -> Optional[int]:
    """How many candidate ``ssl`` contexts a transport has built so far (private attributes,
    a diagnostic only: ``None`` when they are not where this expects them)."""
    try:
        total = 0
        for state in transport._hosts._states.values():
            if state.certs is not None:
                total += len(state.certs.candidates()[0]._maker._built)
    except (AttributeError, IndexError, TypeError):
        return None
    return total


def client(transport: httpx.BaseTransport) -> httpx.Client:
    return httpx.Client(transport=transport, trust_env=False)


def aclient(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, trust_env=False)


def get_ok(c: httpx.Client, url: str, count: int) -> None:
    bad = 0
    for _ in range(count):
        if c.get(url).status_code != 200:
            bad += 1
    if bad:
        raise RuntimeError(f"{bad} of {count} requests to {url} did not answer 200")


async def aget_ok(c: httpx.AsyncClient, url: str, count: int) -> None:
    bad = 0
    for _ in range(count):
        if (await c.get(url)).status_code != 200:
            bad += 1
    if bad:
        raise RuntimeError(f"{bad} of {count} requests to {url} did not answer 200")
