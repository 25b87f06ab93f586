"""Transform tables are validated like every other setting: each problem names its field."""

from __future__ import annotations

from typing import Any

import pytest

from router_core import ConfigError
from router_core.transforms import TRANSFORM_TYPES, parse_transforms
from router_core.transforms.settings import (
    DEFAULT_URL_PATHS,
    ID_FIELDS,
    PseudonymizeSettings,
    SampleSettings,
)

WHERE = "destinations.posthog.transforms"
SECRET = "pseudonym-key-0123456789abcdef"  # what must never be echoed


def _problems(tables: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_transforms(tables, WHERE)
    return list(caught.value.problems)


def test_the_readme_example_validates() -> None:
    parsed = parse_transforms(
        [
            {
                "type": "pseudonymize",
                "key": SECRET,
                "key_id": "2026-01",
                "fields": [*ID_FIELDS, "traits.email", "properties.account.owner_id"],
            },
            {"type": "drop", "paths": ["properties.card_*", "context.ip"]},
            {"type": "allow", "paths": ["properties.plan", "properties.total"]},
            {"type": "scrub_ip"},
            {"type": "strip_query"},
            {"type": "drop_events", "events": ["Debug *"], "types": ["screen"]},
            {"type": "rename", "events": {"Order Completed": "purchase"}},
            {"type": "sample", "rate": 0.1},
            {"type": "plugin", "name": "my_transform", "options": {"level": 2}},
        ],
        WHERE,
    )
    assert [t.type for t in parsed] == list(TRANSFORM_TYPES)
    strip = parsed[4]
    assert strip.type == "strip_query"
    assert strip.paths == DEFAULT_URL_PATHS
    assert strip.params is None


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"type": "drop", "paths": ["properties.card_*"], "path": []}, f"{WHERE}[0].path: unknown"),
        ({"type": "drop", "paths": []}, f"{WHERE}[0].paths: name at least one path"),
        ({"type": "drop", "paths": ["user_id"]}, f"{WHERE}[0].paths.0: a path must start with"),
        ({"type": "allow", "paths": ["properties..x"]}, f"{WHERE}[0].paths.0: a path cannot"),
        ({"type": "scrub_ip", "mode": "hash"}, f"{WHERE}[0].mode: Input should be 'remove'"),
        ({"type": "strip_query", "params": []}, f"{WHERE}[0].params: name at least one"),
        ({"type": "drop_events"}, f"{WHERE}[0]: give events (name patterns) or types"),
        ({"type": "drop_events", "types": ["click"]}, f"{WHERE}[0].types.0: Input should be"),
        ({"type": "rename", "events": {"a": ""}}, f"{WHERE}[0].events.a: String should have"),
        ({"type": "sample", "rate": 1.5}, f"{WHERE}[0].rate: Input should be less than"),
        ({"type": "sample"}, f"{WHERE}[0].rate: Field required"),
        ({"type": "plugin"}, f"{WHERE}[0].name: Field required"),
        ({"type": "hash"}, f"{WHERE}[0].type: must be one of pseudonymize, drop"),
        ({"paths": ["context.ip"]}, f"{WHERE}[0].type: required"),
        ("drop", f"{WHERE}[0]: must be a table"),
    ],
)
def test_each_problem_names_the_transform_and_the_field(table: Any, expected: str) -> None:
    problems = _problems([table])
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_every_problem_of_every_transform_is_reported_at_once() -> None:
    problems = _problems(
        [
            {"type": "scrub_ip"},
            {"type": "drop", "paths": ["traits.email"], "extra": 1},
            {"type": "sample", "rate": -1},
        ]
    )
    assert [p.split(":")[0] for p in problems] == [f"{WHERE}[1].extra", f"{WHERE}[2].rate"]


def test_transforms_must_be_an_array_of_tables() -> None:
    assert _problems({"type": "drop"}) == [
        f"{WHERE}: must be an array of tables ([[...transforms]])"
    ]
    assert parse_transforms(None, WHERE) == ()
    assert parse_transforms([], WHERE) == ()


@pytest.mark.parametrize(
    "table",
    [
        {"type": "pseudonymize", "key": SECRET[:10], "key_id": "k1"},  # too short
        {"type": "pseudonymize", "key": SECRET, "key_id": "k:1"},  # bad key id
        {"type": "pseudonymize", "key": SECRET, "key_id": "k1", "fields": ["user_id.x"]},
        {"type": "pseudonymize", "kye": SECRET, "key_id": "k1"},  # a typo in the key's name
        {"type": "pseudonymize", "key": SECRET, "key_id": "k1", "fields": [SECRET]},
    ],
)
def test_pseudonymize_errors_name_the_field_and_never_echo_the_key(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_transforms([table], WHERE)
    text = str(caught.value)
    assert f"{WHERE}[0]." in text
    assert SECRET not in text
    assert SECRET[:10] not in text


def test_the_key_is_masked_in_reprs_and_must_be_long_enough() -> None:
    (settings,) = parse_transforms([{"type": "pseudonymize", "key": SECRET, "key_id": "k1"}])
    assert isinstance(settings, PseudonymizeSettings)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.fields == ID_FIELDS
    assert _problems([{"type": "pseudonymize", "key": "x" * 15, "key_id": "k1"}]) == [
        f"{WHERE}[0].key: must be at least 16 characters of random secret "
        "(for example the output of `openssl rand -hex 32`)"
    ]


def test_validated_settings_pass_through() -> None:
    sample = SampleSettings(type="sample", rate=0.5)
    assert parse_transforms([sample, {"type": "sample", "rate": 0.5}]) == (sample, sample)
