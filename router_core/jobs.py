"""Job files: one event, the destinations it goes to, and which destination's answer to show.

A job file is TOML::

    [job]
    name = "Segment Track Event"
    env = ["SEGMENT_WRITE_KEY"]       # variables the job needs; checked before anything is sent
    response = "segment"              # whose output is the job's response

    [input]                           # the event's fields; type defaults to "track"
    event = "Order Completed"
    user_id = "user_12345"

    [destinations.segment]            # exactly as in router.toml
    plugin = "segment"
    write_key = "${SEGMENT_WRITE_KEY}"

``event-router run JOB_FILE`` runs one; ``Job.load(path).run()`` does the same from Python.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from router_core.config import RouterConfig, read_toml
from router_core.errors import ConfigError, JobInputError
from router_core.events import Event
from router_core.plugins import PluginRegistry
from router_core.results import SendReport
from router_core.router import Router
from router_core.secrets import MaskedReprModel
from router_core.settings import LoggingSettings, validation_problems

__all__ = [
    "Job",
    "JobInputError",
    "JobResult",
    "JobSection",
    "apply_override",
    "parse_override",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-$]*$")


class JobSection(BaseModel):
    """``[job]``: what the job is called, what it needs, and whose answer it prints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    env: tuple[str, ...] = ()
    response: str | None = None

    @model_validator(mode="after")
    def _env_names(self) -> JobSection:
        bad = [name for name in self.env if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"env: not environment variable names: {', '.join(map(repr, bad))}")
        return self


class Job(MaskedReprModel):
    """A parsed job file. Build it with ``Job.load(path)`` or ``Job.from_dict(data)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: JobSection
    input: dict[str, Any] = Field(default_factory=dict)
    destinations: dict[str, dict[str, Any]] = Field(min_length=1)
    logging: LoggingSettings | None = None

    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _response_names_a_destination(self) -> Job:
        response = self.job.response
        if response is None and len(self.destinations) > 1:
            raise ValueError(
                "job.response: required when the job has several destinations "
                f"(one of {', '.join(self.destinations)})"
            )
        if response is not None and response not in self.destinations:
            raise ValueError(
                f"job.response: {response!r} is not one of the job's destinations "
                f"({', '.join(self.destinations)})"
            )
        return self

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Job:
        """Read a job file; ``ConfigError`` lists every problem, naming the file."""
        return cls.from_dict(read_toml(path, kind="job file"), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Job:
        """Validate a job from a mapping (the TOML document as a dict)."""
        try:
            job = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                validation_problems(exc, unknown="unknown key", missing="required", echoes=True),
                source=source,
            ) from None
        job._source = source
        return job

    @property
    def source(self) -> str | None:
        """The file the job was read from, when it was."""
        return self._source

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def response_destination(self) -> str:
        """The destination whose output is the job's response."""
        return self.job.response or next(iter(self.destinations))

    # -- building -----------------------------------------------------------------------------

    def missing_env(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The variables listed in ``[job] env`` that are unset or empty in ``env``."""
        environ = os.environ if env is None else env
        return [name for name in self.job.env if not environ.get(name)]

    def event_data(self, overrides: Iterable[tuple[tuple[str, ...], Any]] = ()) -> dict[str, Any]:
        """The ``[input]`` table (type defaulting to track) with ``overrides`` applied."""
        data: dict[str, Any] = {"type": "track", **_deep_copy(self.input)}
        for path, value in overrides:
            apply_override(data, path, value)
        return data

    def event(self, overrides: Iterable[tuple[tuple[str, ...], Any]] = ()) -> Event:
        """The job's event; ``InvalidEventError`` names the field that is wrong."""
        return Event.parse(self.event_data(overrides))

    def router_config(self, max_attempts: int | None = None) -> RouterConfig:
        """The job's destinations as a router config; ``max_attempts`` caps every retry policy."""
        destinations: dict[str, Any] = {}
        for name, table in self.destinations.items():
            copied = _deep_copy(table)
            if max_attempts is not None:
                retry = copied.get("retry", {})
                if isinstance(retry, dict):  # anything else is reported when resolved
                    copied["retry"] = {**retry, "max_attempts": max_attempts}
            destinations[name] = copied
        data: dict[str, Any] = {"destinations": destinations}
        if self.logging is not None:
            data["logging"] = self.logging.model_dump()
        return RouterConfig.from_dict(data, source=self.source)

    # -- running ------------------------------------------------------------------------------

    def run(
        self,
        *,
        env: Mapping[str, str] | None = None,
        plugins: PluginRegistry | None = None,
        overrides: Iterable[tuple[tuple[str, ...], Any]] = (),
        max_attempts: int | None = None,
    ) -> JobResult:
        """Check the environment, build the event, send it, and pick the response.

        Raises ``ConfigError`` (missing variables, bad destinations) or ``InvalidEventError``
        before anything is sent. A destination that fails is a result, not an exception.
        """
        missing = self.missing_env(env)
        if missing:
            raise ConfigError(
                [
                    f"environment variable {name} is not set (the job needs it: [job] env)"
                    for name in missing
                ],
                source=self.source,
            )
        event = self.event(overrides)
        with Router(self.router_config(max_attempts), plugins=plugins, env=env) as router:
            report = router.send(event)
        return JobResult(job=self, event=event, report=report, response=self._response(report))

    def _response(self, report: SendReport) -> dict[str, Any]:
        name = self.response_destination
        result = report.results.get(name)
        if result is None:
            reason = (
                "its events/types filter did not match the event"
                if name in report.skipped
                else "it is disabled"
            )
            return {
                "success": False,
                "error": f"destination {name!r} was not sent the event: {reason}",
            }
        return dict(result.output)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What one job run did: the event sent, every destination's result, and the response."""

    job: Job
    event: Event
    report: SendReport
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when every destination delivered and the response says so."""
        return self.report.ok and self.response.get("success") is True

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.name,
            "source": self.job.source,
            "ok": self.ok,
            "response": self.response,
            "report": self.report.to_dict(),
        }


# -- overrides --------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Parse ``PATH=VALUE`` (``properties.total=12``) into a key path and a value.

    The value is JSON when it parses as JSON (``12``, ``true``, ``["a"]``, ``"12"``), otherwise
    the text itself. Raises ``JobInputError`` naming the override when it is malformed.
    """
    path_text, sep, raw = text.partition("=")
    if not sep:
        raise JobInputError(f"--set {text!r}: expected PATH=VALUE, e.g. properties.total=12")
    parts = tuple(path_text.strip().split("."))
    bad = [part for part in parts if not _PATH_PART.match(part)]
    if bad:
        raise JobInputError(
            f"--set {text!r}: {path_text.strip()!r} is not a dotted path of field names "
            "(e.g. properties.total)"
        )
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating tables along the way."""
    target = data
    for depth, key in enumerate(path[:-1]):
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise JobInputError(
                f"--set {'.'.join(path)}: {where!r} is a {type(child).__name__}, not a table, "
                "so it has no fields to set"
            )
        target = child
    target[path[-1]] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
