"""The settings of a PostHog destination, validated when the config is loaded."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator

from router_core import DestinationSettings

__all__ = ["DEFAULT_HOST", "EU_INGESTION_HOST", "US_INGESTION_HOST", "PostHogSettings"]

US_INGESTION_HOST = "https://us.i.posthog.com"
EU_INGESTION_HOST = "https://eu.i.posthog.com"
DEFAULT_HOST = US_INGESTION_HOST

# PostHog Cloud's app hosts do not take events; their ingestion hosts do. Same mapping as
# posthog-python's request.determine_server_host().
_INGESTION_HOSTS = {
    "us.posthog.com": US_INGESTION_HOST,
    "app.posthog.com": US_INGESTION_HOST,
    "eu.posthog.com": EU_INGESTION_HOST,
}

_PERSONAL_KEY_PREFIX = "phx_"


class PostHogSettings(DestinationSettings):
    """``[destinations.<name>]`` keys for ``plugin = "posthog"``.

    ``api_key`` is the project API key (``phc_...``). ``host`` is the ingestion host; PostHog
    Cloud app hosts (``us.posthog.com``, ``app.posthog.com``, ``eu.posthog.com``) are mapped to
    their ingestion hosts, any other http(s) URL (self-hosted) is used as given. ``gzip``
    compresses request bodies. ``group_type`` is the PostHog group type of group events, since
    a Segment group call names no type.
    """

    # Never echo what was given: a mistyped api_key is still somebody's key.
    model_config = ConfigDict(hide_input_in_errors=True)

    api_key: SecretStr
    host: str = DEFAULT_HOST
    gzip: bool = False
    group_type: str = Field(default="company", min_length=1)

    @field_validator("api_key")
    @classmethod
    def _project_key(cls, value: SecretStr) -> SecretStr:
        key = value.get_secret_value().strip()
        if not key:
            raise ValueError("must not be empty; use the project API key (phc_...)")
        if key.startswith(_PERSONAL_KEY_PREFIX):
            raise ValueError(
                "the key is a personal API key (phx_); capture needs a project API key (phc_), "
                "found in PostHog's project settings"
            )
        return SecretStr(key)

    @field_validator("host")
    @classmethod
    def _ingestion_host(cls, value: str) -> str:
        host = value.strip()
        parts = urlsplit(host)
        # The value is not echoed: a key pasted into the wrong field must not leak.
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL such as {DEFAULT_HOST}")
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without query or fragment")
        mapped = _INGESTION_HOSTS.get(parts.hostname)
        if mapped is not None and parts.path.strip("/") == "" and parts.port is None:
            return mapped
        return host.rstrip("/")

    @property
    def batch_url(self) -> str:
        """Where events are posted: ``{host}/batch/``."""
        return f"{self.host}/batch/"
