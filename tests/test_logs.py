"""Logging belongs to the application: stdlib records under ``event_router``, quiet by default.

The app's ``logging`` set-up (basicConfig, levels, handlers) and its structlog set-up decide what
is shown; event-router's own handler is there only when asked for; secrets are masked before
any handler sees a record; a forked child never hangs on a log line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from router_core import (
    ConfigError,
    Delivery,
    DeliveryError,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    RouterConfig,
    configure_logging,
    hookimpl,
)
from router_core.cli import main
from router_core.logs import _Handler, _LineWriter, get_logger, redact_secrets, stdlib_logger
from router_core.secrets import register_secret

TOKEN = "plugin-token-never-logged-7731"
FAST_RETRY = {"max_attempts": 3, "backoff_base": 0.001, "backoff_max": 0.002}


class Settings(DestinationSettings):
    token: SecretStr


class FlakyOnce:
    """Fails the first attempt of every event (retryable), logs a line of its own, delivers."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    @hookimpl
    def destination_settings(self) -> type[Settings]:
        return Settings

    @hookimpl
    async def send_event(self, destination: Destination[Settings], event: Event) -> Delivery:
        token = destination.settings.token.get_secret_value()
        destination.log.info("plugin_says", echoed=f"server echoed {token}", api_key=token)
        if event.message_id not in self.seen:
            self.seen.add(event.message_id)
            raise DeliveryError(f"HTTP 503 for {token}", status_code=503, retryable=True)
        return Delivery(200)


@pytest.fixture(autouse=True)
def no_app_structlog() -> Iterator[None]:
    """Start each test as an app that never called structlog.configure()."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def router() -> Iterator[Router]:
    registry = PluginRegistry(entry_points=False)
    registry.register(FlakyOnce(), "flaky")
    config = {"shop": {"plugin": "flaky", "token": TOKEN, "retry": FAST_RETRY}}
    with Router(config, plugins=registry) as r:
        yield r


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """An app's own handler on the root logger, as ``logging.basicConfig`` would add."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            self.format(record)  # what a real handler does: the record must render
            seen.append(record)

    seen: list[logging.LogRecord] = []
    handler = Collect()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    yield seen
    logging.getLogger().removeHandler(handler)


def attempts(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "event", None) == "delivery_attempt"]


# -- what an application sees --------------------------------------------------------------


def test_quiet_by_default_retries_are_warnings_and_deliveries_are_not_shown(
    router: Router, records: list[logging.LogRecord]
) -> None:
    assert logging.getLogger("event_router").getEffectiveLevel() == logging.WARNING
    router.send(Event.track("Order Completed", user_id="u1"))

    (retry,) = attempts(records)  # the delivered attempt is DEBUG: not shown
    assert retry.levelno == logging.WARNING
    assert retry.status == "retrying"  # type: ignore[attr-defined]
    assert [r.event for r in records] == ["delivery_attempt"]  # type: ignore[attr-defined]


def test_set_level_debug_shows_every_attempt_with_its_fields(
    router: Router, records: list[logging.LogRecord]
) -> None:
    logging.getLogger("event_router").setLevel(logging.DEBUG)
    try:
        event = Event.track("Order Completed", user_id="u1")
        router.send(event)
    finally:
        logging.getLogger("event_router").setLevel(logging.NOTSET)

    retry, delivered = attempts(records)
    assert (retry.levelname, delivered.levelname) == ("WARNING", "DEBUG")
    assert delivered.name == "event_router.delivery"
    fields = {k: getattr(delivered, k) for k in ("destination", "plugin", "status", "attempt")}
    assert fields == {"destination": "shop", "plugin": "flaky", "status": "delivered", "attempt": 2}
    assert delivered.message_id == event.message_id  # type: ignore[attr-defined]
    assert delivered.status_code == 200  # type: ignore[attr-defined]
    # The message alone says it all, for a plain "%(message)s" format.
    assert delivered.getMessage().startswith("delivery_attempt destination=shop plugin=flaky")
    assert "status=delivered" in delivered.getMessage()
    # A plugin's own line (INFO) reaches the app too, bound to its destination.
    own = [
        (r.levelno, vars(r)["destination"]) for r in records if vars(r)["event"] == "plugin_says"
    ]
    assert own == [(logging.INFO, "shop")] * 2


def test_caplog_receives_the_records(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="event_router")
    router.send(Event.identify(user_id="u1"))
    statuses = [r.status for r in caplog.records if r.message.startswith("delivery_attempt")]  # type: ignore[attr-defined]
    assert statuses == ["retrying", "delivered"]


def test_a_record_points_at_the_line_that_logged_it(records: list[logging.LogRecord]) -> None:
    get_logger("event_router.test").warning("here", name="a field called name")
    (record,) = records
    assert record.funcName == "test_a_record_points_at_the_line_that_logged_it"
    assert record.pathname == __file__
    # A field named like a LogRecord attribute keeps both.
    assert record.name == "event_router.test"
    assert record.name_ == "a field called name"  # type: ignore[attr-defined]


def test_secrets_are_masked_before_any_app_handler_sees_them(
    router: Router, records: list[logging.LogRecord]
) -> None:
    logging.getLogger("event_router").setLevel(logging.DEBUG)
    try:
        router.send(Event.track("Order Completed", user_id="u1"))
        # A line logged straight through the stdlib logger is masked too.
        stdlib_logger("event_router.sandbox").warning("client sent %s", TOKEN)
    finally:
        logging.getLogger("event_router").setLevel(logging.NOTSET)
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    rendered = [handler.format(r) for r in records] + [repr(vars(r)) for r in records]
    assert len(records) == 5  # two plugin lines, two attempts, the sandbox line
    assert all(TOKEN not in text for text in rendered)
    assert any("server echoed **********" in text for text in rendered)
    own = [r for r in records if getattr(r, "event", None) == "plugin_says"]
    assert {r.api_key for r in own} == {"**********"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("setup", ["basic_warning", "nothing", "debug"])
def test_an_app_process_sees_what_its_logging_set_up_asks_for(setup: str) -> None:
    # A real process: basicConfig and Python's last-resort handler behave as in an app only
    # where no test framework has put handlers on the root logger.
    script = textwrap.dedent(
        f"""
        import logging
        from router_core import Event, Router
        from router_core.sandbox import Sandbox

        setup = {setup!r}
        if setup == "basic_warning":
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        elif setup == "debug":
            logging.basicConfig(format="%(levelname)s %(message)s")
            logging.getLogger("event_router").setLevel(logging.DEBUG)
        with Sandbox() as sb:
            sb.segment.faults.set(statuses=[503])
            retry = {{"backoff_base": 0.001, "backoff_max": 0.002}}
            config = {{"segment": {{"plugin": "segment", "write_key": "k-1234",
                                    "host": sb.segment.url, "retry": retry}}}}
            with Router(config) as router:
                assert router.send(Event.track("Order Completed", user_id="u1")).ok
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENT_ROUTER_LOG")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    retrying = [line for line in lines if "status=retrying" in line]
    delivered = [line for line in lines if "status=delivered" in line]
    assert len(retrying) == 1, done.stderr
    if setup == "debug":
        assert len(delivered) == 1, done.stderr
        assert delivered[0].startswith("DEBUG delivery_attempt destination=segment")
    else:
        assert delivered == [], done.stderr
    assert "k-1234" not in done.stderr


# -- an application's own structlog configuration -----------------------------------------


def test_an_app_structlog_json_set_up_renders_our_records(
    router: Router, records: list[logging.LogRecord]
) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    saved = structlog.get_config()
    router.send(Event.track("Order Completed", user_id="u1"))  # destinations built now

    assert structlog.get_config() == saved
    (retry,) = attempts(records)
    line = json.loads(retry.getMessage())
    assert line["event"] == "delivery_attempt"
    assert line["logger"] == "event_router.delivery"
    assert (line["level"], line["status"], line["destination"]) == ("warning", "retrying", "shop")
    assert TOKEN not in retry.getMessage()
    assert retry.status == "retrying"  # type: ignore[attr-defined]


def test_an_app_processor_formatter_renders_our_records_like_its_own() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ]
        )
    )
    logging.getLogger().addHandler(handler)
    try:
        structlog.get_logger("app").warning("app_line", user="u1")
        get_logger("event_router.outbox").warning("outbox_line", pending=3)
    finally:
        logging.getLogger().removeHandler(handler)
    app, ours = (json.loads(line) for line in out.getvalue().splitlines())
    assert app == {"user": "u1", "event": "app_line", "level": "warning"}
    assert ours == {"pending": 3, "event": "outbox_line", "level": "warning"}


def test_app_processors_run_only_for_lines_its_levels_let_through(router: Router) -> None:
    seen: list[str] = []

    def spy(_logger: Any, method: str, event_dict: Any) -> Any:
        seen.append(f"{method}:{event_dict['event']}")
        return event_dict

    structlog.configure(
        processors=[spy, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    router.send(Event.track("Order Completed", user_id="u1"))  # event_router at WARNING
    assert seen == ["warning:delivery_attempt"]  # not the INFO plugin lines, not the DEBUG one


def test_structlog_capture_logs_sees_our_lines() -> None:
    with structlog.testing.capture_logs() as logs:
        get_logger("event_router.delivery").bind(destination="d").debug("x", api_key="abcd1234")
    assert logs == [
        {"destination": "d", "api_key": "**********", "event": "x", "log_level": "debug"}
    ]


# -- event-router's own handler: configure_logging, [logging], EVENT_ROUTER_LOG_* ------------


def our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger("event_router").handlers if isinstance(h, _Handler)]


def test_configure_logging_prints_json_lines_and_still_propagates(
    router: Router, records: list[logging.LogRecord]
) -> None:
    first, stream = io.StringIO(), io.StringIO()
    configure_logging(format="json", level="info", stream=first)
    configure_logging(format="json", level="debug", stream=stream)  # replaces, never stacks
    router.send(Event.track("Order Completed", user_id="u1"))

    assert len(our_handlers()) == 1
    assert first.getvalue() == ""
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["event"], x.get("status")) for x in lines] == [
        ("plugin_says", None),
        ("delivery_attempt", "retrying"),
        ("plugin_says", None),
        ("delivery_attempt", "delivered"),
    ]
    assert {x["logger"] for x in lines} == {"event_router.delivery"}
    assert lines[3]["level"] == "debug"
    assert lines[3]["attempt"] == 2
    assert TOKEN not in stream.getvalue()
    assert len(records) == 4  # the app's own handler got them too


def test_console_format_is_one_readable_line() -> None:
    stream = io.StringIO()
    configure_logging(format="console", level="warning", stream=stream)
    get_logger("event_router.outbox").info("not_shown")
    get_logger("event_router.outbox").error("outbox_events_lost", pending={"segment": 3})
    (line,) = stream.getvalue().splitlines()
    assert "[error" in line
    assert "outbox_events_lost" in line
    assert "pending={'segment': 3}" in line


def test_unknown_values_are_refused_naming_where_they_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match=r"^unknown log level 'loud'"):
        configure_logging(level="loud")
    monkeypatch.setenv("EVENT_ROUTER_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match=r"^EVENT_ROUTER_LOG_FORMAT: unknown log format 'xml'"):
        configure_logging()
    with pytest.raises(ConfigError, match="EVENT_ROUTER_LOG_FORMAT: unknown log format 'xml'"):
        Router({})


def test_a_router_leaves_logging_alone_unless_asked(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text("[destinations]\n", encoding="utf-8")
    Router.from_config(config).close()
    assert our_handlers() == []
    assert logging.getLogger("event_router").level == logging.NOTSET


def test_a_logging_table_installs_our_handler(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[logging]\nformat = "json"\nlevel = "debug"\n', encoding="utf-8")
    Router.from_config(config).close()
    assert len(our_handlers()) == 1
    assert logging.getLogger("event_router").level == logging.DEBUG


def test_the_environment_installs_our_handler_and_wins_over_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENT_ROUTER_LOG_LEVEL", "error")
    Router(RouterConfig.from_dict({"logging": {"level": "debug"}})).close()
    assert len(our_handlers()) == 1
    assert logging.getLogger("event_router").level == logging.ERROR


def test_a_router_never_replaces_a_handler_installed_by_a_call() -> None:
    stream = io.StringIO()
    configure_logging(format="json", level="warning", stream=stream)
    Router(RouterConfig.from_dict({"logging": {"format": "console", "level": "debug"}})).close()
    get_logger().warning("still_json")
    assert json.loads(stream.getvalue())["event"] == "still_json"
    assert logging.getLogger("event_router").level == logging.WARNING


def test_structlog_is_never_configured_by_a_router_or_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[logging]\nformat = "json"\n\n[destinations]\n', encoding="utf-8")
    Router.from_config(config).close()
    main.main(["config", "check", str(config)], standalone_mode=False)
    assert not structlog.is_configured()


def test_the_command_line_leaves_the_event_router_logger_as_it_found_it() -> None:
    logger = logging.getLogger("event_router")
    before = (list(logger.handlers), logger.level)
    main.main(["plugins", "--json"], standalone_mode=False)
    assert (list(logger.handlers), logger.level) == before


# -- pieces ---------------------------------------------------------------------------------


def test_registered_secrets_and_secret_named_fields_are_masked() -> None:
    register_secret("registered-secret-1234")
    out = redact_secrets(
        None, "info", {"event": "x", "detail": "echo registered-secret-1234 back", "api_key": "k"}
    )
    assert out == {"event": "x", "detail": "echo ********** back", "api_key": "**********"}


def test_the_processor_leaves_other_values_alone() -> None:
    out = redact_secrets(None, "info", {"event": "x", "count": 3, "status": "ok"})
    assert out == {"event": "x", "count": 3, "status": "ok"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_the_locks_are_held_can_still_log() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as out:
        configure_logging(format="json", stream=out)
        (handler,) = our_handlers()
        # As if the router's thread were mid-line at fork time: both locks held.
        with _LineWriter._lock, handler.lock:  # type: ignore[union-attr]
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                try:
                    get_logger().warning("child_alive")
                finally:
                    os._exit(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on its first log line")
    with os.fdopen(read_end) as received:
        assert json.loads(received.read())["event"] == "child_alive"
    assert os.waitstatus_to_exitcode(status) == 0
