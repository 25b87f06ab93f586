"""Loading the TOML config: destinations, `${VAR}` interpolation, and validation.

Every problem is collected before raising, so ``ConfigError.problems`` (and
``event-router config check``) lists them all: unknown plugins, bad fields, missing env vars.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from router_core.errors import ConfigError
from router_core.events import EventType
from router_core.jsonable import brief, printable, shape_problem
from router_core.plugins import PluginRegistry
from router_core.redaction import exception_text
from router_core.secrets import looks_secret, mask, register_secret, secrets_in
from router_core.settings import (
    ROUTING_KEYS,
    DestinationSettings,
    HttpSettings,
    LoggingSettings,
    QueueSettings,
    RoutingSettings,
    config_strings,
    validation_problems,
    without_echoes,
)
from router_core.settings.problems import did_you_mean
from router_core.transforms import TransformPipeline

__all__ = [
    "CONSENT_MISSING",
    "DestinationConfig",
    "LoggingSettings",
    "RouterConfig",
    "interpolate",
    "read_toml",
]

_EVENT_TYPES: tuple[str, ...] = get_args(EventType)

CONSENT_MISSING = ("deliver", "skip")
"""What ``[consent] missing`` may say about events that carry no consent object."""

DEFAULT_CONFIG_PATH = Path("config/router.toml")

MAX_CONFIG_CHARS = 4 * 1024**2
"""A config or job file longer than this is refused (a real one is a few kilobytes)."""

MAX_CONFIG_DEPTH = 32
"""Tables and arrays nest at most this deep below the top level (a real config uses 4)."""

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_toml(path: str | os.PathLike[str], kind: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; any failure is a ``ConfigError`` naming the file."""
    p = Path(path)
    try:
        # Bounded: /dev/zero or a runaway pipe must not fill memory.
        with p.open(encoding="utf-8") as file:
            text = file.read(MAX_CONFIG_CHARS + 1)
    except FileNotFoundError:
        raise ConfigError([f"{kind} {str(p)!r} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {kind} {str(p)!r}: {exc}"]) from None
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError([f"{kind} {str(p)!r} is longer than {MAX_CONFIG_CHARS:,} characters"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays / inline tables
        raise ConfigError(
            ["not valid TOML: arrays or inline tables are nested too deeply"], source=str(p)
        ) from None
    except ValueError:  # what else tomllib lets through: int() refusing a huge integer
        limit = sys.get_int_max_str_digits()
        raise ConfigError(
            [f"not valid TOML: an integer has more than {limit:,} digits"], source=str(p)
        ) from None
    problems = _shape_problems(data)  # dotted keys nest tables without tomllib recursing
    if problems:
        raise ConfigError(problems, source=str(p))
    return data


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """One destination, validated: router keys plus the plugin's own settings.

    ``transforms`` is the destination's transform pipeline (``None`` without transforms);
    ``event_types`` the types its plugin takes with these settings (``None``: all).
    """

    name: str
    routing: RoutingSettings
    settings: DestinationSettings
    transforms: TransformPipeline | None = None
    event_types: frozenset[str] | None = None

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


@dataclass(frozen=True, repr=False)
class RouterConfig:
    """The parsed config file: raw destination tables, interpolated only when resolved.

    ``repr()`` masks the tables' secrets (see ``router_core.secrets.mask``): keys given in code
    sit in them as plain strings.
    """

    destinations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    queue: Mapping[str, Any] | None = None
    source: str | None = None
    http: Mapping[str, Any] | None = None
    consent_missing: str = "deliver"
    base_dir: Path | None = None
    """The config file's directory, which a relative ``[queue] path`` is relative to
    (``None`` for a config built in code: relative to the working directory)."""

    def __repr__(self) -> str:
        return (
            f"RouterConfig(destinations={mask(dict(self.destinations))!r}, "
            f"logging={self.logging!r}, queue={mask(self.queue)!r}, source={self.source!r}, "
            f"http={mask(self.http)!r})"
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH,
        *,
        plugins: PluginRegistry | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RouterConfig:
        """Read a TOML config file. A relative ``[queue] path`` in it is relative to the file.

        With ``plugins``, the destinations are resolved too (``env`` expands their
        ``${VAR}``), so one ``ConfigError`` lists the file's problems and its destinations'
        together: a misspelt table does not hide a bad setting.
        """
        source = str(path)
        config, problems = cls._parse(read_toml(path), source, Path(path).parent)
        if plugins is not None:
            problems += config._resolve(plugins, env)[1]
        if problems:
            raise ConfigError(problems, source=source)
        return config

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> RouterConfig:
        """A config from a table built in code (relative paths stay relative to the working
        directory). Raises ``ConfigError`` listing every problem."""
        config, problems = cls._parse(data, source)
        if problems:
            raise ConfigError(problems, source=source)
        return config

    @classmethod
    def _parse(
        cls, data: Mapping[str, Any], source: str | None, base_dir: Path | None = None
    ) -> tuple[RouterConfig, list[str]]:
        """The config and every problem found, keeping what is valid so that resolving can
        report the destinations' problems alongside."""
        if not isinstance(data, Mapping):
            raise ConfigError(["the config must be a table"], source=source)
        problems = _shape_problems(data)
        if problems:  # too deep to walk safely, or keys TOML could not have written
            raise ConfigError(problems, source=source)
        unknown = sorted(set(data) - set(_TOP_LEVEL))
        if unknown:
            hints = [
                did_you_mean(key, _TOP_LEVEL, name=key if len(unknown) > 1 else None)
                for key in unknown
            ]
            problems.append(
                f"unknown top-level key(s) {', '.join(unknown)}; "
                f"expected {', '.join(_TOP_LEVEL)}{''.join(hints)}"
            )
        consent_missing = _consent_missing(data.get("consent", {}), problems)
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
            problems.extend(_field_problems("logging", exc, data.get("logging")))
        queue = data.get("queue")
        if queue is not None and not isinstance(queue, Mapping):
            problems.append("queue: must be a table")
            queue = None
        elif queue is not None and not _mentions_variables(queue):
            try:  # a table with ${VAR} is checked once expanded, by queue_settings()
                QueueSettings.coerce(queue)
            except ConfigError as exc:
                problems.extend(exc.problems)
        http = data.get("http")
        if http is not None and not isinstance(http, Mapping):
            problems.append("http: must be a table")
        elif http is not None and not _mentions_variables(http):
            try:  # a table with ${VAR} is checked once expanded, by http_settings()
                HttpSettings.model_validate(http)
            except ValidationError as exc:
                problems.extend(_field_problems("http", exc, http))
        config = cls(
            destinations={n: t for n, t in destinations.items() if isinstance(t, Mapping)},
            logging=logging,
            queue=queue,
            source=source,
            http=http,
            consent_missing=consent_missing,
            base_dir=base_dir,
        )
        return config, problems

    def http_settings(self, env: Mapping[str, str] | None = None) -> HttpSettings:
        """The ``[http]`` settings, with ``${VAR}`` expanded from ``env`` (default
        ``os.environ``); the defaults when the table is absent.

        Raises ``ConfigError`` naming each bad key and each unset variable.
        """
        if self.http is None:
            return HttpSettings()
        missing: list[str] = []
        environ = os.environ if env is None else env
        expanded = interpolate(dict(self.http), environ, "http", missing)
        if missing:
            raise ConfigError(missing, source=self.source)
        try:
            return HttpSettings.model_validate(expanded)
        except ValidationError as exc:
            raise ConfigError(_field_problems("http", exc, expanded), source=self.source) from None

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
        if override is None and self.base_dir is not None:
            expanded = _relative_to(self.base_dir, expanded)
        return QueueSettings.coerce(expanded)

    def resolve(
        self, registry: PluginRegistry, env: Mapping[str, str] | None = None
    ) -> list[DestinationConfig]:
        """Interpolate and validate every enabled destination against its plugin's model.

        Raises ``ConfigError`` listing every problem. Disabled destinations are skipped
        entirely, so their env vars need not be set.
        """
        resolved, problems = self._resolve(registry, env)
        if problems:
            raise ConfigError(problems, source=self.source)
        return resolved

    def _resolve(
        self, registry: PluginRegistry, env: Mapping[str, str] | None
    ) -> tuple[list[DestinationConfig], list[str]]:
        environ = os.environ if env is None else env
        problems: list[str] = []
        resolved: list[DestinationConfig] = []
        for name, table in self.destinations.items():
            destination = _resolve_one(name, table, registry, environ, problems)
            if destination is not None:
                resolved.append(destination)
        return resolved, problems


_TOP_LEVEL = ("consent", "destinations", "http", "logging", "queue")


def _relative_to(base_dir: Path, queue: dict[str, Any]) -> dict[str, Any]:
    """``queue`` with a relative ``path`` made relative to ``base_dir`` (the config file's
    directory): the outbox is the same file whichever directory a command runs from."""
    path = queue.get("path")
    if not isinstance(path, str) or "url" in queue:
        return queue  # a url names its file itself; a wrong type is the model's to report
    full = Path(path).expanduser()
    if full.is_absolute():
        return queue
    return {**queue, "path": str(base_dir / full)}


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
    # Transforms are the router's, not the plugin's: out before the keys are split.
    transform_tables = expanded.pop("transforms", None)
    routing_table = {k: v for k, v in expanded.items() if k in ROUTING_KEYS}
    routing: RoutingSettings | None = None
    routing_problems: list[str] = []
    try:
        routing = RoutingSettings.model_validate(routing_table)
    except ValidationError as exc:
        routing_problems = _field_problems(where, exc, expanded)
        problems.extend(routing_problems)
    if not (routing.enabled if routing is not None else expanded.get("enabled") is not False):
        return None  # disabled: its plugin and settings are not checked
    problems.extend(missing)
    # A bad routing key (a timeout of 0) must not hide a bad plugin setting: the plugin's own
    # keys are checked whenever the plugin is known.
    plugin_name = routing.plugin if routing is not None else expanded.get("plugin")
    if not isinstance(plugin_name, str) or plugin_name not in registry:
        if isinstance(plugin_name, str) and not any(
            p.startswith(f"{where}.plugin:") for p in routing_problems
        ):  # (a plugin of the wrong type, or none, is reported already)
            why = registry.why_missing(plugin_name)
            if _may_be_a_key(plugin_name, registry, expanded):
                why = without_echoes(why, [plugin_name])
            problems.append(f"{where}.plugin: {why}")
        return None
    plugin = registry.get(plugin_name)
    if not plugin.delivers:
        problems.append(
            f"{where}.plugin: plugin {plugin_name!r} does not implement send_event "
            f"(it implements {', '.join(plugin.info.hooks)}), so it cannot deliver"
        )
        return None
    pipeline: TransformPipeline | None = None
    try:
        pipeline = TransformPipeline.build(
            name, transform_tables, registry, where=f"{where}.transforms"
        )
    except ConfigError as exc:
        problems.extend(exc.problems)
    settings = _plugin_settings(where, plugin.settings_model, expanded, missing, problems)
    if settings is None or routing is None:
        return None
    for secret in secrets_in(settings):
        register_secret(secret)
    event_types = _event_types(plugin.event_types, settings, where, problems)
    return DestinationConfig(
        name=name,
        routing=routing,
        settings=settings,
        transforms=pipeline,
        event_types=event_types,
    )


def _plugin_settings(
    where: str,
    model: type[DestinationSettings],
    expanded: Mapping[str, Any],
    missing: list[str],
    problems: list[str],
) -> DestinationSettings | None:
    """The plugin's own settings of one destination, or None with its problems appended."""
    plugin_table = {k: v for k, v in expanded.items() if k not in ROUTING_KEYS}
    try:
        return model.model_validate(plugin_table)
    except ValidationError as exc:
        # A field whose variable is unset is already reported; its emptiness is not news.
        unset = tuple(m.split(": ", 1)[0] for m in missing)
        known = {"": [*_field_names(model), *ROUTING_KEYS, "transforms"]}
        problems.extend(
            p
            for p in validation_problems(exc, where, table=expanded, known=known)
            if not p.startswith(tuple(f"{u}:" for u in unset))
        )
    except Exception as exc:  # a plugin's validator raising what pydantic does not wrap
        text = exception_text(exc)
        if not isinstance(exc, ValueError):
            text = f"{type(exc).__name__}: {text}"
        problems.append(f"{where}: {without_echoes(text, config_strings(expanded))}")
    return None


def _event_types(
    hook: Callable[..., Any] | None,
    settings: DestinationSettings,
    where: str,
    problems: list[str],
) -> frozenset[str] | None:
    """The event types a plugin says it takes with ``settings`` (``None``: all)."""
    if hook is None:
        return None
    try:
        declared = hook(settings=settings)  # firstresult: the plugin's answer, or None
    except Exception as exc:
        problems.append(f"{where}: event_types() raised {type(exc).__name__}: {exc}")
        return None
    if declared is None:
        return None
    if isinstance(declared, str) or not all(t in _EVENT_TYPES for t in declared):
        problems.append(
            f"{where}: event_types() must return event types "
            f"({', '.join(_EVENT_TYPES)}), not {brief(declared)}"
        )
        return None
    return frozenset(declared)


def _consent_missing(table: Any, problems: list[str]) -> str:
    """``[consent] missing``: what events with no consent object do (default: deliver)."""
    if not isinstance(table, Mapping):
        problems.append("consent: must be a table")
        return "deliver"
    unknown = sorted(set(table) - {"missing"})
    if unknown:
        problems.append(f"consent: unknown key(s) {', '.join(unknown)}; expected missing")
    missing = table.get("missing", "deliver")
    if missing not in CONSENT_MISSING:
        problems.append(f"consent.missing: must be 'deliver' or 'skip', not {brief(missing)}")
        return "deliver"
    return str(missing)


def _field_names(model: type[DestinationSettings]) -> list[str]:
    """The keys a settings table may use: field names, and aliases where there are."""
    names = []
    for field_name, info in model.model_fields.items():
        names.append(info.alias if isinstance(info.alias, str) else field_name)
    return names


def _mentions_variables(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(_mentions_variables(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_variables(v) for v in value)
    return False


def _shape_problems(data: Mapping[Any, Any]) -> list[str]:
    """Keys that are not strings, and tables nested beyond ``MAX_CONFIG_DEPTH``.

    TOML writes neither; a dict built in code can, and later steps (interpolation, error
    messages) must be able to walk and print every key.
    """
    problems = []
    for key, value in data.items():
        if not isinstance(key, str):
            problems.append(f"key {brief(key)} must be a string")
            continue
        problem = shape_problem(value, MAX_CONFIG_DEPTH, printable(key))
        if problem is not None:
            problems.append(problem)
    return problems


def _field_problems(where: str, exc: ValidationError, table: Any = None) -> list[str]:
    return validation_problems(exc, where, table=table)


# What a plugin's name looks like (lowercase words, perhaps a number at the end); random keys
# mix cases or digits in, so an unknown name shaped like this is shown to point out a typo.
_PLUGIN_NAME = re.compile(r"[a-z][a-z_.-]{0,30}[0-9]{0,2}")


def _may_be_a_key(plugin: str, registry: PluginRegistry, table: Mapping[str, Any]) -> bool:
    if plugin in {info.name for info in registry.infos()}:
        return False  # installed, but failed to load: its name is no secret
    others = [v for k, v in table.items() if k != "plugin"]
    return (
        not _PLUGIN_NAME.fullmatch(plugin)
        or looks_secret(plugin)
        or plugin in config_strings(others)
    )
