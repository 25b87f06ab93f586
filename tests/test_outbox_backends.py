"""Outbox engines come from the ``event_router.outbox`` entry points: ours, and another
package's, which ``[queue]`` selects by name or URL scheme and which delivers end to end."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from router_core import Delivery, Destination, Event, Router, hookimpl
from router_core.errors import ConfigError
from router_core.outbox import MemoryOutbox, Outbox, QueueSettings, SQLiteOutbox, open_outbox
from router_core.outbox.backends import (
    BUILT_IN,
    ENTRY_POINT_GROUP,
    available_backends,
    get_backend,
)
from router_core.outbox.spool import SpooledOutbox
from router_core.plugins import PluginRegistry
from router_core.testing.outbox_contract import OutboxContract

# Another distribution's engine: an outbox kept in memory, under a URL scheme of its own.
LEDGER = """
from router_core.outbox import MemoryOutbox, OutboxBackend

OPENED = []


class LedgerOutbox(MemoryOutbox):
    def __init__(self, url):
        super().__init__()
        self.url = url

    @property
    def location(self):
        return self.url


def open_ledger(settings):
    outbox = LedgerOutbox(settings.url.get_secret_value())
    OPENED.append(outbox)
    return outbox


BACKEND = OutboxBackend(open_ledger, schemes=("ledger",), needs_url=True, durable=False)
# The same engine claiming to keep its books elsewhere: the outbox commands may open it.
KEPT = OutboxBackend(open_ledger, schemes=("kept",), needs_url=True)
NOT_A_BACKEND = open_ledger
"""


@pytest.fixture
def ledger_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``ledger_outbox`` on sys.path, advertised as the ``ledger`` backend (and a broken one)."""
    (tmp_path / "ledger_outbox.py").write_text(textwrap.dedent(LEDGER), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = metadata.EntryPoints(
        [
            metadata.EntryPoint("ledger", "ledger_outbox:BACKEND", ENTRY_POINT_GROUP),
            metadata.EntryPoint("kept", "ledger_outbox:KEPT", ENTRY_POINT_GROUP),
            metadata.EntryPoint("broken", "ledger_outbox:NOT_A_BACKEND", ENTRY_POINT_GROUP),
            metadata.EntryPoint("missing", "no_such_module:BACKEND", ENTRY_POINT_GROUP),
        ]
    )

    def entry_points(**params: Any) -> metadata.EntryPoints:
        assert params == {"group": ENTRY_POINT_GROUP}
        return eps

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    available_backends.cache_clear()
    yield importlib.import_module("ledger_outbox")
    available_backends.cache_clear()
    sys.modules.pop("ledger_outbox", None)


def test_our_engines_are_registered_through_the_entry_point_group() -> None:
    available_backends.cache_clear()
    installed = {ep.name: ep.load() for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert installed == dict(BUILT_IN)


def test_the_built_ins_stand_in_when_no_metadata_lists_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metadata, "entry_points", lambda **_: metadata.EntryPoints([]))
    available_backends.cache_clear()
    try:
        assert dict(available_backends()) == dict(BUILT_IN)
        assert isinstance(open_outbox(QueueSettings(backend="memory")), MemoryOutbox)
    finally:
        available_backends.cache_clear()


def test_an_unknown_backend_names_the_installed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        QueueSettings.coerce({"backend": "sqlit"})
    message = str(info.value)
    assert 'queue.backend: no outbox backend is called "sqlit"' in message
    assert '"memory", "postgres", "sqlite"' in message
    assert 'did you mean "sqlite"?' in message


def test_an_unknown_url_scheme_lists_the_claimed_ones() -> None:
    with pytest.raises(ConfigError, match="must be a database URL starting with one of") as info:
        QueueSettings.coerce({"url": "mysql://db/x"})
    assert all(f"{s}://" in str(info.value) for s in ("sqlite", "postgresql", "postgres"))


def test_path_still_selects_a_sqlite_file(tmp_path: Path) -> None:
    settings = QueueSettings(path=tmp_path / "o.db")
    outbox = open_outbox(settings)
    try:
        # send() goes through a spool in front of the SQLite file (router_core.outbox.spool).
        assert isinstance(outbox, SpooledOutbox)
        assert isinstance(outbox.inner, SQLiteOutbox)
        assert outbox.location == str(tmp_path / "o.db")
    finally:
        outbox.close()


def test_a_backend_that_fails_to_load_is_left_out(ledger_installed: Any) -> None:
    names = set(available_backends())
    assert names == {"ledger", "kept", *BUILT_IN}
    with pytest.raises(ConfigError, match='no outbox backend is called "broken"'):
        get_backend("broken")


def test_a_backend_that_needs_a_url_says_so(ledger_installed: Any) -> None:
    with pytest.raises(ConfigError, match=r'backend = "ledger" needs url = "ledger://\.\.\."'):
        QueueSettings.coerce({"backend": "ledger"})


def test_a_third_party_backend_is_chosen_by_its_url_and_delivers(ledger_installed: Any) -> None:
    settings = QueueSettings.coerce({"url": "ledger://books/1", "flush_interval": 0.05})
    assert settings is not None
    assert settings.backend == "ledger"
    assert settings.byte_limit == 64 * 1024**2  # not durable: the in-memory default
    delivered: list[str] = []

    class Recorder:
        @hookimpl
        async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
            delivered.append(event.message_id)
            return Delivery(status_code=200)

    registry = PluginRegistry(entry_points=False)
    registry.register(Recorder(), "recorder")
    with Router({"r": {"plugin": "recorder"}}, plugins=registry, queue=settings) as router:
        sent = [router.send(Event.track("E", user_id=f"u{i}")).message_id for i in range(5)]
        result = router.flush(timeout=30)
        assert router.outbox is ledger_installed.OPENED[0]
    assert result.complete, result
    assert sorted(delivered) == sorted(sent)


@pytest.mark.usefixtures("ledger_installed")
class TestThirdPartyOutbox(OutboxContract):
    """The contract suite, run by another package's engine as its own tests would run it."""

    def make_outbox(self) -> Outbox:
        settings = QueueSettings(backend="ledger", url="ledger://books/contract")
        return open_outbox(settings)


def test_the_outbox_commands_open_a_third_party_engine_through_its_backend(
    ledger_installed: Any, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from router_core.cli import main

    config = tmp_path / "router.toml"
    config.write_text('[queue]\nurl = "kept://books/7"\n', encoding="utf-8")
    done = CliRunner().invoke(main, ["outbox", "status", "-c", str(config), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["events"] == 0
    # The engine's own outbox was opened (not a SQLite file at the default path).
    assert [o.url for o in ledger_installed.OPENED] == ["kept://books/7"]
    assert not (tmp_path / ".event-router").exists()
    config.write_text('[queue]\nurl = "ledger://books/7"\n', encoding="utf-8")
    refused = CliRunner().invoke(main, ["outbox", "status", "-c", str(config)])
    assert refused.exit_code == 2
    assert 'backend = "ledger" keeps the outbox in the sending process\'s memory' in (
        refused.stderr
    )
