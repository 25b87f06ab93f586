"""`event-router send`: events from options, files and stdin, to the emulators over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from router_core.cli import main
from router_core.sandbox import Sandbox

WRITE_KEY = "segment_write_key_for_tests"
API_KEY = "phc_project_key_for_tests"
ENV = {"SEGMENT_WRITE_KEY": WRITE_KEY, "POSTHOG_API_KEY": API_KEY}
# PostHog dedups on a UUID, so message ids here are UUIDs.
M1, M2, M3 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(viewer_port=None) as sb:
        yield sb


@pytest.fixture
def config(tmp_path: Path, sandbox: Sandbox) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        f"""
[destinations.segment]
plugin = "segment"
write_key = "${{SEGMENT_WRITE_KEY}}"
host = "{sandbox.segment.url}"
retry = {{ max_attempts = 1 }}

[destinations.posthog]
plugin = "posthog"
api_key = "${{POSTHOG_API_KEY}}"
host = "{sandbox.posthog.url}"
retry = {{ max_attempts = 1 }}
""",
        encoding="utf-8",
    )
    return path


def invoke(
    args: list[str], input: str | None = None, env: dict[str, str | None] | None = None
) -> Result:
    # A wide terminal, so table cells are not wrapped in the middle of what tests look for.
    environ: dict[str, str | None] = {"COLUMNS": "200", **(ENV if env is None else env)}
    return CliRunner().invoke(main, args, input=input, env=environ)


def assert_bad_input(result: Result, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_send_from_options_reaches_both_destinations(config: Path, sandbox: Sandbox) -> None:
    result = invoke(
        [
            "send",
            "--config",
            str(config),
            "--event",
            "Order Completed",
            "--user-id",
            "user_12345",
            "--properties",
            '{"total": 99.99, "currency": "USD"}',
            "--message-id",
            M1,
            "--json",
        ]
    )

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is True
    (report,) = out["reports"]
    assert report["message_id"] == M1
    assert set(report["results"]) == {"segment", "posthog"}
    for name, delivered in report["results"].items():
        assert delivered["success"] is True, name
        assert delivered["status_code"] == 200
        assert delivered["attempts"] == 1
    assert sandbox.segment.message_ids() == [M1]
    (received,) = sandbox.segment.events
    assert received.event == "Order Completed"
    assert received.payload["properties"] == {"total": 99.99, "currency": "USD"}
    (captured,) = sandbox.posthog.events
    assert captured.event == "Order Completed"
    assert captured.distinct_id == "user_12345"


def test_send_builds_each_type_from_options(config: Path, sandbox: Sandbox) -> None:
    result = invoke(
        [
            "send",
            "-c",
            str(config),
            "--type",
            "group",
            "--group-id",
            "company_42",
            "--anonymous-id",
            "anon-1",
            "--traits",
            '{"name": "Example Inc"}',
            "--context",
            '{"ip": "203.0.113.9"}',
            "--timestamp",
            "2024-06-01T12:00:00+02:00",
            "--json",
        ]
    )

    assert result.exit_code == 0, result.output
    (received,) = sandbox.segment.events
    assert received.type == "group"
    assert received.payload["groupId"] == "company_42"
    assert received.payload["traits"] == {"name": "Example Inc"}
    assert received.payload["context"]["ip"] == "203.0.113.9"
    assert received.payload["timestamp"].startswith("2024-06-01T10:00:00")
    assert sandbox.posthog.events[0].event == "$groupidentify"


def test_send_json_lines_file_gives_one_report_per_event(
    config: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    events = [
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": M1},
        {"type": "identify", "user_id": "u1", "traits": {"plan": "pro"}, "message_id": M2},
        {"type": "alias", "previous_id": "anon-9", "user_id": "u1", "message_id": M3},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n\n", encoding="utf-8")

    result = invoke(["send", "-c", str(config), "--file", str(path), "--json"])

    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)["reports"]
    assert [r["message_id"] for r in reports] == [M1, M2, M3]
    assert all(r["ok"] for r in reports)
    assert sorted(sandbox.segment.message_ids()) == [M1, M2, M3]
    assert sorted(sandbox.posthog.message_ids()) == [M1, M2, M3]


def test_send_reads_one_json_event_from_stdin(config: Path, sandbox: Sandbox) -> None:
    event = {"type": "page", "name": "Pricing", "user_id": "u1", "message_id": M1}
    result = invoke(["send", "-c", str(config), "--file", "-"], input=json.dumps(event, indent=2))

    assert result.exit_code == 0, result.output
    assert sandbox.segment.message_ids() == [M1]
    # Human output: a table naming each destination and its status.
    assert "page 'Pricing'" in result.stdout
    assert "segment" in result.stdout
    assert "posthog" in result.stdout
    assert "200" in result.stdout


def test_a_failed_destination_exits_1_and_the_other_still_delivers(
    config: Path, sandbox: Sandbox
) -> None:
    sandbox.segment.faults.set(statuses=[500])

    result = invoke(
        ["send", "-c", str(config), "--event", "Order Completed", "--user-id", "u1", "--json"]
    )

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)["reports"][0]
    assert report["ok"] is False
    segment = report["results"]["segment"]
    assert segment["success"] is False
    assert segment["status_code"] == 500
    assert segment["error"] == "Segment API error: HTTP 500"
    assert report["results"]["posthog"]["success"] is True
    assert len(sandbox.posthog.events) == 1


def test_human_output_shows_the_error_and_exits_1(config: Path, sandbox: Sandbox) -> None:
    sandbox.posthog.faults.set(statuses=[401])

    result = invoke(["send", "-c", str(config), "--event", "Signed Up", "--user-id", "u1"])

    assert result.exit_code == 1
    assert "PostHog API error: HTTP 401" in result.stdout
    assert "Traceback" not in result.output


def test_one_failed_event_of_several_exits_1(config: Path, sandbox: Sandbox) -> None:
    sandbox.segment.faults.set(statuses=[400])
    lines = [
        json.dumps({"type": "track", "event": "A", "user_id": "u1"}),
        json.dumps({"type": "track", "event": "B", "user_id": "u1"}),
    ]

    result = invoke(["send", "-c", str(config), "-f", "-", "--json"], input="\n".join(lines))

    assert result.exit_code == 1
    reports = json.loads(result.stdout)["reports"]
    assert [r["ok"] for r in reports] == [False, True]


BAD_OPTIONS: list[tuple[list[str], tuple[str, ...]]] = [
    (["--event", "X", "--user-id", "u", "--properties", "{not json"], ("--properties", "JSON")),
    (["--event", "X", "--user-id", "u", "--traits", "[1, 2]"], ("--traits", "JSON object")),
    (["--user-id", "u1"], ("track", "event")),
    (["--type", "group", "--user-id", "u1"], ("group", "group_id")),
    (["--event", "X"], ("user_id or anonymous_id",)),
    (["--type", "bogus"], ("--type", "bogus")),
    (["--event", "X", "--user-id", "u", "--timestamp", "yesterday"], ("timestamp",)),
    (["--event", "X", "--no-such-option"], ("--no-such-option",)),
    (["--file", "/no/such/events.jsonl"], ("/no/such/events.jsonl",)),
    (["--file", "-", "--event", "X"], ("--file", "--event")),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_OPTIONS)
def test_bad_options_exit_2_with_one_line(
    config: Path, sandbox: Sandbox, args: list[str], fragments: tuple[str, ...]
) -> None:
    result = invoke(["send", "-c", str(config), *args], input="")

    assert_bad_input(result, *fragments)
    assert sandbox.segment.requests == 0


BAD_FILES: list[tuple[str, tuple[str, ...]]] = [
    ("", ("no events",)),
    ('{"type": "track", "user_id": "u1"}', ("invalid track event", "event")),
    ('{"type": "track", "event": "A", "user_id": "u"}\n{oops\n', ("line 2", "not valid JSON")),
    ('[{"type": "track", "event": "A", "user_id": "u"}, 7]', ("event 2", "JSON object")),
    ('"just a string"', ("expected a JSON object",)),
    ('{"type": "track", "event": "A", "user_id": "u", "colour": 1}', ("colour",)),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_FILES)
def test_bad_event_files_exit_2_before_anything_is_sent(
    config: Path, sandbox: Sandbox, text: str, fragments: tuple[str, ...]
) -> None:
    result = invoke(["send", "-c", str(config), "--file", "-", "--json"], input=text)

    assert_bad_input(result, *fragments)
    assert sandbox.segment.requests == 0
    assert sandbox.posthog.requests == 0


def test_a_config_naming_an_unknown_plugin_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text('[destinations.mixpanel]\nplugin = "mixpanel"\n', encoding="utf-8")

    result = invoke(["send", "-c", str(path), "--event", "X", "--user-id", "u"])

    assert_bad_input(result, "destinations.mixpanel.plugin", "unknown plugin 'mixpanel'")


def test_a_missing_env_var_exits_2_naming_it(config: Path) -> None:
    result = invoke(
        ["send", "-c", str(config), "--event", "X", "--user-id", "u"],
        env={"SEGMENT_WRITE_KEY": WRITE_KEY, "POSTHOG_API_KEY": None},  # None: unset
    )

    assert_bad_input(result, "environment variable POSTHOG_API_KEY is not set")


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = invoke(["send", "-c", str(missing), "--event", "X", "--user-id", "u"])

    assert_bad_input(result, "nope.toml", "does not exist")


def test_secrets_never_reach_the_output(config: Path, sandbox: Sandbox) -> None:
    sandbox.segment.faults.set(statuses=[401])

    result = invoke(["send", "-c", str(config), "--event", "X", "--user-id", "u", "-v"])

    assert result.exit_code == 1
    assert WRITE_KEY not in result.output
    assert API_KEY not in result.output
    # --verbose logs each attempt on stderr.
    assert "delivery_attempt" in result.stderr


def _payloads(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [event.payload for event in sandbox.segment.events]


def test_quiet_by_default_no_log_lines_for_deliveries(config: Path, sandbox: Sandbox) -> None:
    result = invoke(["send", "-c", str(config), "--event", "X", "--user-id", "u", "--json"])

    assert result.exit_code == 0
    assert result.stderr == ""
    assert _payloads(sandbox)[0]["event"] == "X"


def test_a_queued_config_reports_queued_and_delivers_before_exit(
    config: Path, sandbox: Sandbox
) -> None:
    queued = config.with_name("queued.toml")
    queued.write_text(
        config.read_text(encoding="utf-8") + '\n[queue]\nbackend = "memory"\n', encoding="utf-8"
    )

    result = invoke(["send", "-c", str(queued), "--event", "X", "--user-id", "u", "--json"])
    human = invoke(["send", "-c", str(queued), "--event", "Y", "--user-id", "u"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["reports"][0]
    assert report["queued"] is True
    assert report["results"] == {}
    assert sorted(report["queued_for"] + report["skipped"]) == ["posthog", "segment"]
    assert "segment" in report["queued_for"]
    assert human.exit_code == 0
    assert "queued in the outbox" in human.stdout
    # Closing the router drained the outbox before the command returned.
    assert sorted(e.event or "" for e in sandbox.segment.events) == ["X", "Y"]
