"""Local stand-ins for Segment's and PostHog's ingestion APIs, for tests, demos and benchmarks.

>>> from router_core.sandbox import SegmentEmulator
>>> with SegmentEmulator() as em:                              # doctest: +SKIP
...     ...  # point a client at em.url, then look at em.events

Each emulator serves real HTTP on 127.0.0.1, enforces its vendor's documented rules (auth,
required fields, size limits), records what it accepts, and can inject faults (status
sequences, latency, dropped connections). ``Sandbox`` runs both plus a live page of what
they accepted and refused (``viewer.py``).
"""

from router_core.sandbox.emulator import Emulator
from router_core.sandbox.faults import Faults
from router_core.sandbox.posthog import PostHogEmulator
from router_core.sandbox.records import ReceivedEvent, RequestRecord, mask_key
from router_core.sandbox.sandbox import Sandbox
from router_core.sandbox.segment import SegmentEmulator

__all__ = [
    "Emulator",
    "Faults",
    "PostHogEmulator",
    "ReceivedEvent",
    "RequestRecord",
    "Sandbox",
    "SegmentEmulator",
    "mask_key",
]
