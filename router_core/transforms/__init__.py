"""Per-destination transforms: what each destination receives of an event.

A destination's ``transforms`` list runs in order, on that destination's copy of the event
only. Built-ins:

| ``type`` | module | does |
| --- | --- | --- |
| ``pseudonymize`` | ``pseudonymize`` | ids and named values become ``h1:<key_id>:<HMAC-SHA256>`` |
| ``drop`` / ``allow`` | ``fields`` | remove values by glob path / keep only those named |
| ``scrub_ip`` | ``scrub`` | remove ``context.ip``, or truncate it (IPv4 /24, IPv6 /48) |
| ``strip_query`` | ``scrub`` | remove query strings, or named parameters, from URLs |
| ``drop_events`` | ``selection`` | drop events by name pattern or type |
| ``rename`` | ``selection`` | give track events new names |
| ``sample`` | ``sample`` | keep a deterministic fraction of users |
| ``plugin`` | ``plugin`` | a plugin's ``transform_event`` hook |

``settings`` validates the tables, ``paths`` is the glob-path matcher they share and
``pipeline`` puts them in order: ``TransformPipeline.build(name, tables, registry)`` and
``pipeline.apply(event) -> TransformOutcome``.
"""

from router_core.errors import TransformError
from router_core.transforms.pipeline import TransformOutcome, TransformPipeline
from router_core.transforms.plugin import split_message_id
from router_core.transforms.pseudonymize import pseudonym
from router_core.transforms.sample import sample_position
from router_core.transforms.settings import (
    TRANSFORM_TYPES,
    TransformSettings,
    parse_transforms,
)

__all__ = [
    "TRANSFORM_TYPES",
    "TransformError",
    "TransformOutcome",
    "TransformPipeline",
    "TransformSettings",
    "parse_transforms",
    "pseudonym",
    "sample_position",
    "split_message_id",
]
