"""What every command shares: -h, whole summaries, -c/--config and EVENT_ROUTER_CONFIG, JSON
errors with --json, shell completion, readable error columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from router_core import (
    Delivery,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    hookimpl,
)
from router_core.cli import main
from router_core.cli.output import results_table
from router_core.results import DeliveryResult

ENV: dict[str, str | None] = {
    "COLUMNS": "80",
    "EVENT_ROUTER_PLUGINS": None,
    "EVENT_ROUTER_CONFIG": None,
}


def invoke(args: list[str], env: dict[str, str | None] | None = None, obj: object = None) -> Result:
    return CliRunner().invoke(main, args, env={**ENV, **(env or {})}, obj=obj)


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


def test_every_command_takes_h_as_help() -> None:
    for path in [(), *command_paths(main)]:
        short, long = invoke([*path, "-h"]), invoke([*path, "--help"])
        assert short.exit_code == 0, (path, short.output)
        assert short.stdout == long.stdout
        assert short.stdout.startswith("Usage: ")


def test_command_summaries_are_whole_at_80_columns() -> None:
    groups = [p for p in command_paths(main) if isinstance(main.commands[p[0]], click.Group)]
    for path in [(), *(p for p in groups if len(p) == 1)]:
        commands = invoke([*path, "--help"]).stdout.partition("\nCommands:\n")[2]
        assert commands.strip(), path
        assert "..." not in commands, commands
        assert "…" not in commands


def test_every_command_that_reads_a_config_names_it_with_c() -> None:
    readers = [("send",), ("plugins",), ("config", "check")]
    readers += [p for p in command_paths(main) if p[0] == "outbox" and len(p) == 2]
    for path in readers:
        result = invoke([*path, "--help"])
        assert "-c, --config FILE" in result.stdout, path
        assert "EVENT_ROUTER_CONFIG" in result.stdout, path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_config_check_takes_the_path_as_argument_option_or_environment(tmp_path: Path) -> None:
    good = write(
        tmp_path / "router.toml", '[destinations.x]\nplugin = "segment"\nwrite_key = "k"\n'
    )

    cases: list[tuple[list[str], dict[str, str | None]]] = [
        ([str(good)], {}),
        (["-c", str(good)], {}),
        (["--config", str(good)], {}),
        ([], {"EVENT_ROUTER_CONFIG": str(good)}),
    ]
    for args, env in cases:
        result = invoke(["config", "check", "--json", *args], env=env)
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.stdout)["config"] == str(good)


def test_config_check_refuses_two_different_configs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "")
    b = write(tmp_path / "b.toml", "")

    result = invoke(["config", "check", str(a), "-c", str(b)])

    assert result.exit_code == 2
    assert "two configs given" in result.stderr


def test_config_check_reports_file_and_destination_problems_in_one_run(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.toml",
        '[destinatons]\n[destinations.segment]\nplugin = "segment"\nwritekey = "k"\ntimeout = 0\n',
    )

    result = invoke(["config", "check", "--json", str(config)])

    assert result.exit_code == 2
    out = json.loads(result.stdout)
    assert out["ok"] is False
    assert out["exit_code"] == 2
    problems = out["problems"]
    assert any(p.startswith("unknown top-level key(s) destinatons") for p in problems)
    assert "destinations.segment.timeout: Input should be greater than 0" in problems
    assert "destinations.segment.writekey: unknown setting; did you mean 'write_key'?" in problems
    assert "destinations.segment.write_key: Field required" in problems


def test_an_unknown_plugin_gets_a_suggestion(tmp_path: Path) -> None:
    config = write(tmp_path / "router.toml", '[destinations.s]\nplugin = "segmnt"\n')

    result = invoke(["config", "check", str(config)])

    assert result.exit_code == 2
    assert "unknown plugin 'segmnt'; loaded plugins: " in result.stdout
    assert "; did you mean 'segment'?" in result.stdout


def test_a_misspelt_plugins_env_entry_is_shown_by_plugins(tmp_path: Path) -> None:
    result = invoke(
        ["plugins", "-c", str(write(tmp_path / "r.toml", ""))],
        env={"EVENT_ROUTER_PLUGINS": "posthgo,segment", "COLUMNS": "200"},
    )
    as_json = invoke(["plugins", "--json"], env={"EVENT_ROUTER_PLUGINS": "posthgo,segment"})

    line = (
        "EVENT_ROUTER_PLUGINS names 'posthgo', which no installed plugin is called; "
        "did you mean 'posthog'?"
    )
    assert result.exit_code == 0, result.output
    assert line in result.stdout
    assert json.loads(as_json.stdout)["problems"] == [line]


def test_a_misspelt_plugins_env_entry_is_warned_through_the_logger() -> None:
    env = {**os.environ, "EVENT_ROUTER_PLUGINS": "segment,postog"}
    env.pop("EVENT_ROUTER_LOG_LEVEL", None)
    done = subprocess.run(
        [event_router(), "plugins", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("plugin_not_installed") == 1, done.stderr
    assert "'postog'" in done.stderr
    json.loads(done.stdout)  # the warning stays off stdout


# -- --json errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--json", "--event", "E", "--user-id", "u", "-c", "MISSING"],
        ["send", "--json", "--type", "bogus"],
        ["plugins", "--json", "-c", "MISSING"],
        ["outbox", "status", "--json", "-c", "MISSING"],
        ["run", "--json", "MISSING.toml"],
    ],
)
def test_with_json_an_error_is_json_on_stdout_too(args: list[str], tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a.startswith("MISSING") else a for a in args]

    result = invoke(args)

    assert result.exit_code == 2
    error = json.loads(result.stdout)
    (line,) = result.stderr.splitlines()
    assert error["ok"] is False
    assert error["exit_code"] == 2
    assert error["error"] == line.removeprefix("error: ")
    assert error["problems"]


def test_send_type_is_case_insensitive(tmp_path: Path) -> None:
    config = write(tmp_path / "router.toml", "")

    result = invoke(["send", "--type", "Identify", "--user-id", "u", "-c", str(config), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


# -- outbox paths, from another directory -----------------------------------------------------


def test_outbox_status_finds_a_relative_outbox_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    config = write(
        project / "router.toml",
        '[queue]\npath = "outbox.db"\n\n[destinations.segment]\nplugin = "segment"\n'
        'write_key = "k"\nhost = "http://127.0.0.1:9"\n',
    )
    monkeypatch.chdir(project)
    with Router.from_config("router.toml", plugins=PluginRegistry()) as router:
        router.send({"type": "track", "event": "Signed Up", "user_id": "u"})
        router.close(timeout=0)
    monkeypatch.chdir(elsewhere)

    result = invoke(["outbox", "status", "--json", "-c", str(config)])
    by_env = invoke(["outbox", "status", "--json"], env={"EVENT_ROUTER_CONFIG": str(config)})

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["outbox"] == str(project / "outbox.db")
    assert status["exists"] is True
    assert status["events"] == 1
    assert json.loads(by_env.stdout) == status


# -- shell completion -------------------------------------------------------------------------


def event_router() -> str:
    return str(Path(sys.executable).parent / "event-router")


def test_the_completion_variable_prints_a_bash_script() -> None:
    env = {**os.environ, "_EVENT_ROUTER_COMPLETE": "bash_source"}

    done = subprocess.run([event_router()], env=env, capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert "_event_router_completion()" in done.stdout
    assert "complete -o nosort -F _event_router_completion event-router" in done.stdout


def test_completion_completes_command_names() -> None:
    env = {
        **os.environ,
        "_EVENT_ROUTER_COMPLETE": "bash_complete",
        "COMP_WORDS": "event-router out",
        "COMP_CWORD": "1",
    }

    done = subprocess.run([event_router()], env=env, capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["plain,outbox"]


# -- tables at 80 columns, network errors -----------------------------------------------------

LONG_ERROR = (
    "Segment API error: HTTP 400: the request body was refused because "
    "properties.order_identifier_for_the_checkout_flow is not a string"
)


@pytest.mark.parametrize("destination", ["segment", "segment_eu_production_account"])
def test_errors_in_a_results_table_are_never_broken_inside_a_word(destination: str) -> None:
    result = DeliveryResult(
        destination=destination,
        plugin="segment",
        success=False,
        status_code=400,
        error=LONG_ERROR,
        attempts=1,
        duration_ms=12.3,
    )
    out = Console(width=80, record=True, highlight=False, soft_wrap=True)

    out.print(results_table([(None, result)], width=80))

    text = out.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    words = text.replace("│", " ").replace("┃", " ").split()
    for word in LONG_ERROR.split():
        assert word in words, (word, text)


class _Unwrapped:
    """Lets httpx's own error through, as a plugin might."""

    @hookimpl
    async def send_event(
        self, destination: Destination[DestinationSettings], event: Event
    ) -> Delivery:
        await destination.client.post("http://127.0.0.1:9/v1/batch?key=secret-in-query")
        return Delivery(200)


def test_a_network_error_names_the_host_it_could_not_reach(tmp_path: Path) -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(_Unwrapped(), "raw")
    config = write(
        tmp_path / "router.toml",
        '[destinations.raw]\nplugin = "raw"\nretry = { max_attempts = 1 }\n',
    )

    result = invoke(
        ["send", "--event", "E", "--user-id", "u", "-c", str(config), "--json"], obj=registry
    )

    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["reports"][0]["results"]["raw"]["error"]
    assert error == "network error: cannot connect to 127.0.0.1:9 (ConnectError)"
