"""The glob-path matcher every path-based transform shares."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from router_core.transforms.paths import DELETE, PathPattern, PathSet


def _data() -> dict[str, Any]:
    return {
        "user_id": "u1",
        "properties": {
            "card_number": "4111",
            "card_expiry": "12/30",
            "cardholder": "Ann",
            "plan": "pro",
            "a.b": 1,
            "account": {"secret": "s1", "owner_id": "o1", "deep": {"secret": "s2"}},
            "billing": {"secret": "s3"},
            "products": [{"sku": "A", "coupon": "X"}, {"sku": "B"}, {"coupon": "Y"}],
        },
        "context": {"ip": "1.2.3.4", "page": {"url": "https://example.com/?q=1"}},
    }


def _delete(_: Any) -> Any:
    return DELETE


def test_star_matches_within_one_segment_only() -> None:
    data = _data()
    out = PathSet.parse(["properties.card_*"]).update(data, _delete)
    assert set(out["properties"]) == set(data["properties"]) - {"card_number", "card_expiry"}
    assert "cardholder" in out["properties"]  # "card_*" needs the underscore


def test_star_segment_reaches_one_level_and_double_star_any_level() -> None:
    one = PathSet.parse(["properties.*.secret"]).update(_data(), _delete)
    assert "secret" not in one["properties"]["account"]
    assert "secret" not in one["properties"]["billing"]
    assert one["properties"]["account"]["deep"] == {"secret": "s2"}  # two levels down: kept

    anywhere = PathSet.parse(["properties.**.secret"]).update(_data(), _delete)
    assert list(PathSet.parse(["**.secret"]).find(anywhere)) == []
    assert anywhere["properties"]["account"] == {"owner_id": "o1", "deep": {}}


def test_list_items_are_matched_by_index() -> None:
    out = PathSet.parse(["properties.products.*.coupon"]).update(_data(), _delete)
    assert out["properties"]["products"] == [{"sku": "A"}, {"sku": "B"}, {}]
    first = PathSet.parse(["properties.products.0"]).update(_data(), _delete)
    assert first["properties"]["products"] == [{"sku": "B"}, {"coupon": "Y"}]


def test_a_key_holding_a_dot_is_reached_with_a_star() -> None:
    out = PathSet.parse(["properties.a*"]).update(_data(), _delete)
    assert "a.b" not in out["properties"]
    assert "account" not in out["properties"]


def test_update_copies_on_write_and_returns_the_same_object_when_nothing_matches() -> None:
    data = _data()
    before = copy.deepcopy(data)
    paths = PathSet.parse(["properties.nope", "context.page.missing", "traits.email"])
    assert paths.update(data, _delete) is data
    out = PathSet.parse(["context.ip"]).update(data, _delete)
    assert data == before  # the input is never changed
    assert out["properties"] is data["properties"]  # untouched branches are shared
    assert out["context"] == {"page": {"url": "https://example.com/?q=1"}}


def test_update_replaces_matched_values_with_what_the_function_returns() -> None:
    out = PathSet.parse(["user_id", "properties.account.owner_id"]).update(
        _data(), lambda value: f"<{value}>"
    )
    assert out["user_id"] == "<u1>"
    assert out["properties"]["account"]["owner_id"] == "<o1>"


def test_keep_prunes_inside_the_named_roots_only() -> None:
    data = _data()
    out = PathSet.parse(["properties.plan", "properties.products.*.sku"]).keep(data)
    assert out["properties"] == {"plan": "pro", "products": [{"sku": "A"}, {"sku": "B"}]}
    assert out["context"] is data["context"]  # not named: left alone
    assert out["user_id"] == "u1"


def test_keep_keeps_the_input_order_and_empties_a_root_with_no_match() -> None:
    data = _data()
    out = PathSet.parse(["properties.plan", "properties.card_number"]).keep(data)
    assert list(out["properties"]) == ["card_number", "plan"]
    assert PathSet.parse(["context.nothing"]).keep(data)["context"] == {}
    assert PathSet.parse(["properties.**"]).keep(data) is data


def test_find_lists_matches_with_their_paths() -> None:
    found = dict(PathSet.parse(["properties.**.secret"]).find(_data()))
    assert found == {
        ("properties", "account", "secret"): "s1",
        ("properties", "account", "deep", "secret"): "s2",
        ("properties", "billing", "secret"): "s3",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "cannot be empty"),
        ("properties..x", "empty segment"),
        ("properties.", "empty segment"),
        ("properties.a**", "whole segment"),
        ("user_id", "must start with one of properties, context"),
        ("*.email", "must start with one of"),
        ("**", "must start with one of"),
    ],
)
def test_bad_patterns_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PathPattern.parse(text, roots=("properties", "context"))


def test_many_distinct_keys_match_as_well_as_few() -> None:
    # More keys than the matcher remembers transitions for: the rest are worked out afresh.
    properties = {f"key{n}": {"secret": n, "kept": n} for n in range(3000)}
    out = PathSet.parse(["properties.*.secret"]).update({"properties": properties}, _delete)
    assert out["properties"] == {f"key{n}": {"kept": n} for n in range(3000)}


def test_a_lone_double_star_matches_every_value_but_not_the_data_itself() -> None:
    data = {"a": {"b": 1}, "c": [2]}
    assert PathSet.parse(["**"]).update(data, _delete) == {}
    assert PathSet.parse(["**"]).keep(data) is data
