"""Finding, loading and calling destination plugins: a typed facade over pluggy.

Entry points are loaded one by one so a plugin that fails to import is reported by name while
the others load. Each plugin's hooks are called on their own, through a hook caller restricted to
that plugin, which keeps pluggy's tracing (``add_hookcall_monitoring``) working.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from router_core import hookspecs
from router_core.errors import PluginLoadError
from router_core.logs import get_logger
from router_core.results import BatchLimits
from router_core.settings import DestinationSettings

__all__ = ["PLUGINS_ENV_VAR", "LoadedPlugin", "PluginInfo", "PluginRegistry", "default_registry"]

PLUGINS_ENV_VAR = "EVENT_ROUTER_PLUGINS"


_PLUGIN_HOOKS = ("batch_limits", "destination_settings", "send_batch", "send_event")


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
    send_batch: Callable[..., list[Any]] | None = None
    batch_is_async: bool = False


class PluginRegistry:
    """The plugins a router can route to, keyed by plugin name (the entry-point name).

    ``PluginRegistry()`` loads the installed entry points (restricted by ``EVENT_ROUTER_PLUGINS``:
    unset loads all, empty loads none, otherwise a comma-separated list of names). Tests and apps
    can add plugins in-process with ``register(obj, name)``.
    """

    def __init__(self, *, entry_points: bool = True, only: Iterable[str] | None = None) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._loaded: dict[str, LoadedPlugin] = {}
        if entry_points:
            self.load_entry_points(only=only)

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager, e.g. for ``add_hookcall_monitoring``."""
        return self._pm

    # -- loading ------------------------------------------------------------------------------

    def load_entry_points(self, only: Iterable[str] | None = None) -> None:
        """Load every ``event_router`` entry point, or those named in ``only`` / the env var."""
        allowed = _allowed_names(only)
        for ep in metadata.entry_points(group=hookspecs.PROJECT_NAME):
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
        try:
            self._pm.register(obj, name=name)
        except Exception as exc:  # pluggy's PluginValidationError, duplicate objects, ...
            return self._fail(name, str(exc), dist, version, module)
        try:
            self._pm.check_pending()  # an implementation whose name matches no hook (a typo)
            loaded = self._resolve(obj, name, PluginInfo(name, dist, version, module))
        except Exception as exc:
            self._pm.unregister(obj)
            return self._fail(name, str(exc), dist, version, module)
        self._loaded[name] = loaded
        self._infos[name] = loaded.info
        # A restricted caller excludes the plugins known when it was made: remake them all so
        # each still calls its own plugin only.
        for other in self._loaded.values():
            other.send_event = self._restricted_caller("send_event", other.obj)
            if other.send_batch is not None:
                other.send_batch = self._restricted_caller("send_batch", other.obj)
        return None

    def _fail(
        self, name: str, reason: str, dist: str | None, version: str | None, module: str | None
    ) -> str:
        get_logger("event_router.plugins").warning("plugin_load_failed", plugin=name, error=reason)
        self._infos.setdefault(name, PluginInfo(name, dist, version, module, error=reason))
        return reason

    def _resolve(self, obj: object, name: str, info: PluginInfo) -> LoadedPlugin:
        impls = {
            hook_name: impl
            for hook_name in _PLUGIN_HOOKS
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls()
            if impl.plugin is obj
        }
        if "send_event" not in impls:
            raise ValueError("it does not implement the send_event hook")
        settings_model: type[DestinationSettings] = _EmptySettings
        if "destination_settings" in impls:
            declared = impls["destination_settings"].function()
            if not (isinstance(declared, type) and issubclass(declared, DestinationSettings)):
                raise TypeError(
                    "destination_settings() must return a DestinationSettings subclass, "
                    f"not {declared!r}"
                )
            settings_model = declared
        limits = BatchLimits()
        if "batch_limits" in impls:
            limits = impls["batch_limits"].function()
            if not isinstance(limits, BatchLimits):
                raise TypeError(f"batch_limits() must return BatchLimits, not {limits!r}")
        hooks = tuple(sorted(impls))
        loaded = LoadedPlugin(
            name=name,
            obj=obj,
            settings_model=settings_model,
            send_event=self._restricted_caller("send_event", obj),
            is_async=inspect.iscoroutinefunction(impls["send_event"].function),
            info=PluginInfo(info.name, info.distribution, info.version, info.module, hooks),
            limits=limits,
        )
        if "send_batch" in impls:
            loaded.send_batch = self._restricted_caller("send_batch", obj)
            loaded.batch_is_async = inspect.iscoroutinefunction(impls["send_batch"].function)
        return loaded

    def _restricted_caller(self, hook: str, obj: object) -> Callable[..., list[Any]]:
        """A caller of ``hook`` that runs ``obj``'s implementation only."""
        others = [p for p in self._pm.get_plugins() if p is not obj]
        return self._pm.subset_hook_caller(hook, remove_plugins=others)

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
            hint = f" ({PLUGINS_ENV_VAR}={os.environ[PLUGINS_ENV_VAR]!r} restricts loading)"
        return f"unknown plugin {name!r}; loaded plugins: {available}{hint}"

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def names(self) -> list[str]:
        return sorted(self._loaded)

    def infos(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, sorted by name."""
        return [self._infos[n] for n in sorted(self._infos)]

    def failures(self) -> dict[str, str]:
        return {n: i.error for n, i in sorted(self._infos.items()) if i.error is not None}


def _allowed_names(only: Iterable[str] | None) -> set[str] | None:
    if only is not None:
        return set(only)
    raw = os.environ.get(PLUGINS_ENV_VAR)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


_default_registries: dict[str | None, PluginRegistry] = {}


def default_registry() -> PluginRegistry:
    """The process-wide registry of installed plugins (honours ``EVENT_ROUTER_PLUGINS``)."""
    key = os.environ.get(PLUGINS_ENV_VAR)
    registry = _default_registries.get(key)
    if registry is None:
        registry = _default_registries[key] = PluginRegistry()
    return registry
