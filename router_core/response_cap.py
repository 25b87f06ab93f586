"""Response bodies read up to a cap, for every request made with the router's client.

A destination, or a proxy in front of it, can answer with an endless body, a huge one, or a
small gzip body that inflates to gigabytes; httpx would buffer all of it before the plugin
saw the status. The router's pooled client runs ``cap_response_body`` as a response hook
(hooks see every response, through a proxy or not, before its body is read), so every plugin
using ``destination.client`` gets this, third-party ones included:

- the body is read up to ``RESPONSE_BODY_LIMIT`` bytes (1 MiB) after decoding; the rest is
  never read, and the connection is closed rather than put back in the pool;
- such a response is *truncated*, not an error: it keeps its status and headers and carries
  the first bytes (most answers matter only by their status), and ``body_truncated(response)``
  says it was cut;
- gzip and deflate bodies are inflated here, within the cap (the ``Content-Encoding`` header is
  then removed, as the body is decoded); bodies in any other encoding are passed on as
  received.

A request can ask for another cap with ``extensions={MAX_BODY_EXTENSION: n}``.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, AsyncIterator, MutableMapping
from typing import Any

import httpx

__all__ = [
    "MAX_BODY_EXTENSION",
    "RESPONSE_BODY_LIMIT",
    "TRUNCATED_EXTENSION",
    "body_truncated",
    "cap_response_body",
]

RESPONSE_BODY_LIMIT = 1024 * 1024
"""The most bytes of a response body the router's client reads (after decoding)."""

MAX_BODY_EXTENSION = "event_router.max_body_bytes"
"""Request extension: this request's own cap, in bytes."""

TRUNCATED_EXTENSION = "event_router.body_truncated"
"""Response extension, set to ``True`` when the body was cut at the cap."""

_INFLATED = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def body_truncated(response: httpx.Response) -> bool:
    """Whether ``response``'s body was cut at the router's cap (read the body first)."""
    return bool(response.extensions.get(TRUNCATED_EXTENSION, False))


async def cap_response_body(response: httpx.Response) -> None:
    """An httpx response hook: from now on ``response`` yields at most the cap of its body."""
    limit = response.request.extensions.get(MAX_BODY_EXTENSION, RESPONSE_BODY_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        limit = RESPONSE_BODY_LIMIT
    codings = [
        c.strip().lower()
        for c in response.headers.get("content-encoding", "").split(",")
        if c.strip().lower() not in ("", "identity")
    ]
    inflater: _Inflater | None = None
    if len(codings) == 1 and codings[0] in _INFLATED:
        inflater = _Inflater(codings[0])
    if codings:
        # Decoded here, or not at all: httpx must not inflate what the cap has not bounded.
        del response.headers["content-encoding"]
        if "content-length" in response.headers:
            del response.headers["content-length"]
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        return  # a sync stream: the router's client never gets one
    response.stream = _CappedStream(stream, limit, inflater, response.extensions)


class _Inflater:
    """A gzip or deflate decoder whose output is bounded however the input inflates."""

    def __init__(self, coding: str) -> None:
        self._deflate = coding == "deflate"
        self._first = True
        self._decoder = zlib.decompressobj(_INFLATED[coding])

    def feed(self, data: bytes, room: int) -> bytes:
        """Up to ``room + 1`` bytes of output for ``data`` (one more says there is more)."""
        first, self._first = self._first, False
        try:
            return self._decoder.decompress(data, room + 1)
        except zlib.error as exc:
            if not (self._deflate and first):
                raise httpx.DecodingError(f"cannot decode the response body: {exc}") from None
        # Servers send "deflate" both as zlib data and as raw deflate: try the raw form.
        self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            return self._decoder.decompress(data, room + 1)
        except zlib.error as exc:
            raise httpx.DecodingError(f"cannot decode the response body: {exc}") from None


class _CappedStream(httpx.AsyncByteStream):
    """Yields at most ``limit`` bytes of ``inner``, then closes it (and so its connection)."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        limit: int,
        inflater: _Inflater | None,
        extensions: MutableMapping[str, Any],
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._inflater = inflater
        self._extensions = extensions
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        room = self._limit
        chunks = aiter(self._inner)
        async for chunk in chunks:
            data = chunk if self._inflater is None else self._inflater.feed(chunk, room)
            if len(data) > room:
                if room:
                    yield data[:room]
                self._extensions[TRUNCATED_EXTENSION] = True
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()
                await self.aclose()  # unread bytes left: httpcore drops the connection
                return
            room -= len(data)
            if data:
                yield data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._inner.aclose()
