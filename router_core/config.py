"""Loading the TOML config: destinations, `${VAR}` interpolation, and validation.

Every problem is collected before raising, so ``ConfigError.problems`` (and
``event-router config check``) lists them all: unknown plugins, bad fields, missing env vars.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from router_core.errors import ConfigError
from router_core.outbox.settings import QueueSettings
from router_core.plugins import PluginRegistry
from router_core.secrets import register_secret, secrets_in
from router_core.settings import ROUTING_KEYS, DestinationSettings, RoutingSettings

__all__ = ["DestinationConfig", "LoggingSettings", "RouterConfig", "interpolate", "read_toml"]

DEFAULT_CONFIG_PATH = Path("config/router.toml")

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LoggingSettings(BaseModel):
    """``[logging]``: how delivery lines are rendered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


def read_toml(path: str | os.PathLike[str], kind: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; any failure is a ``ConfigError`` naming the file."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{kind} {str(p)!r} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {kind} {str(p)!r}: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """One destination, validated: router keys plus the plugin's own settings."""

    name: str
    routing: RoutingSettings
    settings: DestinationSettings

    @property
    def plugin(self) -> str:
        return self.routing.plugin


def interpolate(value: Any, env: Mapping[str, str], path: str, missing: list[str]) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of ``value``.

    ``$$`` is a literal ``$``. Unset variables without a default are appended to ``missing``
    as ``"<path>: environment variable VAR is not set"``.
    """
    if isinstance(value, str):
        if "$" not in value:
            return value

        def expand(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found is not None and (found != "" or default is None):
                return found
            if default is not None:
                return default
            missing.append(f"{path}: environment variable {name} is not set")
            return ""

        return _VAR.sub(expand, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}", missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", missing) for i, v in enumerate(value)]
    return value


@dataclass(frozen=True)
class RouterConfig:
    """The parsed config file: raw destination tables, interpolated only when resolved."""

    destinations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    queue: Mapping[str, Any] | None = None
    source: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> RouterConfig:
        """Read a TOML config file."""
        return cls.from_dict(read_toml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> RouterConfig:
        problems: list[str] = []
        unknown = sorted(set(data) - {"destinations", "logging", "queue"})
        if unknown:
            problems.append(
                f"unknown top-level key(s) {', '.join(unknown)}; "
                "expected destinations, logging, queue"
            )
        destinations = data.get("destinations", {})
        if not isinstance(destinations, Mapping):
            problems.append("destinations: must be a table of [destinations.NAME] tables")
            destinations = {}
        for name, table in destinations.items():
            if not isinstance(table, Mapping):
                problems.append(f"destinations.{name}: must be a table")
        logging = LoggingSettings()
        try:
            logging = LoggingSettings.model_validate(data.get("logging", {}))
        except ValidationError as exc:
            problems.extend(_field_problems("logging", exc))
        queue = data.get("queue")
        if queue is not None and not isinstance(queue, Mapping):
            problems.append("queue: must be a table")
        elif queue is not None and not _mentions_variables(queue):
            try:  # a table with ${VAR} is checked once expanded, by queue_settings()
                QueueSettings.coerce(queue)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems, source=source)
        return cls(
            destinations={n: t for n, t in destinations.items() if isinstance(t, Mapping)},
            logging=logging,
            queue=queue,
            source=source,
        )

    def queue_settings(
        self,
        env: Mapping[str, str] | None = None,
        override: QueueSettings | Mapping[str, Any] | None = None,
    ) -> QueueSettings | None:
        """The ``[queue]`` settings (``override`` replaces the file's table), with ``${VAR}``
        expanded from ``env`` (default ``os.environ``); ``None`` means direct delivery.

        Raises ``ConfigError`` naming each bad key and each unset variable.
        """
        table = override if override is not None else self.queue
        if table is None or isinstance(table, QueueSettings):
            return QueueSettings.coerce(table)
        missing: list[str] = []
        environ = os.environ if env is None else env
        expanded = interpolate(dict(table), environ, "queue", missing)
        if missing:
            raise ConfigError(missing, source=self.source)
        return QueueSettings.coerce(expanded)

    def resolve(
        self, registry: PluginRegistry, env: Mapping[str, str] | None = None
    ) -> list[DestinationConfig]:
        """Interpolate and validate every enabled destination against its plugin's model.

        Raises ``ConfigError`` listing every problem. Disabled destinations are skipped
        entirely, so their env vars need not be set.
        """
        environ = os.environ if env is None else env
        problems: list[str] = []
        resolved: list[DestinationConfig] = []
        for name, table in self.destinations.items():
            destination = _resolve_one(name, table, registry, environ, problems)
            if destination is not None:
                resolved.append(destination)
        if problems:
            raise ConfigError(problems, source=self.source)
        return resolved


def _resolve_one(
    name: str,
    table: Mapping[str, Any],
    registry: PluginRegistry,
    env: Mapping[str, str],
    problems: list[str],
) -> DestinationConfig | None:
    where = f"destinations.{name}"
    missing: list[str] = []
    expanded = interpolate(dict(table), env, where, missing)
    routing_table = {k: v for k, v in expanded.items() if k in ROUTING_KEYS}
    try:
        routing = RoutingSettings.model_validate(routing_table)
    except ValidationError as exc:
        problems.extend(_field_problems(where, exc))
        problems.extend(missing)
        return None
    if not routing.enabled:
        return None
    problems.extend(missing)
    if routing.plugin not in registry:
        problems.append(f"{where}.plugin: {registry.why_missing(routing.plugin)}")
        return None
    model = registry.get(routing.plugin).settings_model
    plugin_table = {k: v for k, v in expanded.items() if k not in ROUTING_KEYS}
    try:
        settings = model.model_validate(plugin_table)
    except ValidationError as exc:
        # A field whose variable is unset is already reported; its emptiness is not news.
        unset = tuple(m.split(": ", 1)[0] for m in missing)
        problems.extend(
            p
            for p in _field_problems(where, exc)
            if not p.startswith(tuple(f"{u}:" for u in unset))
        )
        return None
    except ValueError as exc:  # a plugin's own validator raising outside pydantic's wrapping
        problems.append(f"{where}: {exc}")
        return None
    for secret in secrets_in(settings):
        register_secret(secret)
    return DestinationConfig(name=name, routing=routing, settings=settings)


def _mentions_variables(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(_mentions_variables(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_variables(v) for v in value)
    return False


def _field_problems(where: str, exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"{where}.{loc}: {message}" if loc else f"{where}: {message}")
    return problems
