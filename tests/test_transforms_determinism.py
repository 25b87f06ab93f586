"""The same event and config give the same output in every process and run.

Each check runs the pipeline in fresh interpreters with different ``PYTHONHASHSEED`` values
(anything built on ``hash()`` or randomness would differ) and compares with this process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from router_core import Event, TransformPipeline

KEY = "pseudonym-key-0123456789abcdef"

# Reads {"tables": [...], "events": [...]} on stdin; prints one line per event: the JSON of
# what the pipeline made of it, or the reason it was dropped.
SCRIPT = """
import json, sys
from router_core import Event, TransformPipeline
job = json.load(sys.stdin)
pipeline = TransformPipeline.build("posthog", job["tables"])
for data in job["events"]:
    outcome = pipeline.apply(Event.parse(data))
    print(json.dumps([e.model_dump(mode="json") for e in outcome.events] or outcome.dropped))
"""


def _in_subprocesses(tables: list[dict[str, Any]], events: Sequence[Event]) -> list[list[Any]]:
    job = json.dumps({"tables": tables, "events": [e.model_dump(mode="json") for e in events]})
    runs = []
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            input=job,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=120,
        )
        runs.append([json.loads(line) for line in done.stdout.splitlines()])
    return runs


def _here(tables: list[dict[str, Any]], events: Sequence[Event]) -> list[Any]:
    pipeline = TransformPipeline.build("posthog", tables)
    assert pipeline is not None
    out = []
    for event in events:
        outcome = pipeline.apply(event)
        out.append([e.model_dump(mode="json") for e in outcome.events] or outcome.dropped)
    return out


def test_pseudonyms_are_the_same_in_every_process_and_match_a_reference_hmac() -> None:
    tables: list[dict[str, Any]] = [
        {
            "type": "pseudonymize",
            "key": KEY,
            "key_id": "2026-01",
            "fields": ["user_id", "anonymous_id", "traits.email"],
        }
    ]
    events = [
        Event.identify(user_id=f"user-{n}", anonymous_id=f"anon-{n}", traits={"email": f"{n}@x"})
        for n in range(50)
    ]
    here = _here(tables, events)
    first, second = _in_subprocesses(tables, events)
    assert first == second == here
    for n, (out,) in enumerate(here):
        digest = hmac.new(KEY.encode(), f"user-{n}".encode(), hashlib.sha256).hexdigest()
        assert out["user_id"] == f"h1:2026-01:{digest}"
        email = hmac.new(KEY.encode(), f"{n}@x".encode(), hashlib.sha256).hexdigest()
        assert out["traits"] == {"email": f"h1:2026-01:{email}"}


def test_sampling_keeps_the_same_users_in_every_process() -> None:
    tables: list[dict[str, Any]] = [{"type": "sample", "rate": 0.3, "salt": "2026"}]
    events = [Event.track("Seen", user_id=f"user-{n}") for n in range(1000)]
    here = _here(tables, events)
    first, second = _in_subprocesses(tables, events)
    assert first == second == here
    kept = sum(1 for out in here if out != "sampled out")
    assert 0 < kept < len(events)  # some in and some out: the comparison means something


def test_the_kept_fraction_is_near_the_rate() -> None:
    pipeline = TransformPipeline.build("posthog", [{"type": "sample", "rate": 0.1}])
    assert pipeline is not None
    kept = sum(
        1 for n in range(10_000) if pipeline.apply(Event.track("Seen", user_id=f"u{n}")).events
    )
    # Binomial(10,000, 0.1) has a standard deviation of 30: six of them either side.
    assert 820 <= kept <= 1180
