"""`event-router plugins`: installed plugins, their load errors, and who uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import router_core.cli.plugins as plugins_command
from router_core import PluginLoadError, PluginRegistry, hookimpl
from router_core.cli import main

ENV: dict[str, str | None] = {"COLUMNS": "200", "EVENT_ROUTER_PLUGINS": None}


def invoke(args: list[str], env: dict[str, str | None] | None = None, obj: object = None) -> Result:
    # obj: a PluginRegistry the command line uses instead of the installed plugins.
    return CliRunner().invoke(main, args, env={**ENV, **(env or {})}, obj=obj)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- plugins ----------------------------------------------------------------------------------


def test_plugins_json_lists_the_installed_segment_and_posthog_plugins(tmp_path: Path) -> None:
    result = invoke(["plugins", "--json", "--config", str(write(tmp_path / "r.toml", ""))])

    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["plugins"]}
    assert {"segment", "posthog"} <= set(rows)
    segment, posthog = rows["segment"], rows["posthog"]
    assert segment["loaded"] is True
    assert segment["distribution"] == "event-router-segment"
    assert segment["module"] == "event_router_segment"
    assert segment["destination_type"] == "segment"
    assert segment["version"]
    assert {"send_event", "destination_settings"} <= set(segment["hooks"])
    assert posthog["distribution"] == "event-router-posthog"
    assert posthog["error"] is None


def test_plugins_shows_which_configured_destinations_use_each(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.toml",
        """
[destinations.segment_us]
plugin = "segment"
write_key = "${NOT_NEEDED_TO_LIST}"

[destinations.segment_eu]
plugin = "segment"
region = "eu"

[destinations.product]
plugin = "posthog"

[destinations.crm]
plugin = "hubspot"
""",
    )

    result = invoke(["plugins", "--config", str(config), "--json"])

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {row["name"]: row for row in out["plugins"]}
    assert rows["segment"]["used_by"] == ["segment_us", "segment_eu"]
    assert rows["posthog"]["used_by"] == ["product"]
    assert out["destinations_without_plugin"] == {"crm": "hubspot"}

    human = invoke(["plugins", "--config", str(config)])
    assert human.exit_code == 0
    assert "segment_us, segment_eu" in human.stdout
    assert "'crm' names plugin 'hubspot', which is not installed" in human.stdout


class _Webhook:
    """A working in-process plugin."""

    @hookimpl
    def send_event(self) -> None:
        raise NotImplementedError


class _Misspelt:
    """A plugin with a hook name that matches no spec: it must fail to load."""

    @hookimpl
    def send_evnt(self) -> None:
        raise NotImplementedError


def test_a_plugin_that_failed_to_load_is_listed_with_its_error() -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(_Webhook(), "webhook")
    with pytest.raises(PluginLoadError):
        registry.register(_Misspelt(), "broken")

    as_json = invoke(["plugins", "--json"], obj=registry)
    human = invoke(["plugins"], obj=registry)

    assert as_json.exit_code == 0, as_json.output
    rows = {row["name"]: row for row in json.loads(as_json.stdout)["plugins"]}
    assert rows["webhook"]["loaded"] is True
    assert rows["webhook"]["distribution"] is None
    assert rows["broken"]["loaded"] is False
    assert "send_evnt" in rows["broken"]["error"]
    assert rows["broken"]["destination_type"] is None
    assert human.exit_code == 0
    assert "broken  failed to load:" in human.stdout
    assert "webhook  loaded" in human.stdout


def test_load_warnings_go_to_stderr_and_json_stays_alone_on_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def registry_with_a_broken_plugin() -> PluginRegistry:
        registry = PluginRegistry(entry_points=False)
        with pytest.raises(PluginLoadError):
            registry.register(_Misspelt(), "broken")  # logs plugin_load_failed
        return registry

    monkeypatch.setattr(plugins_command, "plugin_registry", registry_with_a_broken_plugin)
    result = invoke(["plugins", "--json"])

    assert result.exit_code == 0
    assert [row["name"] for row in json.loads(result.stdout)["plugins"]] == ["broken"]
    assert "plugin_load_failed" in result.stderr


def test_plugins_with_a_missing_config_exits_2(tmp_path: Path) -> None:
    result = invoke(["plugins", "--config", str(tmp_path / "nope.toml")])

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "nope.toml" in result.stderr
