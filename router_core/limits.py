"""What one request to a destination may carry: a plugin's declared capability.

Plugins declare their vendor's documented limits (``batch_limits()``); queued delivery and
batch sends size their requests within them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchLimits"]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one request to a destination may carry. Sizes are of the JSON the plugin sends."""

    max_events: int = 100
    max_request_bytes: int = 500_000
    max_event_bytes: int = 32_000
