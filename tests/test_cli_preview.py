"""``event-router preview``: each destination's request body, and nothing sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from router_core.cli import main
from router_core.sandbox import Sandbox
from router_core.transforms import pseudonym

ENV = {
    "SEGMENT_WRITE_KEY": "seg-preview-key-42",
    "POSTHOG_API_KEY": "phc_previewkey4242",
    "PSEUDONYM_KEY": "preview-pseudonym-key-0001",
}
IP = "198.51.100.9"


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
gzip = true

[destinations.posthog]
plugin = "posthog"
api_key = "${{POSTHOG_API_KEY}}"
host = "{sandbox.posthog.url}"

[[destinations.posthog.transforms]]
type = "pseudonymize"
key = "${{PSEUDONYM_KEY}}"
key_id = "k1"

[[destinations.posthog.transforms]]
type = "drop"
paths = ["context.ip"]

[destinations.marketing]
plugin = "segment"
write_key = "${{SEGMENT_WRITE_KEY}}"
host = "{sandbox.segment.url}"
consent = ["marketing"]

[queue]
path = "{tmp_path / "outbox.db"}"
""",
        encoding="utf-8",
    )
    return path


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, env={"COLUMNS": "200", **ENV})


def test_preview_prints_each_body_and_sends_nothing(
    config: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    context = json.dumps({"ip": IP, "consent": {"categoryPreferences": {"marketing": False}}})
    args = ["preview", "-c", str(config), "--event", "Sale", "--user-id", "u1"]
    args += ["--context", context]
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    found = {d["destination"]: d for d in entry["destinations"]}
    assert found["marketing"]["skipped"] == "consent"
    assert found["marketing"]["requests"] == []
    (segment,) = found["segment"]["requests"]
    assert segment["url"] == f"{sandbox.segment.url}/v1/batch"
    body = json.loads(segment["body"])  # gzip undone
    assert body["writeKey"] == "**********"
    assert body["batch"][0]["userId"] == "u1"
    assert body["batch"][0]["context"]["ip"] == IP
    (posthog,) = found["posthog"]["requests"]
    assert IP not in posthog["body"]
    assert ENV["POSTHOG_API_KEY"] not in posthog["body"]
    sent = json.loads(posthog["body"])["batch"][0]
    assert sent["distinct_id"] == pseudonym("u1", ENV["PSEUDONYM_KEY"], "k1")
    assert ENV["SEGMENT_WRITE_KEY"] not in result.stdout
    # No request reached the emulators, and no outbox was made despite [queue].
    assert sandbox.segment.requests == 0
    assert sandbox.posthog.requests == 0
    assert not (tmp_path / "outbox.db").exists()

    human = invoke(args)
    assert human.exit_code == 0, human.output
    assert "marketing (segment): skipped, consent" in human.stdout
    assert f"posthog (posthog): POST {sandbox.posthog.url}/batch/" in human.stdout
    # Each body is printed as one line, exactly as it would be sent.
    lines = human.stdout.splitlines()
    segment_line = lines[
        lines.index(f"  segment (segment): POST {sandbox.segment.url}/v1/batch") + 1
    ]
    assert json.loads(segment_line)["batch"][0]["event"] == "Sale"


def test_preview_refuses_bad_input_like_send(config: Path) -> None:
    result = invoke(["preview", "-c", str(config), "--type", "track"])
    assert result.exit_code == 2
    assert "event" in result.stderr
