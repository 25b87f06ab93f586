"""`event-router demo` and `event-router sandbox`: the emulators, the seed jobs, six types."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from click.testing import CliRunner, Result

from router_core.cli import main

SIX_TYPES = ["track", "identify", "page", "screen", "group", "alias"]
DEMO_VARS = ("SEGMENT_WRITE_KEY", "SEGMENT_HOST", "POSTHOG_API_KEY", "POSTHOG_HOST")


@pytest.fixture(autouse=True)
def _no_vendor_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """None from the machine: the demo must not need any. (Removed here rather than through
    CliRunner's env, which would restore them afterwards and so hide a leak.)"""
    for name in DEMO_VARS:
        monkeypatch.delenv(name, raising=False)


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, env={"COLUMNS": "200"})


# -- demo -------------------------------------------------------------------------------------


def test_demo_json_runs_both_seed_jobs_and_delivers_all_six_types() -> None:
    result = invoke(["demo", "--json"])

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is True
    assert out["not_received"] == {}

    segment_job, posthog_job = out["jobs"]
    assert segment_job["job"] == "Segment Track Event"
    assert segment_job["response"] == {"success": True}
    assert posthog_job["job"] == "PostHog Capture Event"
    assert posthog_job["response"] == {
        "success": True,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": None,
    }

    assert [e["type"] for e in out["events"]] == SIX_TYPES
    for event in out["events"]:
        assert event["ok"] is True
        assert set(event["results"]) == {"segment", "posthog"}
        assert all(r["status_code"] == 200 for r in event["results"].values())

    # Every event reached both emulators over HTTP, with its message id.
    sent_ids = [e["message_id"] for e in out["events"]]
    for vendor in ("segment", "posthog"):
        received = out["received"][vendor]
        by_id = {row["message_id"]: row for row in received}
        assert set(sent_ids) <= set(by_id), vendor
        assert [by_id[i]["type"] for i in sent_ids] == SIX_TYPES
        assert all(row["vendor"] == vendor for row in received)
    seed_segment = next(r for r in out["received"]["segment"] if r["event"] == "Order Completed")
    assert seed_segment["distinct_id"] == "user_12345"
    assert any(r["event"] == "page_view" for r in out["received"]["posthog"])

    # The sandbox keys were handed to the jobs, never left in this process's environment.
    for name in DEMO_VARS:
        assert name not in os.environ
    assert result.stderr == ""


def test_demo_human_output_shows_results_and_what_arrived() -> None:
    result = invoke(["demo"])

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Segment emulator" in text
    assert "Segment Track Event" in text
    assert "PostHog Capture Event" in text
    assert '"distinct_id": "user_123"' in text
    assert "What the emulators received" in text
    for name in ("$identify", "$pageview", "$screen", "$groupidentify", "$create_alias"):
        assert name in text
    assert "Everything was delivered." in text
    # Delivery log lines stay out of the way unless --verbose.
    assert "delivery_attempt" not in result.output


def test_demo_verbose_logs_each_delivery() -> None:
    result = invoke(["demo", "--verbose", "--json"])

    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # stdout stays pure JSON
    assert result.stderr.count("delivery_attempt") == 14  # 2 jobs + 6 types x 2 destinations


def test_demo_without_the_seed_jobs_exits_2(tmp_path: Path) -> None:
    result = invoke(["demo", "--jobs-dir", str(tmp_path)])

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "segment_track_event.toml" in line
    assert str(tmp_path) in line


# -- sandbox ----------------------------------------------------------------------------------


def _start_sandbox(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Run `event-router sandbox --json` in a child process and read its first line."""
    env = {k: v for k, v in os.environ.items() if k not in DEMO_VARS}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from router_core.cli import main; main()", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout: IO[str] | None = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        first = lines.get(timeout=20)
    except queue.Empty:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail("the sandbox printed nothing within 20 s")
    if not first:
        proc.wait(timeout=10)
        pytest.fail(f"the sandbox exited early: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(first)


def _stop(proc: subprocess.Popen[str], how: signal.Signals) -> int:
    proc.send_signal(how)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _track(url: str, key: str, message_id: str) -> httpx.Response:
    body = {
        "batch": [
            {
                "type": "track",
                "event": "Signed Up",
                "userId": "u1",
                "messageId": message_id,
                "timestamp": "2024-06-01T12:00:00Z",
            }
        ]
    }
    return httpx.post(f"{url}/v1/batch", json=body, auth=(key, ""), timeout=10)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_sandbox_serves_both_emulators_until_interrupted(how: signal.Signals) -> None:
    proc, info = _start_sandbox("--json", "--write-key", "sandbox_only_key")
    try:
        env = info["env"]
        assert env["SEGMENT_HOST"] == info["segment_url"]
        assert env["POSTHOG_HOST"] == info["posthog_url"]
        assert env["SEGMENT_WRITE_KEY"] == "sandbox_only_key"
        assert env["POSTHOG_API_KEY"].startswith("phc_")

        assert _track(info["segment_url"], "sandbox_only_key", "m-ok").status_code == 200
        assert _track(info["segment_url"], "another_key", "m-refused").status_code == 401
        events = httpx.get(f"{info['viewer_url']}/_events", timeout=10).json()
        assert [e["message_id"] for e in events["segment"]] == ["m-ok"]
        assert events["posthog"] == []
    finally:
        code = _stop(proc, how)
    assert code == 0
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_sandbox_on_a_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = invoke(["sandbox", "--segment-port", str(port)])

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "cannot listen on 127.0.0.1" in line
    assert "Traceback" not in result.output


def test_sandbox_refuses_a_personal_posthog_key() -> None:
    result = invoke(["sandbox", "--api-key", "phx_personal"])

    assert result.exit_code == 2
    assert "phx_" in result.stderr
