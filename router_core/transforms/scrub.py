"""``scrub_ip`` and ``strip_query``: take the identifying parts out of IPs and URLs."""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote_plus

from router_core.transforms.paths import DELETE, PathSet
from router_core.transforms.settings import ScrubIpSettings, StripQuerySettings
from router_core.transforms.step import Fields

__all__ = ["ScrubIp", "StripQuery", "strip_query", "truncate_ip"]

_KEEP_BITS = {4: 24, 6: 48}  # what truncation keeps: the network, not the host


def truncate_ip(text: str) -> str | None:
    """``text``'s network address (IPv4 /24, IPv6 /48), or None when it is not an IP address.

    An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is truncated as the IPv4 address it is.
    """
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    kind = type(address)
    host_bits = address.max_prefixlen - _KEEP_BITS[address.version]
    # From the integer, so an IPv6 zone (``%eth0``) goes too.
    return str(kind(int(address) >> host_bits << host_bits))


class ScrubIp:
    """The ``scrub_ip`` transform. A value that is not an IP address is removed in both
    modes: what cannot be truncated safely is not sent."""

    __slots__ = ("_paths", "_truncate")

    def __init__(self, settings: ScrubIpSettings) -> None:
        self._paths = PathSet.parse(settings.paths)
        self._truncate = settings.mode == "truncate"

    def _scrub(self, value: Any) -> Any:
        if value is None:
            return value
        if self._truncate and isinstance(value, str):
            truncated = truncate_ip(value)
            if truncated is not None:
                return value if truncated == value else truncated
        return DELETE

    def __call__(self, fields: Fields) -> Fields:
        return self._paths.update(fields, self._scrub)


def strip_query(url: str, params: tuple[str, ...] | None = None) -> str:
    """``url`` without its query string, or without the parameters whose names match
    ``params`` (glob patterns, like ``utm_*``). A bare query (``?q=1``, as in
    ``context.page.search``) is handled the same way; the fragment is kept.

    Text is cut, never re-encoded, so everything else stays byte for byte.
    """
    start = url.find("?")
    hash_at = url.find("#")
    if start < 0 or 0 <= hash_at < start:  # no query, or a "?" inside the fragment
        return url
    end = hash_at if hash_at >= 0 else len(url)
    if params is None:
        return url[:start] + url[end:]
    kept = [
        piece
        for piece in url[start + 1 : end].split("&")
        if piece and not any(fnmatchcase(unquote_plus(piece.split("=", 1)[0]), p) for p in params)
    ]
    query = "?" + "&".join(kept) if kept else ""
    return url[:start] + query + url[end:]


class StripQuery:
    """The ``strip_query`` transform; values that are not strings are left alone."""

    __slots__ = ("_params", "_paths")

    def __init__(self, settings: StripQuerySettings) -> None:
        self._paths = PathSet.parse(settings.paths)
        self._params = settings.params

    def _strip(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        stripped = strip_query(value, self._params)
        return value if stripped == value else stripped

    def __call__(self, fields: Fields) -> Fields:
        return self._paths.update(fields, self._strip)
