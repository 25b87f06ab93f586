"""Logging: secrets masked by the processor, and a forked child never hangs on a log line."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator

import pytest
import structlog

from router_core import configure_logging
from router_core.logs import _LineWriter, redact_secrets
from router_core.secrets import register_secret


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(format="json", level="info", stream=out)
    yield out
    structlog.reset_defaults()


def test_registered_secrets_and_secret_named_fields_are_masked(stream: io.StringIO) -> None:
    register_secret("registered-secret-1234")
    structlog.get_logger().info(
        "something", detail="echo registered-secret-1234 back", api_key="plain-key-value"
    )
    line = json.loads(stream.getvalue())
    assert line["detail"] == "echo ********** back"
    assert line["api_key"] == "**********"
    assert line["event"] == "something"


def test_the_processor_leaves_other_values_alone() -> None:
    out = redact_secrets(None, "info", {"event": "x", "count": 3, "status": "ok"})
    assert out == {"event": "x", "count": 3, "status": "ok"}


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging(level="loud")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_the_lock_is_held_can_still_log() -> None:
    read_end, write_end = os.pipe()
    with _LineWriter._lock:  # as if the router's thread were mid-line at fork time
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                with os.fdopen(write_end, "w") as out:
                    configure_logging(format="json", stream=out)
                    structlog.get_logger().warning("child_alive")
            finally:
                os._exit(0)
    os.close(write_end)
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
