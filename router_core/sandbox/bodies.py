"""Request-body decoding shared by the emulators: gzip, size limits, JSON."""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = [
    "GZIP_MAGIC",
    "Rejected",
    "compact_json",
    "gunzip",
    "parse_json",
    "sent_with",
    "utf8_size",
]

GZIP_MAGIC = b"\x1f\x8b"


class Rejected(Exception):
    """A request the emulator refuses: answered with ``status`` and nothing recorded.

    ``key`` is the masked key the request carried, when it was read before the refusal: the
    request log keeps it so the viewer can show which workspace sent a refused request.
    """

    def __init__(self, status: int, code: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.key = key


@contextlib.contextmanager
def sent_with(key: str) -> Iterator[None]:
    """Attribute any refusal raised inside the block to ``key`` (a masked key)."""
    try:
        yield
    except Rejected as rejected:
        if rejected.key is None:
            rejected.key = key
        raise


def gunzip(data: bytes, limit: int, too_large_status: int) -> bytes:
    """Decompress a gzip body, refusing output over ``limit`` bytes without inflating it all."""
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise Rejected(400, "invalid_gzip", f"body is not valid gzip: {exc}") from None
        if len(out) > limit:
            raise Rejected(
                too_large_status,
                "request_too_large",
                f"decompressed body is over the {limit:,}-byte limit per request",
            )
        if not inflater.eof:
            raise Rejected(400, "invalid_gzip", "gzip body is truncated")
        rest = inflater.unused_data
        # Concatenated gzip members form one stream (RFC 1952); trailing zero padding does not.
        if not rest.startswith(GZIP_MAGIC):
            return bytes(out)


def parse_json(data: bytes) -> Any:
    """Parse a JSON body, answering 400 with the parser's reason when it is not JSON."""
    if not data.strip():
        raise Rejected(400, "invalid_json", "request body is empty")
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise Rejected(400, "invalid_json", f"body is not UTF-8 text: {exc.reason}") from None
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity constant
        raise Rejected(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Rejected(400, "invalid_json", "body is nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's parser accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text: how a message is measured and stored.

    ``value`` came from ``parse_json``, so it has no cycles and no NaN.
    """
    return _ENCODER.encode(value)


def utf8_size(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes."""
    if text.isascii():  # O(1) in CPython, and the common case
        return len(text)
    # A lone surrogate from a "\ud800" escape has no UTF-8 form; count it as the parser saw it.
    return len(text.encode("utf-8", "surrogatepass"))
