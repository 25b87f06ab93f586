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
from collections.abc import Callable
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
    # The emulators stopped before this was printed: no URL that is already dead.
    assert out["kept"] is False
    assert not {"segment_url", "posthog_url", "viewer_url"} & set(out)

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
    assert "local emulators, no key, no network" in text
    assert "Segment Track Event" in text
    assert "PostHog Capture Event" in text
    assert '"distinct_id": "user_123"' in text
    assert "What the emulators received" in text
    for name in ("$identify", "$pageview", "$screen", "$groupidentify", "$create_alias"):
        assert name in text
    assert "Everything was delivered." in text
    assert "http://127.0.0.1" not in text  # the servers have stopped: no dead URL is shown
    assert "event-router demo --keep" in text
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


def _start(*args: str, until: Callable[[str], bool]) -> tuple[subprocess.Popen[str], str]:
    """Run `event-router ARGS` in a child process; return it and its output up to the first
    line for which ``until`` is true (the process keeps running)."""
    env = {k: v for k, v in os.environ.items() if k not in DEMO_VARS}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from router_core.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "COLUMNS": "200"},
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout: IO[str] | None = proc.stdout
    assert stdout is not None

    def read() -> None:
        for line in stdout:
            lines.put(line)
            if until(line.rstrip("\n")):
                return
        lines.put("")  # the process exited

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    while True:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(f"{args[0]} did not get that far within 60 s: {''.join(output)}")
        if not line:
            proc.wait(timeout=10)
            pytest.fail(f"{args[0]} exited early: {proc.stderr.read() if proc.stderr else ''}")
        output.append(line)
        if until(line.rstrip("\n")):
            return proc, "".join(output)


def _start_sandbox(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Run `event-router sandbox --json` in a child process and read its one line."""
    proc, first = _start("sandbox", *args, until=lambda line: True)
    return proc, json.loads(first)


def _until_ctrl_c(line: str) -> bool:
    return line == "Press Ctrl-C to stop."


def _free_base_port() -> int:
    """A port N such that N, N+1 and N+2 are free just now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + 2 > 65535:
            continue
        try:
            with socket.socket() as one, socket.socket() as two:
                one.bind(("127.0.0.1", base + 1))
                two.bind(("127.0.0.1", base + 2))
        except OSError:
            continue
        return base
    pytest.fail("found no three free consecutive ports")


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
    assert f"Segment {port}" in line
    assert "Traceback" not in result.output


def test_sandbox_refuses_a_personal_posthog_key() -> None:
    result = invoke(["sandbox", "--api-key", "phx_personal"])

    assert result.exit_code == 2
    assert "phx_" in result.stderr


def test_sandbox_port_gives_the_viewer_and_emulators_stable_ports() -> None:
    base = _free_base_port()
    proc, info = _start_sandbox("--json", "--port", str(base))
    try:
        assert info["viewer_url"] == f"http://127.0.0.1:{base}"
        assert info["segment_url"] == f"http://127.0.0.1:{base + 1}"
        assert info["posthog_url"] == f"http://127.0.0.1:{base + 2}"
        page = httpx.get(f"{info['viewer_url']}/", timeout=10)
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
    finally:
        assert _stop(proc, signal.SIGINT) == 0


def test_sandbox_port_options_override_one_port_each() -> None:
    base = _free_base_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        posthog_port = int(probe.getsockname()[1])
    proc, info = _start_sandbox("--json", "--port", str(base), "--posthog-port", str(posthog_port))
    try:
        assert info["viewer_url"].endswith(f":{base}")
        assert info["segment_url"].endswith(f":{base + 1}")
        assert info["posthog_url"].endswith(f":{posthog_port}")
    finally:
        assert _stop(proc, signal.SIGINT) == 0


def test_sandbox_prints_export_lines_a_shell_can_run() -> None:
    base = _free_base_port()
    key = "it's a key with spaces"
    proc, text = _start("sandbox", "--port", str(base), "--write-key", key, until=_until_ctrl_c)
    try:
        segment_host, posthog_host = f"http://127.0.0.1:{base + 1}", f"http://127.0.0.1:{base + 2}"
        assert f"http://127.0.0.1:{base}/" in text  # the page to open
        exports = [line.strip() for line in text.splitlines() if line.strip().startswith("export")]
        assert exports[0] == f"export SEGMENT_HOST={segment_host} POSTHOG_HOST={posthog_host}"
        assert "The ports change on every start" not in text
        # Pasted into a shell, the lines set exactly what the sandbox expects.
        shell = subprocess.run(
            [
                "bash",
                "-c",
                "\n".join(
                    [
                        *exports,
                        'printf "%s\\n" "$SEGMENT_HOST" '
                        '"$POSTHOG_HOST" "$SEGMENT_WRITE_KEY" "$POSTHOG_API_KEY"',
                    ]
                ),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert shell.stdout.splitlines() == [
            segment_host,
            posthog_host,
            key,
            "phc_sandbox_project_key",
        ]
    finally:
        assert _stop(proc, signal.SIGINT) == 0


def test_sandbox_without_a_port_says_how_to_keep_them() -> None:
    proc, text = _start("sandbox", until=_until_ctrl_c)
    try:
        assert "--port 8080 keeps them" in text
    finally:
        assert _stop(proc, signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "65534"], "--port 65534: the sandbox uses 65534, 65535 and 65536"),
        (["--port", "9000", "--segment-port", "9000"], "three different ports"),
    ],
)
def test_sandbox_refuses_ports_it_cannot_use(args: list[str], message: str) -> None:
    result = invoke(["sandbox", *args])

    assert result.exit_code == 2
    assert message in result.stderr


def test_demo_keep_keeps_the_page_up_with_the_demo_events() -> None:
    base = _free_base_port()
    proc, text = _start("demo", "--keep", "--port", str(base), until=_until_ctrl_c)
    try:
        assert "Everything was delivered." in text
        assert f"http://127.0.0.1:{base}/" in text
        assert "export SEGMENT_HOST=" in text
        feed = httpx.get(f"http://127.0.0.1:{base}/_feed", timeout=10).json()
        by_vendor = {source["vendor"]: source["events"] for source in feed["sources"]}
        assert by_vendor == {"segment": 7, "posthog": 7}  # a seed job and six types each
    finally:
        assert _stop(proc, signal.SIGINT) == 0
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_demo_keep_json_prints_the_urls_of_the_kept_sandbox() -> None:
    proc, text = _start("demo", "--keep", "--json", until=lambda line: line == "}")
    try:
        out = json.loads(text)
        assert out["ok"] is True
        assert out["kept"] is True
        events = httpx.get(f"{out['viewer_url']}/_events", timeout=10).json()
        assert len(events["posthog"]) == 7
    finally:
        assert _stop(proc, signal.SIGTERM) == 0
