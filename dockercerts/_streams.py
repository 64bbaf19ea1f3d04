"""The transports' wrappers around httpx's byte streams: a request body that tells whether it
was read (:class:`Body`), a response body that gives its slot back when closed
(:class:`Release`), and an answer whose body the flow read (:func:`in_memory`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional

import httpx

from ._slots import Slot

__all__ = ["Body", "Release", "in_memory"]


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
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


class Release(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that releases its slot when closed (closing a retired transport)."""

    def __init__(self, stream: Any, slot: Slot[Any]) -> None:
        self._stream = stream
        self._slot: Optional[Slot[Any]] = slot

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # type: ignore[no-any-return]

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            slot, self._slot = self._slot, None  # a second close releases nothing
            done = None if slot is None else slot.release()
            if done is not None:
                done.close()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            slot, self._slot = self._slot, None
            done = None if slot is None else slot.release()
            if done is not None:
                await done.aclose()


def in_memory(response: httpx.Response, raw: bytes) -> httpx.Response:
    """The same response with its (already read) raw body held in memory."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=response.extensions,
    )
