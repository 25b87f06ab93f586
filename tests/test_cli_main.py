"""The `event-router` group: version, help, and exit codes for usage and internal errors."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import structlog
from click.testing import CliRunner, Result

import router_core.cli.plugins as plugins_command
from router_core import PluginLoadError, PluginRegistry, configure_logging, hookimpl
from router_core.cli import main
from router_core.http import LIBRARY_VERSION


def invoke(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


def test_docs_describe_every_command() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    names = []
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            names += [f"{name} {sub}" for sub in command.commands]
        else:
            names.append(name)
    for name in names:
        assert f"\n## {name}\n" in docs, f"docs/cli.md has no section for {name!r}"
        assert f"event-router {name}" in docs
    assert "| 2 | bad input or config" in docs


def test_version() -> None:
    result = invoke(["--version"])

    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"event-router, version {LIBRARY_VERSION}"


class _Working:
    @hookimpl
    def send_event(self) -> None:
        raise NotImplementedError


class _Misspelt:
    @hookimpl
    def send_evnt(self) -> None:
        raise NotImplementedError


def test_version_lists_the_loaded_plugins_and_the_failed_ones() -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(_Working(), "ok_plugin")
    with pytest.raises(PluginLoadError):
        registry.register(_Misspelt(), "broken")

    result = CliRunner().invoke(main, ["--version"], obj=registry)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "plugins:"
    assert (
        lines[2]
        == "  broken (registered in-process)  failed to load: " + (registry.failures()["broken"])
    )
    assert lines[3] == "  ok_plugin (registered in-process)"


def test_version_shows_installed_plugin_distributions() -> None:
    result = invoke(["--version"], env={"EVENT_ROUTER_PLUGINS": None})

    assert "  segment event-router-segment " in result.stdout
    assert "  posthog event-router-posthog " in result.stdout


def test_no_command_prints_help_listing_every_command() -> None:
    result = invoke([])

    assert result.exit_code == 0
    for command in ("send", "run", "plugins", "config", "sandbox", "demo"):
        assert f"  {command} " in result.stdout


def test_every_command_has_help_and_a_json_option() -> None:
    for args in (["send"], ["run"], ["plugins"], ["config", "check"], ["sandbox"], ["demo"]):
        result = invoke([*args, "--help"])
        assert result.exit_code == 0, args
        assert "--json" in result.stdout, args


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["run"], "Missing argument 'JOB_FILE'"),
        (["run", "job.toml", "--max-attempts", "0"], "--max-attempts"),
        (["config", "check", "a.toml", "b.toml"], "unexpected extra argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], fragment: str) -> None:
    result = invoke(args)

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert fragment in line
    assert "--help" in line
    assert result.stdout == ""


def test_an_unknown_log_level_is_bad_input() -> None:
    result = invoke(
        ["send", "--event", "X", "--user-id", "u", "--config", "/dev/null"],
        env={"EVENT_ROUTER_LOG_LEVEL": "loud"},
    )

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "EVENT_ROUTER_LOG_LEVEL" in line


def test_main_leaves_logging_as_it_found_it() -> None:
    structlog.reset_defaults()
    invoke(["plugins", "--json"])
    assert not structlog.is_configured()

    configure_logging("json", "error")
    saved = structlog.get_config()
    try:
        invoke(["plugins", "--json"])
        assert structlog.get_config() == saved
    finally:
        structlog.reset_defaults()


def test_an_unexpected_exception_is_one_line_and_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(plugins_command, "plugin_registry", broken)

    result = invoke(["plugins"], env={"EVENT_ROUTER_DEBUG": None})

    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert "internal error: RuntimeError: boom" in line
    assert "Traceback" not in result.output
