"""`event-router run`: the two seed jobs against the emulators, overrides, and the job model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from router_core import ConfigError, InvalidEventError
from router_core.cli import main
from router_core.jobs import Job, JobInputError, apply_override, parse_override
from router_core.sandbox import PostHogEmulator, Sandbox

ROOT = Path(__file__).parents[1]
SEGMENT_JOB = str(ROOT / "config" / "jobs" / "segment_track_event.toml")
POSTHOG_JOB = str(ROOT / "config" / "jobs" / "posthog_capture_event.toml")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(viewer_port=None) as sb:
        yield sb


def sandbox_env(sb: Sandbox) -> dict[str, str | None]:
    return {
        "SEGMENT_WRITE_KEY": "test_write_key",
        "SEGMENT_HOST": sb.segment.url,
        "POSTHOG_API_KEY": "phc_test_project",
        "POSTHOG_HOST": sb.posthog.url,
        "COLUMNS": "200",
    }


def invoke(args: list[str], env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(main, args, env=env)


def assert_bad_input(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def assert_json_error(result: Result) -> None:
    """With --json, stdout holds the error (the stderr line's) as JSON, and nothing else."""
    error = json.loads(result.stdout)
    assert error == {
        "ok": False,
        "error": result.stderr.strip().removeprefix("error: "),
        "exit_code": result.exit_code,
        "problems": error["problems"],
    }
    assert error["problems"]


# -- the seed jobs ----------------------------------------------------------------------------


def test_segment_job_prints_success_and_sends_the_seed_event(sandbox: Sandbox) -> None:
    result = invoke(["run", SEGMENT_JOB, "--json"], sandbox_env(sandbox))

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"success": True}
    (received,) = sandbox.segment.events
    assert received.type == "track"
    assert received.event == "Order Completed"
    assert received.distinct_id == "user_12345"
    assert received.payload["properties"] == {
        "order_id": "order_67890",
        "total": 99.99,
        "currency": "USD",
        "products": ["Product A", "Product B"],
    }


def test_posthog_job_prints_the_capture_response(sandbox: Sandbox) -> None:
    result = invoke(["run", POSTHOG_JOB, "--json"], sandbox_env(sandbox))

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "success": True,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": None,
    }
    (captured,) = sandbox.posthog.events
    assert captured.event == "page_view"
    assert captured.distinct_id == "user_123"


def test_posthog_job_with_a_wrong_key_reports_http_401() -> None:
    with PostHogEmulator(api_keys={"phc_right"}) as posthog:
        env: dict[str, str | None] = {
            "POSTHOG_API_KEY": "phc_wrong",
            "POSTHOG_HOST": posthog.url,
        }
        result = invoke(["run", POSTHOG_JOB, "--json"], env)
        received = posthog.events

    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {
        "success": False,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": "PostHog API error: HTTP 401",
    }
    assert received == []
    assert "phc_wrong" not in result.output


def test_segment_job_failure_prints_success_false_and_exits_1(sandbox: Sandbox) -> None:
    sandbox.segment.faults.set(statuses=[500, 500, 500])

    result = invoke(["run", SEGMENT_JOB, "--max-attempts", "2", "--json"], sandbox_env(sandbox))

    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {
        "success": False,
        "error": "Segment API error: HTTP 500",
    }
    # Two attempts were made (and the third fault is still pending): --max-attempts applied.
    assert sandbox.segment.faults.pending_statuses == (500,)
    assert sandbox.segment.events == []


def test_a_transient_failure_is_retried_to_success(sandbox: Sandbox) -> None:
    sandbox.segment.faults.set(statuses=[503])

    result = invoke(["run", SEGMENT_JOB, "--max-attempts", "2"], sandbox_env(sandbox))

    assert result.exit_code == 0, result.output
    assert len(sandbox.segment.events) == 1
    # The human output: the results table (2 attempts) and the response.
    assert "Segment Track Event" in result.stdout
    assert "Response (segment):" in result.stdout
    assert '"success": true' in result.stdout
    row = next(line for line in result.stdout.splitlines() if "segment" in line and "200" in line)
    assert " 2 " in row


def test_set_overrides_inputs_with_json_values_or_strings(sandbox: Sandbox) -> None:
    result = invoke(
        [
            "run",
            SEGMENT_JOB,
            "--set",
            "properties.total=12",
            "--set",
            "user_id=user_42",
            "--set",
            "properties.note=hello world",
            "--set",
            'properties.tags=["a", "b"]',
            "--set",
            "properties.shipping.method=express",
            "--set",
            'properties.code="007"',
            "--json",
        ],
        sandbox_env(sandbox),
    )

    assert result.exit_code == 0, result.output
    (received,) = sandbox.segment.events
    props: dict[str, Any] = received.payload["properties"]
    assert props["total"] == 12
    assert props["note"] == "hello world"
    assert props["tags"] == ["a", "b"]
    assert props["shipping"] == {"method": "express"}
    assert props["code"] == "007"
    assert props["order_id"] == "order_67890"  # untouched inputs stay
    assert received.distinct_id == "user_42"


@pytest.mark.parametrize(
    ("assignment", "fragments"),
    [
        ("total", ("--set 'total'", "PATH=VALUE")),
        ("properties..total=1", ("properties..total", "dotted path")),
        ("=1", ("dotted path",)),
        ("event.name=x", ("event", "not a table")),
        ("colour=red", ("colour",)),
        ("event=", ("event",)),
    ],
)
def test_bad_overrides_exit_2_naming_them(
    sandbox: Sandbox, assignment: str, fragments: tuple[str, ...]
) -> None:
    result = invoke(["run", SEGMENT_JOB, "--set", assignment, "--json"], sandbox_env(sandbox))

    assert_bad_input(result, *fragments)
    assert_json_error(result)
    assert sandbox.segment.requests == 0


def test_missing_env_vars_exit_2_naming_each(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        """
[job]
name = "Needs two"
env = ["FIRST_KEY", "SECOND_KEY"]

[input]
event = "X"
user_id = "u"

[destinations.segment]
plugin = "segment"
write_key = "${FIRST_KEY}${SECOND_KEY}"
""",
        encoding="utf-8",
    )

    result = invoke(["run", str(job)], {"FIRST_KEY": None, "SECOND_KEY": None})

    assert_bad_input(result, "FIRST_KEY", "SECOND_KEY", "is not set")


def test_segment_job_without_its_key_exits_2() -> None:
    result = invoke(["run", SEGMENT_JOB, "--json"], {"SEGMENT_WRITE_KEY": None})

    assert_bad_input(result, "SEGMENT_WRITE_KEY")
    assert_json_error(result)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[job\n", ("not valid TOML",)),
        ('[input]\nevent = "X"\n', ("job: required", "destinations: required")),
        (
            '[job]\nname = "J"\ncolour = 1\n[destinations.s]\nplugin = "segment"\n',
            ("job.colour: unknown key",),
        ),
        (
            '[job]\nname = "J"\nresponse = "nope"\n[destinations.s]\nplugin = "segment"\n',
            ("'nope' is not one of the job's destinations",),
        ),
        (
            '[job]\nname = "J"\n[destinations.a]\nplugin = "segment"\n'
            '[destinations.b]\nplugin = "posthog"\n',
            ("job.response: required",),
        ),
        (
            '[job]\nname = "J"\n[input]\nevent = "X"\nuser_id = "u"\n'
            '[destinations.m]\nplugin = "mixpanel"\n',
            ("unknown plugin 'mixpanel'",),
        ),
    ],
)
def test_bad_job_files_exit_2(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    job = tmp_path / "job.toml"
    job.write_text(text, encoding="utf-8")

    result = invoke(["run", str(job)], {})

    assert_bad_input(result, str(job), *fragments)


def test_a_missing_job_file_exits_2(tmp_path: Path) -> None:
    result = invoke(["run", str(tmp_path / "nope.toml")], {})

    assert_bad_input(result, "nope.toml", "does not exist")


# -- the job model ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("properties.total=12", ("properties", "total"), 12),
        ("properties.total=12.5", ("properties", "total"), 12.5),
        ("properties.ok=true", ("properties", "ok"), True),
        ("properties.none=null", ("properties", "none"), None),
        ("event=Signed Up", ("event",), "Signed Up"),
        ('user_id="123"', ("user_id",), "123"),
        ("properties.expr=a=b", ("properties", "expr"), "a=b"),
        ('traits={"plan": "pro"}', ("traits",), {"plan": "pro"}),
    ],
)
def test_parse_override(text: str, path: tuple[str, ...], value: Any) -> None:
    assert parse_override(text) == (path, value)


def test_apply_override_creates_nested_tables_and_refuses_to_descend_into_values() -> None:
    data: dict[str, Any] = {"properties": {"total": 1}, "event": "X"}
    apply_override(data, ("properties", "a", "b"), 2)
    assert data == {"properties": {"total": 1, "a": {"b": 2}}, "event": "X"}
    with pytest.raises(JobInputError, match="'event' is a str"):
        apply_override(data, ("event", "name"), "Y")


def test_job_loads_the_seed_file_and_builds_the_event_without_changing_itself() -> None:
    job = Job.load(SEGMENT_JOB)

    event = job.event([parse_override("properties.total=12")])

    assert job.name == "Segment Track Event"
    assert job.job.env == ("SEGMENT_WRITE_KEY",)
    assert job.response_destination == "segment"
    assert event.type == "track"
    assert event.properties["total"] == 12
    assert job.input["properties"]["total"] == 99.99
    assert job.missing_env({}) == ["SEGMENT_WRITE_KEY"]
    assert job.missing_env({"SEGMENT_WRITE_KEY": "k"}) == []


def test_job_router_config_caps_attempts_on_every_destination() -> None:
    job = Job.load(POSTHOG_JOB)

    config = job.router_config(max_attempts=1)

    assert config.destinations["posthog"]["retry"] == {"max_attempts": 1}
    assert config.source == POSTHOG_JOB
    assert "retry" not in job.destinations["posthog"]


def test_job_from_dict_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as raised:
        Job.from_dict({"job": {"env": ["BAD NAME"]}, "extra": 1}, source="j.toml")

    problems = raised.value.problems
    assert "job.name: required" in problems
    assert "destinations: required" in problems
    assert "extra: unknown key" in problems


def test_job_run_uses_the_given_env_and_reports_bad_inputs(sandbox: Sandbox) -> None:
    job = Job.load(SEGMENT_JOB)
    env = {"SEGMENT_WRITE_KEY": "k_for_run", "SEGMENT_HOST": sandbox.segment.url}

    result = job.run(env=env)
    assert result.ok
    assert result.response == {"success": True}
    assert result.to_dict()["job"] == "Segment Track Event"

    with pytest.raises(InvalidEventError, match="event"):
        job.run(env=env, overrides=[parse_override("event=")])
