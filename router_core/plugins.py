"""Finding, loading and calling destination plugins: a typed facade over pluggy.

Entry points are loaded one by one so a plugin that fails to import is reported by name while
the others load. Each plugin's hooks are called on their own, through a pluggy manager that
holds that plugin only, so pluggy's validation, ``firstresult`` and tracing
(``add_hookcall_monitoring``) all work as pluggy documents them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from router_core import hookspecs
from router_core.errors import PluginLoadError
from router_core.limits import BatchLimits
from router_core.logs import get_logger
from router_core.settings import DestinationSettings
from router_core.settings.problems import did_you_mean

__all__ = ["PLUGINS_ENV_VAR", "LoadedPlugin", "PluginInfo", "PluginRegistry", "default_registry"]

PLUGINS_ENV_VAR = "EVENT_ROUTER_PLUGINS"


_PLUGIN_HOOKS = (
    "batch_limits",
    "dead_lettered",
    "delivery_attempted",
    "destination_settings",
    "event_types",
    "send_batch",
    "send_event",
    "transform_event",
)
# A plugin must implement one of these to be of any use: deliver, transform, or observe.
_ROLE_HOOKS = frozenset({"send_event", "transform_event", "delivery_attempted", "dead_lettered"})

_Before = Callable[[str, Sequence[pluggy.HookImpl], Mapping[str, Any]], None]
_After = Callable[[pluggy.Result[Any], str, Sequence[pluggy.HookImpl], Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What ``event-router plugins`` shows about one plugin, loaded or not."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    hooks: tuple[str, ...] = ()
    error: str | None = None

    @property
    def loaded(self) -> bool:
        return self.error is None


class _EmptySettings(DestinationSettings):
    """Settings of a plugin that declares none: any extra key is an error."""


@dataclass(slots=True)
class LoadedPlugin:
    """One registered plugin, with its hooks resolved for fast, isolated calls."""

    name: str
    obj: object
    settings_model: type[DestinationSettings]
    send_event: Callable[..., list[Any]]
    is_async: bool
    info: PluginInfo = field(repr=False)
    limits: BatchLimits = field(default_factory=BatchLimits)
    """The limits when they do not depend on settings; ``limits_for`` gives a destination's."""
    batch_limits: Callable[..., Any] | None = None
    send_batch: Callable[..., list[Any]] | None = None
    batch_is_async: bool = False
    transform_event: Callable[..., Any] | None = None
    event_types: Callable[..., Any] | None = None

    @property
    def delivers(self) -> bool:
        """Whether the plugin implements ``send_event`` (a destination may name it)."""
        return "send_event" in self.info.hooks

    def limits_for(self, settings: DestinationSettings) -> BatchLimits:
        """The ``BatchLimits`` of a destination with ``settings`` (``batch_limits(settings)``)."""
        if self.batch_limits is None:
            return self.limits
        return _checked_limits(self.batch_limits(settings=settings))


def _checked_limits(limits: object) -> BatchLimits:
    if limits is None:
        return BatchLimits()
    if not isinstance(limits, BatchLimits):
        raise TypeError(f"batch_limits() must return BatchLimits, not {limits!r}")
    return limits


@dataclass(slots=True)
class _Monitor:
    """One ``add_hookcall_monitoring`` of the registry, applied to each manager it watches."""

    before: _Before
    after: _After
    undos: list[Callable[[], None]] = field(default_factory=list)

    def watch(self, manager: pluggy.PluginManager) -> None:
        self.undos.append(manager.add_hookcall_monitoring(self.before, self.after))

    def stop(self) -> None:
        undos, self.undos = self.undos, []
        for undo in undos:
            undo()


class PluginRegistry:
    """The plugins a router can route to, keyed by plugin name (the entry-point name).

    ``PluginRegistry()`` loads the installed entry points (restricted by ``EVENT_ROUTER_PLUGINS``:
    unset loads all, empty loads none, otherwise a comma-separated list of names). Tests and apps
    can add plugins in-process with ``register(obj, name)``.

    Each plugin gets a pluggy ``PluginManager`` of its own: a destination's hooks are answered
    by its plugin alone, so ``manager.hook.send_event(...)`` calls exactly one implementation,
    ``firstresult`` hooks return that plugin's answer, and registering another plugin changes
    nothing for the plugins already loaded. ``plugin_manager`` holds every plugin as well, for
    hooks that are broadcast to all of them.
    """

    def __init__(self, *, entry_points: bool = True, only: Iterable[str] | None = None) -> None:
        self._pm = _new_manager()
        self._infos: dict[str, PluginInfo] = {}
        self._loaded: dict[str, LoadedPlugin] = {}
        self._managers: list[pluggy.PluginManager] = [self._pm]
        self._monitors: list[_Monitor] = []
        self._unmatched: list[str] = []
        if entry_points:
            self.load_entry_points(only=only)

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pluggy manager holding every loaded plugin (for broadcast hooks).

        To trace destination hook calls use ``add_hookcall_monitoring`` on the registry: each
        plugin's destination hooks run through a manager of that plugin's own.
        """
        return self._pm

    def add_hookcall_monitoring(self, before: _Before, after: _After) -> Callable[[], None]:
        """pluggy's ``add_hookcall_monitoring`` over every plugin's hook calls, present and
        future; returns the function that undoes it."""
        monitor = _Monitor(before, after)
        for manager in self._managers:
            monitor.watch(manager)
        self._monitors.append(monitor)

        def undo() -> None:
            if monitor in self._monitors:
                self._monitors.remove(monitor)
            monitor.stop()

        return undo

    # -- loading ------------------------------------------------------------------------------

    def load_entry_points(self, only: Iterable[str] | None = None) -> None:
        """Load every ``event_router`` entry point, or those named in ``only`` / the env var."""
        allowed = _allowed_names(only)
        found = metadata.entry_points(group=hookspecs.PROJECT_NAME)
        if allowed is not None and only is None:
            self._check_allowed(allowed, {ep.name for ep in found})
        for ep in found:
            if (allowed is not None and ep.name not in allowed) or ep.name in self._infos:
                continue
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                obj = ep.load()
            except Exception as exc:  # any import-time failure must not stop the others
                self._fail(ep.name, f"{type(exc).__name__}: {exc}", dist_name, version, ep.value)
                continue
            self._register(obj, ep.name, dist_name, version)

    def _check_allowed(self, allowed: set[str], installed: set[str]) -> None:
        """A name in ``EVENT_ROUTER_PLUGINS`` that no installed plugin has is a typo, not a
        choice: say so (once per process and value) instead of loading nothing silently."""
        for name in sorted(allowed - installed):
            line = (
                f"{PLUGINS_ENV_VAR} names {name!r}, which no installed plugin is called"
                f"{did_you_mean(name, installed)}"
            )
            self._unmatched.append(line)
            if line not in _warned:
                _warned.add(line)
                get_logger("event_router.plugins").warning(
                    "plugin_not_installed", plugin=name, problem=line
                )

    def unmatched(self) -> list[str]:
        """One line per ``EVENT_ROUTER_PLUGINS`` entry that names no installed plugin."""
        return list(self._unmatched)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (module, class instance, ...) in-process.

        Raises ``PluginLoadError`` when its hooks do not match the hook specs.
        """
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        error = self._register(plugin, plugin_name, None, None)
        if error is not None:
            raise PluginLoadError(plugin_name, error)

    def _register(
        self, obj: object, name: str, dist: str | None, version: str | None
    ) -> str | None:
        """Register ``obj``; return why it failed, or None."""
        module = getattr(obj, "__name__", None) or type(obj).__module__
        if name in self._loaded:
            reason = "a plugin with this name is already registered"
            return self._fail(name, reason, dist, version, module)
        own = _new_manager()
        try:
            own.register(obj, name=name)
            own.check_pending()  # an implementation whose name matches no hook (a typo)
            loaded = self._resolve(own, obj, name, PluginInfo(name, dist, version, module))
            self._pm.register(obj, name=name)
        except Exception as exc:  # pluggy's PluginValidationError, bad hook answers, ...
            return self._fail(name, str(exc), dist, version, module)
        for monitor in self._monitors:
            monitor.watch(own)
        self._managers.append(own)
        self._loaded[name] = loaded
        self._infos[name] = loaded.info
        return None

    def _fail(
        self, name: str, reason: str, dist: str | None, version: str | None, module: str | None
    ) -> str:
        get_logger("event_router.plugins").warning("plugin_load_failed", plugin=name, error=reason)
        self._infos.setdefault(name, PluginInfo(name, dist, version, module, error=reason))
        return reason

    def _resolve(
        self, own: pluggy.PluginManager, obj: object, name: str, info: PluginInfo
    ) -> LoadedPlugin:
        hook = own.hook
        implemented = {h for h in _PLUGIN_HOOKS if getattr(hook, h).get_hookimpls()}
        if not implemented & _ROLE_HOOKS:
            raise ValueError(
                "it does not implement the send_event hook (nor transform_event, "
                "delivery_attempted or dead_lettered)"
            )
        if "transform_event" in implemented and _is_async(hook.transform_event):
            raise TypeError("transform_event must be a plain def (transforms are CPU work)")
        settings_model: type[DestinationSettings] = _EmptySettings
        declared = hook.destination_settings()  # firstresult: this plugin's answer, or None
        if declared is not None:
            if not (isinstance(declared, type) and issubclass(declared, DestinationSettings)):
                raise TypeError(
                    "destination_settings() must return a DestinationSettings subclass, "
                    f"not {declared!r}"
                )
            settings_model = declared
        # Limits that ignore settings are asked for (and checked) once, now; others per
        # destination, through limits_for().
        per_destination: Callable[..., Any] | None = None
        limits = BatchLimits()
        if any(impl.argnames for impl in hook.batch_limits.get_hookimpls()):
            per_destination = hook.batch_limits
        else:
            limits = _checked_limits(hook.batch_limits(settings=None))
        return LoadedPlugin(
            name=name,
            obj=obj,
            settings_model=settings_model,
            send_event=hook.send_event,
            is_async=_is_async(hook.send_event),
            info=PluginInfo(
                info.name, info.distribution, info.version, info.module, tuple(sorted(implemented))
            ),
            limits=limits,
            batch_limits=per_destination,
            send_batch=hook.send_batch if "send_batch" in implemented else None,
            batch_is_async="send_batch" in implemented and _is_async(hook.send_batch),
            transform_event=hook.transform_event if "transform_event" in implemented else None,
            event_types=hook.event_types if "event_types" in implemented else None,
        )

    # -- queries ------------------------------------------------------------------------------

    def get(self, name: str) -> LoadedPlugin:
        """The loaded plugin called ``name``; ``KeyError`` with a helpful message otherwise."""
        try:
            return self._loaded[name]
        except KeyError:
            raise KeyError(self.why_missing(name)) from None

    def why_missing(self, name: str) -> str:
        info = self._infos.get(name)
        if info is not None and info.error:
            return f"plugin {name!r} failed to load: {info.error}"
        available = ", ".join(sorted(self._loaded)) or "none"
        hint = ""
        if os.environ.get(PLUGINS_ENV_VAR) is not None:
            hint = f" ({PLUGINS_ENV_VAR}={os.environ[PLUGINS_ENV_VAR]!r} restricts loading"
            hint += "".join(f"; {line}" for line in self._unmatched) + ")"
        guess = did_you_mean(name, [*self._loaded, *self._infos])
        return f"unknown plugin {name!r}; loaded plugins: {available}{hint}{guess}"

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def infos(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, sorted by name."""
        return [self._infos[n] for n in sorted(self._infos)]

    def failures(self) -> dict[str, str]:
        return {n: i.error for n, i in sorted(self._infos.items()) if i.error is not None}


def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return manager


def _is_async(caller: pluggy.HookCaller) -> bool:
    """Whether the one implementation behind ``caller`` is an ``async def``."""
    return all(inspect.iscoroutinefunction(impl.function) for impl in caller.get_hookimpls())


def _allowed_names(only: Iterable[str] | None) -> set[str] | None:
    if only is not None:
        return set(only)
    raw = os.environ.get(PLUGINS_ENV_VAR)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


_warned: set[str] = set()  # EVENT_ROUTER_PLUGINS problems already logged by this process

_default_registries: dict[str | None, PluginRegistry] = {}


def default_registry() -> PluginRegistry:
    """The process-wide registry of installed plugins (honours ``EVENT_ROUTER_PLUGINS``)."""
    key = os.environ.get(PLUGINS_ENV_VAR)
    registry = _default_registries.get(key)
    if registry is None:
        registry = _default_registries[key] = PluginRegistry()
    return registry
