"""``[http]``: the router's own HTTP client (proxy, TLS verification, pool sizes)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from router_core.secrets import mask

__all__ = ["HttpSettings"]


class HttpSettings(BaseModel):
    """``[http]``: how the router's pooled ``httpx.AsyncClient`` is built.

    ``proxy`` is a URL (``http://user:pass@proxy:3128``; its password is masked in reprs and
    errors); ``verify`` is ``true``, ``false`` or the path of a CA bundle; ``trust_env`` lets
    httpx read ``HTTPS_PROXY``, ``NO_PROXY`` and ``SSL_CERT_FILE`` from the environment.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    proxy: str | None = Field(default=None, repr=False)
    verify: bool | str = True
    max_connections: int = Field(default=100, ge=1, le=10_000)
    max_keepalive: int = Field(default=32, ge=0, le=10_000)
    trust_env: bool = True

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("must be a URL like http://proxy.internal:3128") from None
        if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
            # Never echo the value: it may hold a password.
            raise ValueError(
                "must be an http://, https:// or socks5:// URL with a host, "
                "like http://proxy.internal:3128"
            )
        return value

    def proxy_password(self) -> str | None:
        """The password in ``proxy``, if any (registered as a secret, so it is masked)."""
        return urlsplit(self.proxy).password if self.proxy is not None else None

    def __repr_args__(self) -> Any:
        if self.proxy is not None:
            yield "proxy", mask(self.proxy)
        yield from super().__repr_args__()

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.AsyncClient`` (pool limits included)."""
        return {
            "proxy": self.proxy,
            "verify": self.verify,
            "trust_env": self.trust_env,
            "limits": httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_keepalive,
            ),
        }
