"""``[logging]``: how event-router renders its log lines when asked to."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["LoggingSettings"]


class LoggingSettings(BaseModel):
    """``[logging]``: how delivery lines are rendered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"
