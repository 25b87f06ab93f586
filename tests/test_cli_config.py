"""`event-router config check`: every problem at once, or the enabled destinations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from router_core.cli import main

ENV: dict[str, str | None] = {"COLUMNS": "200", "EVENT_ROUTER_PLUGINS": None}


def invoke(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, args, env={**ENV, **(env or {})})


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[destinations.segment]
plugin = "segment"
write_key = "${CHECK_WRITE_KEY}"

[destinations.posthog]
plugin = "posthog"
api_key = "${CHECK_API_KEY}"
host = "${CHECK_POSTHOG_HOST:-https://eu.i.posthog.com}"
events = ["page_*", "Order Completed"]
timeout = 5

[destinations.old]
plugin = "nonexistent"
enabled = false
"""

SECRETS = {"CHECK_WRITE_KEY": "wk_secret_value_1234", "CHECK_API_KEY": "phc_secret_value_5678"}


def test_config_check_shows_enabled_destinations_with_secrets_masked(tmp_path: Path) -> None:
    config = write(tmp_path / "router.toml", GOOD)

    result = invoke(["config", "check", str(config), "--json"], env=dict(SECRETS))

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is True
    assert out["problems"] == []
    destinations = {d["name"]: d for d in out["destinations"]}
    assert set(destinations) == {"segment", "posthog"}
    assert out["disabled"] == ["old"]
    assert destinations["posthog"]["events"] == ["page_*", "Order Completed"]
    assert destinations["posthog"]["timeout"] == 5
    assert destinations["posthog"]["settings"]["host"] == "https://eu.i.posthog.com"
    assert destinations["segment"]["settings"]["write_key"] == "**********"
    for secret in SECRETS.values():
        assert secret not in result.output

    human = invoke(["config", "check", str(config)], env=dict(SECRETS))
    assert human.exit_code == 0
    assert "OK" in human.stdout
    assert "disabled: old" in human.stdout
    for secret in SECRETS.values():
        assert secret not in human.output


def test_config_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.toml",
        """
[destinations.segment]
plugin = "segment"
write_key = "${UNSET_WRITE_KEY_FOR_CHECK}"
colour = "blue"

[destinations.posthog]
plugin = "posthog"
api_key = "phc_ok"
timeout = -1

[destinations.crm]
plugin = "hubspot"
""",
    )

    result = invoke(
        ["config", "check", str(config), "--json"], env={"UNSET_WRITE_KEY_FOR_CHECK": None}
    )

    assert result.exit_code == 2, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is False
    problems = "\n".join(out["problems"])
    assert "environment variable UNSET_WRITE_KEY_FOR_CHECK is not set" in problems
    assert "destinations.segment.colour: unknown setting" in problems
    assert "destinations.posthog.timeout" in problems
    assert "destinations.crm.plugin: unknown plugin 'hubspot'" in problems
    assert len(out["problems"]) >= 4
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {len(out['problems'])} problems in {config}")
    assert "Traceback" not in result.output

    human = invoke(["config", "check", str(config)], env={"UNSET_WRITE_KEY_FOR_CHECK": None})
    assert human.exit_code == 2
    for problem in out["problems"]:
        assert f"  - {problem}" in human.stdout
    assert human.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("[destinations\n", "not valid TOML"), ("colour = 1\n", "unknown top-level key")],
)
def test_config_check_on_unreadable_config_exits_2(
    tmp_path: Path, text: str, fragment: str
) -> None:
    config = write(tmp_path / "router.toml", text)

    result = invoke(["config", "check", str(config), "--json"])

    assert result.exit_code == 2
    assert fragment in json.loads(result.stdout)["problems"][0]


def test_config_check_on_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke(["config", "check", str(tmp_path / "nope.toml")])

    assert result.exit_code == 2
    assert "nope.toml' does not exist" in result.stdout
