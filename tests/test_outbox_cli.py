"""``event-router outbox status | replay | purge`` against a real outbox and an emulator."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from router_core import Event, Router
from router_core.cli.errors import RouterGroup
from router_core.cli.outbox import outbox
from router_core.outbox import SQLiteOutbox
from router_core.sandbox import SegmentEmulator
from tests.outbox_faults import read_only

WRITE_KEY = "wk_cli_outbox_0123456789"
CLI = RouterGroup(name="event-router", commands=[outbox])


@pytest.fixture
def segment() -> Iterator[SegmentEmulator]:
    with SegmentEmulator() as em:
        yield em


def write_config(tmp_path: Path, url: str, queue: str | None = None) -> Path:
    config = tmp_path / "router.toml"
    table = (
        queue
        if queue is not None
        else f"""
[queue]
path = "{tmp_path / "outbox.db"}"
flush_interval = 0.01
retry = {{ max_attempts = 1 }}
"""
    )
    config.write_text(
        f"""{table}
[destinations.segment]
plugin = "segment"
write_key = "{WRITE_KEY}"
host = "{url}"
timeout = 2.0
""",
        encoding="utf-8",
    )
    return config


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(CLI, ["outbox", *args], input=input, catch_exceptions=False)


def make_dead_letters(config: Path, segment: SegmentEmulator, count: int) -> list[str]:
    segment.faults.set(statuses=[503] * 1000)
    with Router.from_config(config) as router:
        ids = [router.send(Event.track("E", user_id=f"u{i}")).message_id for i in range(count)]
        result = router.flush(timeout=30)
    segment.faults.clear()
    assert result.dead == {"segment": count}
    return ids


def status(config: Path) -> dict[str, object]:
    done = run("status", "--config", str(config), "--json")
    assert done.exit_code == 0, done.output
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_status_replay_and_purge(tmp_path: Path, segment: SegmentEmulator) -> None:
    config = write_config(tmp_path, segment.url)
    ids = make_dead_letters(config, segment, 7)

    before = status(config)
    assert before["destinations"] == {
        "segment": {"pending": 0, "retrying": 0, "in_flight": 0, "dead": 7}
    }
    assert before["events"] == 7
    table = run("status", "--config", str(config))
    assert table.exit_code == 0
    assert "segment" in table.stdout
    assert "7 dead letter(s)" in table.stdout

    replayed = run("replay", "--config", str(config), "--destination", "segment")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 7 dead letter(s)" in replayed.stdout
    assert "delivering" in replayed.stderr  # the progress bar stays off stdout
    assert sorted(segment.message_ids()) == sorted(ids)
    assert status(config)["destinations"] == {}

    make_dead_letters(config, segment, 2)
    purged = run("purge", "--config", str(config), "--dead-only", "--yes", "--json")
    assert purged.exit_code == 0
    assert json.loads(purged.stdout) == {"purged": 2}
    after = status(config)
    assert (after["destinations"], after["events"]) == ({}, 0)


def test_replay_reports_what_failed_again(tmp_path: Path, segment: SegmentEmulator) -> None:
    config = write_config(tmp_path, segment.url)
    make_dead_letters(config, segment, 3)
    segment.faults.set(statuses=[400] * 1000)
    done = run("replay", "--config", str(config), "--json")
    assert done.exit_code == 1
    assert json.loads(done.stdout) == {
        "replayed": 3,
        "pending": {"segment": 0},
        "dead": {"segment": 3},
        "ok": False,
    }


def test_purge_asks_first(tmp_path: Path, segment: SegmentEmulator) -> None:
    config = write_config(tmp_path, segment.url)
    make_dead_letters(config, segment, 2)
    declined = run("purge", "--config", str(config), input="n\n")
    assert declined.exit_code == 1
    assert "nothing deleted" in declined.stderr
    assert status(config)["events"] == 2
    accepted = run("purge", "--config", str(config), input="y\n")
    assert accepted.exit_code == 0
    assert "deleted 2 row(s)" in accepted.stdout
    assert status(config)["events"] == 0


def test_status_of_an_outbox_not_created_yet(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    data = status(config)
    assert data["exists"] is False
    assert not (tmp_path / "outbox.db").exists()  # looking does not create it


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("", "no [queue] table"),
        ("[queue]\nenabled = false\n", "no [queue] table"),
        ('[queue]\nbackend = "memory"\n', "memory"),
    ],
)
def test_commands_need_a_sqlite_outbox(tmp_path: Path, queue: str, message: str) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", queue=queue)
    for command in ("status", "replay", "purge"):
        done = run(command, "--config", str(config))
        assert done.exit_code == 2
        assert message in done.stderr


def test_replay_names_an_unknown_destination(tmp_path: Path, segment: SegmentEmulator) -> None:
    config = write_config(tmp_path, segment.url)
    make_dead_letters(config, segment, 1)
    done = run("replay", "--config", str(config), "--destination", "nope")
    assert done.exit_code == 2
    assert "'nope'" in done.stderr
    assert "segment" in done.stderr


def test_outbox_group_help() -> None:
    done = CliRunner().invoke(CLI, ["outbox", "--help"])
    assert done.exit_code == 0
    for command in ("status", "replay", "purge"):
        assert command in done.stdout
    assert isinstance(outbox, click.Group)


@pytest.mark.parametrize("command", ["status", "replay", "purge"])
def test_every_outbox_command_takes_short_config_option(
    tmp_path: Path, segment: SegmentEmulator, command: str
) -> None:
    config = write_config(tmp_path, segment.url)
    make_dead_letters(config, segment, 1)  # an outbox for every command to open
    extra = ["--yes"] if command == "purge" else []
    done = run(command, "-c", str(config), "--json", *extra)
    assert done.exit_code == 0, done.output
    assert isinstance(json.loads(done.stdout), dict)


# -- the outbox file in trouble: one line, exit 2, never "this is a bug" --------------------


def _garbage(path: Path) -> Path:
    path.write_bytes(os.urandom(4096))
    return path


def _text(path: Path) -> Path:
    path.write_text("not an outbox\n" * 100, encoding="utf-8")
    return path


def _another_programs_database(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    return path


def _a_directory(path: Path) -> Path:
    path.mkdir()
    return path


def _under_a_file(path: Path) -> Path:
    path.write_text("a file\n", encoding="utf-8")
    return path / "outbox.db"


TROUBLES = {
    "random-bytes": (_garbage, "not an event-router outbox"),
    "text": (_text, "not an event-router outbox"),
    "another-programs-database": (_another_programs_database, "another program's SQLite"),
    "directory": (_a_directory, "is a directory"),
    "parent-is-a-file": (_under_a_file, "is a file, not a directory"),
}
COMMANDS = [("status",), ("status", "--json"), ("replay",), ("purge", "--yes")]


def assert_one_line_exit_2(done: Result, path: Path, problem: str, as_json: bool = False) -> None:
    assert done.exit_code == 2, done.output
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert str(path) in lines[0]
    assert problem in lines[0]
    assert "this is a bug" not in lines[0]
    if as_json:  # the same error on stdout, as JSON
        assert json.loads(done.stdout)["error"] == lines[0].removeprefix("error: ")
    else:
        assert done.stdout == ""


@pytest.mark.parametrize("trouble", sorted(TROUBLES))
def test_commands_on_an_outbox_file_in_trouble_exit_2_with_one_line(
    tmp_path: Path, trouble: str
) -> None:
    make, problem = TROUBLES[trouble]
    path = make(tmp_path / "outbox.db")
    config = write_config(tmp_path, "http://127.0.0.1:9", queue=f'[queue]\npath = "{path}"\n')
    for command in COMMANDS:
        done = run(*command, "--config", str(config))
        assert_one_line_exit_2(done, path, problem, as_json="--json" in command)


def test_commands_on_a_read_only_outbox_exit_2_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    path = tmp_path / "outbox.db"
    SQLiteOutbox(path).close()
    with read_only(path):
        for command in COMMANDS:
            done = run(*command, "--config", str(config))
            assert_one_line_exit_2(done, path, "read-only", as_json="--json" in command)
