"""The README stays true: its plugin example is the tested fixture, and every hook is documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from router_core import hookspecs

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FIXTURE = ROOT / "tests" / "fixtures" / "webhook_plugin"


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_plugin_example_is_the_tested_plugin() -> None:
    module = (FIXTURE / "event_router_webhook" / "__init__.py").read_text(encoding="utf-8")
    pyproject = (FIXTURE / "pyproject.toml").read_text(encoding="utf-8")
    assert module in _code_blocks("python")
    assert pyproject in _code_blocks("toml")


def test_every_hook_is_documented_in_the_readme() -> None:
    hooks = [
        name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "event_router_spec")
    ]
    assert sorted(hooks) == [
        "batch_limits",
        "dead_lettered",
        "delivery_attempted",
        "destination_settings",
        "event_types",
        "send_batch",
        "send_event",
        "transform_event",
    ]
    for hook in hooks:
        assert f"`{hook}(" in README, f"hook {hook} is not documented in the README"


def test_readme_names_the_two_commands() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_every_test_the_reliability_doc_names_exists() -> None:
    """docs/reliability.md says which test proves each failure mode: each must exist."""
    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = 0
    for row in re.findall(r"^\|.*`[\w/]+\.py::.*\|\s*$", doc, flags=re.MULTILINE):
        current = None
        for token in re.findall(r"`([^`]+)`", row.rsplit("|", 2)[1]):
            if ".py::" in token:
                current, _, name = token.partition("::")
            elif token.startswith("::"):
                name = token[2:]
            else:
                continue
            assert current is not None, row
            source = (ROOT / current).read_text(encoding="utf-8")
            test = re.sub(r"\[.*", "", name)
            if test:
                assert re.search(rf"def {re.escape(test)}\b", source), f"{current}::{test}"
                named += 1
    assert named > 50


def test_every_module_is_in_the_readme_layout() -> None:
    """The README's layout names every module of router_core (or its package)."""
    layout = README[README.index("## Project layout") :]
    core = ROOT / "router_core"
    for path in sorted(core.rglob("*.py")):
        relative = path.relative_to(core)
        package = relative.parts[0] if len(relative.parts) > 1 else None
        if package is not None:
            assert f"router_core/{package}/" in layout or f"`{package}/`" in layout, relative
            if package == "outbox" and len(relative.parts) == 2 and relative.stem != "__init__":
                assert f"`{relative.name}`" in layout, relative  # its modules, one by one
        else:
            assert f"`{relative.name}`" in layout or f"`router_core/{relative.name}`" in layout, (
                relative
            )


def test_every_setting_is_in_the_readme_reference() -> None:
    """Every key a config file may use appears, as `key`, in the README (datasette's
    test_settings_are_documented)."""
    from event_router_posthog import PostHogSettings
    from event_router_segment import SegmentSettings

    from router_core.settings import (
        HttpSettings,
        LoggingSettings,
        QueueRetrySettings,
        QueueSettings,
        RetrySettings,
        RoutingSettings,
    )

    models: dict[str, Any] = {
        "": RoutingSettings,
        "retry.": RetrySettings,
        "queue ": QueueSettings,
        "queue.retry ": QueueRetrySettings,
        "logging ": LoggingSettings,
        "http ": HttpSettings,
        "segment ": SegmentSettings,
        "posthog ": PostHogSettings,
    }
    undocumented = []
    for prefix, model in models.items():
        for name, info in model.model_fields.items():
            key = info.alias if isinstance(info.alias, str) else name
            dotted = f"`{prefix}{key}`" if prefix.endswith(".") else None
            if f"`{key}`" not in README and (dotted is None or dotted not in README):
                undocumented.append(f"{prefix.strip()}{' ' if prefix else ''}{key}")
    assert undocumented == []
