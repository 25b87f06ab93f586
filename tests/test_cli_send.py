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


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """``send --file --json`` output: one JSON report per line."""
    return [json.loads(line) for line in stdout.splitlines()]


def assert_bad_input(result: Result, *fragments: str, as_json: bool = False) -> None:
    """Exit 2, exactly one line on stderr naming the problem, no traceback; on stdout nothing,
    or with ``as_json`` (``--json`` given) the same error as a JSON object."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    if as_json:
        error = json.loads(result.stdout)
        assert error["ok"] is False
        assert error["exit_code"] == 2
        assert error["error"] == lines[0].removeprefix("error: ")
    else:
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
    reports = json_lines(result.stdout)
    assert [r["message_id"] for r in reports] == [M1, M2, M3]
    assert all(r["ok"] for r in reports)
    assert sorted(sandbox.segment.message_ids()) == [M1, M2, M3]
    assert sorted(sandbox.posthog.message_ids()) == [M1, M2, M3]


def test_send_reads_one_json_event_from_stdin(config: Path, sandbox: Sandbox) -> None:
    event = {"type": "page", "name": "Pricing", "user_id": "u1", "message_id": M1}
    result = invoke(["send", "-c", str(config), "--file", "-"], input=json.dumps(event, indent=2))

    assert result.exit_code == 0, result.output
    assert sandbox.segment.message_ids() == [M1]
    # Human output: a summary counting what each destination delivered.
    assert "1 event" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines()]
    assert any(row[1:4] == ["segment", "│", "1"] for row in rows if len(row) > 3), result.stdout
    assert any(row[1:4] == ["posthog", "│", "1"] for row in rows if len(row) > 3), result.stdout


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
    # The batch of both is refused, then A alone: splitting finds the event at fault.
    sandbox.segment.faults.set(statuses=[400, 400])
    lines = [
        json.dumps({"type": "track", "event": "A", "user_id": "u1"}),
        json.dumps({"type": "track", "event": "B", "user_id": "u1"}),
    ]

    result = invoke(["send", "-c", str(config), "-f", "-", "--json"], input="\n".join(lines))

    assert result.exit_code == 1
    reports = json_lines(result.stdout)
    assert [r["ok"] for r in reports] == [False, True]
    assert sandbox.segment.requests == 3  # the pair, then each alone


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

    assert_bad_input(result, *fragments, as_json=True)
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


# -- hostile input: exit 2 and one line, never "internal error" (exit 3) -------------------------
# Events are parsed before the config is read, so these need no config and send nothing.

NO_CONFIG = "/nonexistent/router.toml"
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" * 5000


def deep_object(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


BAD_JSON_OPTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("--properties", DEEP_ARRAY, ("--properties: JSON nested too deeply",)),
    ("--traits", deep_object(100_000), ("--traits: JSON nested too deeply",)),
    ("--context", deep_object(200), ("context.a.a", "nested more than 64 levels deep")),
    ("--properties", '{"a": 1', ("--properties: not valid JSON",)),
    ("--properties", "[1, 2]", ("--properties: must be a JSON object",)),
    ("--properties", '"text"', ("--properties: must be a JSON object",)),
    ("--properties", '{"a": "\\udcff"}', ("properties.a: text holds a lone surrogate",)),
    ("--traits", '{"\\ud800": 1}', ("traits: key '\\ud800' holds a lone surrogate",)),
    ("--properties", f'{{"n": {HUGE_INT}}}', ("--properties: a JSON number has too many digits",)),
    ("--properties", f'{{"n": {2**64}}}', ("properties.n", "outside the accepted integer range")),
    ("--context", '{"n": 1e400}', ("context.n: inf is not a finite number",)),
    ("--properties", '{"n": NaN}', ("properties.n: nan is not a finite number",)),
]


@pytest.mark.parametrize(("option", "value", "fragments"), BAD_JSON_OPTIONS)
def test_hostile_json_options_exit_2_with_one_line(
    option: str, value: str, fragments: tuple[str, ...]
) -> None:
    result = invoke(["send", "-c", NO_CONFIG, "--event", "X", "--user-id", "u", option, value])

    assert_bad_input(result, *fragments)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--user-id", "\udcff"], ("user_id: text holds a lone surrogate",)),
        (["--user-id", "u", "--timestamp", "9999-12-31T23:59:59-05:00"], ("timestamp",)),
        (["--user-id", "u", "--message-id", "m\udcff"], ("message_id",)),
    ],
)
def test_hostile_text_options_exit_2_with_one_line(
    args: list[str], fragments: tuple[str, ...]
) -> None:
    assert_bad_input(invoke(["send", "-c", NO_CONFIG, "--event", "X", *args]), *fragments)


EVENT = '{"type": "track", "event": "X", "user_id": "u"}'
HOSTILE_FILES: list[tuple[str, tuple[str, ...]]] = [
    (DEEP_ARRAY, ("<stdin>: JSON nested too deeply",)),
    (deep_object(100_000), ("<stdin>: JSON nested too deeply",)),
    (f"{EVENT}\n{DEEP_ARRAY}\n", ("<stdin> line 2: JSON nested too deeply",)),
    (
        '{"type": "track", "event": "X", "user_id": "u", "properties": ' + deep_object(100) + "}",
        ("properties.a.a", "nested more than 64 levels deep"),
    ),
    (
        f'{{"type": "track", "event": "X", "user_id": "u", "properties": {{"n": {HUGE_INT}}}}}',
        ("<stdin>: a JSON number has too many digits",),
    ),
    (f"{EVENT}\n{HUGE_INT}\n", ("<stdin> line 2: a JSON number has too many digits",)),
    ('{"type": "track", "event": "\\udcff", "user_id": "u"}', ("event: text holds a lone",)),
    ('{"type": "track", "event": "X", "\\udcff": 1}', ("field name '\\udcff'",)),
    ('{"type": ["track"], "event": "X", "user_id": "u"}', ("type: must be one of",)),
    ('{"type": "track", "event": "X", "user_id": ["u"]}', ("user_id",)),
    ("[1, 2]", ("<stdin> event 1: an event must be a JSON object, not int",)),
    ("42", ("expected a JSON object, an array of objects, or JSON lines",)),
]


@pytest.mark.parametrize(("text", "fragments"), HOSTILE_FILES)
def test_hostile_event_files_exit_2_with_one_line(text: str, fragments: tuple[str, ...]) -> None:
    result = invoke(["send", "-c", NO_CONFIG, "--file", "-"], input=text)

    assert_bad_input(result, *fragments)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("a = " + "[" * 3000 + "]" * 3000, "arrays or inline tables are nested too deeply"),
        ('[queue]\npath = "/dev/null"', "queue.path: '/dev/null' is a character device"),
        ('[queue]\npath = "."', "queue.path: '.' is a directory"),
    ],
)
def test_an_unusable_config_exits_2_with_one_line(tmp_path: Path, toml: str, fragment: str) -> None:
    path = tmp_path / "router.toml"
    path.write_text(toml, encoding="utf-8")

    assert_bad_input(
        invoke(["send", "-c", str(path), "--event", "X", "--user-id", "u"]), str(path), fragment
    )


def test_five_thousand_events_print_one_screen(
    config: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "many.jsonl"
    lines = (
        json.dumps({"type": "track", "event": "Bulk", "user_id": f"u{i}"}) for i in range(5000)
    )
    path.write_text("\n".join(lines), encoding="utf-8")

    result = invoke(["send", "-c", str(config), "--file", str(path)])

    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) < 15, result.output
    assert "5000 events" in result.stdout
    assert len(sandbox.posthog.events) == 5000
    assert len(sandbox.segment.events) == 5000
    assert sandbox.posthog.requests == 5  # PostHog takes 1000 events a request

    as_json = invoke(["send", "-c", str(config), "--file", str(path), "--json"])
    assert len(json_lines(as_json.stdout)) == 5000
