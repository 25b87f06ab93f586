"""Config loading: TOML, ${VAR} interpolation, routing keys, and errors that list every problem."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr

from router_core import (
    ConfigError,
    Delivery,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    RouterConfig,
    hookimpl,
)
from router_core.config import MAX_CONFIG_DEPTH, interpolate, read_toml
from router_core.secrets import redact
from router_core.settings import QueueSettings


class KeySettings(DestinationSettings):
    api_key: SecretStr = Field(min_length=1)
    host: str = "https://example.invalid"


class KeyPlugin:
    @hookimpl
    def destination_settings(self) -> type[KeySettings]:
        return KeySettings

    @hookimpl
    async def send_event(self, destination: Destination[KeySettings], event: Event) -> Delivery:
        return Delivery(200)


@pytest.fixture
def registry() -> PluginRegistry:
    reg = PluginRegistry(entry_points=False)
    reg.register(KeyPlugin(), "keyed")
    return reg


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("raw", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("x-${A}-y", {"A": "1"}, "x-1-y"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-}", {}, ""),
        ("${A:-https://us.i.posthog.com}", {}, "https://us.i.posthog.com"),
        ("$${A}", {"A": "1"}, "${A}"),
        ("plain $ sign", {}, "plain $ sign"),
    ],
)
def test_interpolation(raw: str, env: dict[str, str], expected: str) -> None:
    missing: list[str] = []
    assert interpolate(raw, env, "k", missing) == expected
    assert missing == []


def test_interpolation_reports_each_missing_variable_with_its_path() -> None:
    missing: list[str] = []
    value = {"a": "${ONE}", "b": ["${TWO}"], "c": 3}
    interpolate(value, {}, "destinations.x", missing)
    assert missing == [
        "destinations.x.a: environment variable ONE is not set",
        "destinations.x.b[0]: environment variable TWO is not set",
    ]


def test_load_and_resolve(tmp_path: Path, registry: PluginRegistry) -> None:
    path = write(
        tmp_path,
        """
        [destinations.first]
        plugin = "keyed"
        api_key = "${KEY_ONE}"
        events = ["page_*", "Order Completed"]
        timeout = 2.5

        [destinations.second]
        plugin = "keyed"
        api_key = "${KEY_TWO:-default-key}"
        host = "https://two.example"
        types = ["identify"]
        retry = { max_attempts = 5, backoff_base = 0.1 }

        [destinations.off]
        plugin = "keyed"
        enabled = false
        api_key = "${NEVER_SET}"
        """,
    )
    resolved = RouterConfig.load(path).resolve(registry, env={"KEY_ONE": "key-one-value"})
    assert [d.name for d in resolved] == ["first", "second"]
    first, second = resolved
    assert isinstance(first.settings, KeySettings)
    assert first.settings.api_key.get_secret_value() == "key-one-value"
    assert first.routing.timeout == 2.5
    assert first.routing.events == ("page_*", "Order Completed")
    assert isinstance(second.settings, KeySettings)
    assert second.settings.host == "https://two.example"
    assert second.routing.retry.max_attempts == 5
    # Secrets are registered for redaction as soon as they are resolved.
    assert redact("leaked key-one-value here") == "leaked ********** here"


def test_every_problem_is_reported_at_once(tmp_path: Path, registry: PluginRegistry) -> None:
    path = write(
        tmp_path,
        """
        [destinations.a]
        plugin = "keyed"
        api_key = "${MISSING_A}"

        [destinations.b]
        plugin = "nosuch"

        [destinations.c]
        plugin = "keyed"
        api_key = "k-123456"
        hots = "typo"
        timeout = -1

        [destinations.d]
        plugin = "keyed"
        """,
    )
    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={})
    problems = caught.value.problems
    assert "destinations.a.api_key: environment variable MISSING_A is not set" in problems
    assert any(
        p.startswith("destinations.b.plugin: unknown plugin 'nosuch'") and "keyed" in p
        for p in problems
    )
    assert "destinations.c.timeout: Input should be greater than 0" in problems
    assert "destinations.d.api_key: Field required" in problems
    message = str(caught.value)
    assert str(path) in message
    assert "problems" in message


def test_unknown_plugin_setting_is_named(tmp_path: Path, registry: PluginRegistry) -> None:
    path = write(tmp_path, '[destinations.c]\nplugin = "keyed"\napi_key = "k-1"\nhots = "x"\n')
    with pytest.raises(ConfigError, match=r"destinations\.c\.hots: unknown setting"):
        RouterConfig.load(path).resolve(registry, env={})


def test_config_errors_never_contain_secret_values(
    tmp_path: Path, registry: PluginRegistry
) -> None:
    path = write(
        tmp_path,
        '[destinations.c]\nplugin = "keyed"\napi_key = "${K}"\ntimeout = "soon"\n',
    )
    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={"K": "super-secret-value"})
    assert "super-secret-value" not in str(caught.value)
    assert "destinations.c.timeout" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not toml = = 1", "not valid TOML"),
        ("destinations = 3", "destinations: must be a table"),
        ("[destinations]\nx = 1", "destinations.x: must be a table"),
        ("[queue]\n[extra]", "unknown top-level key(s) extra"),
        ('[logging]\nformat = "xml"', "logging.format"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        RouterConfig.load(write(tmp_path, text))
    assert fragment in str(caught.value)


def nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"a = {'[' * 3000}{']' * 3000}", "arrays or inline tables are nested too deeply"),
        (f"a = {'{b = ' * 3000}1{'}' * 3000}", "arrays or inline tables are nested too deeply"),
        (f"a = {'[' * 100_000}{']' * 100_000}", "arrays or inline tables are nested too deeply"),
        (f"{'.'.join(['a'] * 3000)} = 1", f"nested more than {MAX_CONFIG_DEPTH} levels deep"),
        (f"[{'.'.join(['t'] * 40)}]", f"nested more than {MAX_CONFIG_DEPTH} levels deep"),
        (f"n = {'1' * 5000}", "not valid TOML: an integer has more than 4,300 digits"),
    ],
)
def test_deep_or_huge_toml_is_a_config_error_naming_the_file(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    for load in (read_toml, RouterConfig.load):
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert fragment in str(caught.value)
        assert str(path) in str(caught.value)


def test_a_config_file_that_never_ends_is_refused() -> None:
    with pytest.raises(ConfigError, match="'/dev/zero' is longer than"):
        read_toml("/dev/zero")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_bytes('a = "\udcff"'.encode("utf-8", "surrogatepass"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_toml(path)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({1: {}}, "key 1 must be a string"),
        ({"destinations": {None: {"plugin": "keyed"}}}, "destinations: key None must be a string"),
        (
            {"destinations": {"d": {"plugin": "keyed", "headers": {10**5000: "x"}}}},
            "destinations.d.headers: key an integer of about 5001 digits must be a string",
        ),
        (
            {"destinations": {"d": {"plugin": "keyed", "x": nest(10_000)}}},
            "destinations.d.x"
            + ".a" * (MAX_CONFIG_DEPTH - 2)  # destinations, d and x are the first 3 levels
            + f": nested more than {MAX_CONFIG_DEPTH} levels deep",
        ),
        ({"queue": {"retry": [nest(100_000)]}}, "nested more than"),
    ],
)
def test_tables_toml_could_not_have_written_are_config_errors(
    registry: PluginRegistry, data: dict[Any, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RouterConfig.from_dict(data)
    assert fragment in str(caught.value)


def test_a_router_given_a_deep_destination_table_refuses_it(registry: PluginRegistry) -> None:
    with pytest.raises(ConfigError, match="nested more than"):
        Router({"d": {"plugin": "keyed", "api_key": "k", "x": nest(10_000)}}, plugins=registry)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "file.db").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    return {
        "file": tmp_path / "file.db",
        "dir": tmp_path / "dir",
        "fifo": tmp_path / "fifo",
        "under_file": tmp_path / "file.db" / "outbox.db",
        "deep_under_file": tmp_path / "file.db" / "a" / "b" / "outbox.db",
        "new": tmp_path / "new" / "dirs" / "outbox.db",
    }


@pytest.mark.parametrize(
    ("place", "fragment"),
    [
        ("/dev/null", "'/dev/null' is a character device; the outbox must be a regular file"),
        ("dir", "is a directory; the outbox must be a regular file"),
        ("fifo", "is a named pipe; the outbox must be a regular file"),
        ("under_file", "file.db' (in "),
        ("deep_under_file", "is a file, not a directory"),
        ("bad\0path", "cannot be used: embedded null byte"),
        ("", "'.' is a directory"),
    ],
)
def test_an_outbox_path_that_cannot_be_a_file_is_a_config_error(
    tmp_path: Path, places: dict[str, Path], place: str, fragment: str
) -> None:
    path = str(places.get(place, place))
    toml = write(tmp_path, f"[queue]\npath = {json.dumps(path)}\n")
    for load in (lambda: RouterConfig.load(toml), lambda: QueueSettings.coerce({"path": path})):
        with pytest.raises(ConfigError) as caught:
            load()
        (problem,) = caught.value.problems
        assert problem.startswith("queue.path: ")
        assert fragment in problem


@pytest.mark.parametrize("place", ["file", "new"])
def test_an_outbox_path_that_is_or_can_be_a_file_is_accepted(
    places: dict[str, Path], place: str
) -> None:
    settings = QueueSettings.coerce({"path": str(places[place])})
    assert settings is not None
    assert settings.path == places[place]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        RouterConfig.load(tmp_path / "absent.toml")


def test_the_example_config_parses() -> None:
    config = RouterConfig.load(Path(__file__).parents[1] / "config" / "router.toml")
    assert set(config.destinations) >= {"segment", "posthog"}


@pytest.mark.parametrize(
    ("filters", "event", "accepted"),
    [
        ({}, Event.track("Anything", user_id="u"), True),
        ({"events": ["page_*"]}, Event.track("page_view", user_id="u"), True),
        ({"events": ["page_*"]}, Event.track("Order Completed", user_id="u"), False),
        ({"events": "Order *"}, Event.track("Order Completed", user_id="u"), True),
        ({"events": ["identify"]}, Event.identify(user_id="u"), True),
        ({"events": ["Order*"]}, Event.identify(user_id="u"), False),
        ({"types": ["identify", "group"]}, Event.group("g", user_id="u"), True),
        ({"types": ["identify"]}, Event.track("X", user_id="u"), False),
        ({"types": ["track"], "events": ["X"]}, Event.track("X", user_id="u"), True),
    ],
)
def test_filters(
    registry: PluginRegistry, filters: dict[str, Any], event: Event, accepted: bool
) -> None:
    config = RouterConfig.from_dict(
        {"destinations": {"d": {"plugin": "keyed", "api_key": "k-1", **filters}}}
    )
    (destination,) = config.resolve(registry, env={})
    assert destination.routing.accepts(event) is accepted


def test_unknown_event_type_in_types_is_an_error(registry: PluginRegistry) -> None:
    config = RouterConfig.from_dict(
        {"destinations": {"d": {"plugin": "keyed", "api_key": "k-1", "types": ["trak"]}}}
    )
    with pytest.raises(ConfigError, match=r"destinations\.d\.types\.0"):
        config.resolve(registry, env={})


def test_an_unset_variable_is_reported_once(registry: PluginRegistry) -> None:
    config = RouterConfig.from_dict({"destinations": {"d": {"plugin": "keyed", "api_key": "${K}"}}})
    with pytest.raises(ConfigError) as caught:
        config.resolve(registry, env={})
    assert caught.value.problems == ("destinations.d.api_key: environment variable K is not set",)


# -- every problem in one run, with hints ----------------------------------------------------

ALL_AT_ONCE = """
[loging]
level = "debug"

[destinations.c]
plugin = "keyed"
api_key = "k-123456"
timeout = 0
hots = "typo"
"""


def test_a_misspelt_table_a_bad_timeout_and_a_plugin_setting_are_reported_together(
    tmp_path: Path, registry: PluginRegistry
) -> None:
    path = write(tmp_path, ALL_AT_ONCE)
    for load in (
        lambda: RouterConfig.load(path, plugins=registry, env={}),
        lambda: Router.from_config(path, plugins=registry, env={}),
    ):
        with pytest.raises(ConfigError) as caught:
            load()
        problems = caught.value.problems
        assert len(problems) == 3, problems
        assert problems[0].startswith("unknown top-level key(s) loging;")
        assert problems[0].endswith("did you mean 'logging'?")
        assert "destinations.c.timeout: Input should be greater than 0" in problems
        assert "destinations.c.hots: unknown setting; did you mean 'host'?" in problems


def test_a_bad_routing_key_does_not_hide_the_plugins_own_problems(
    tmp_path: Path, registry: PluginRegistry
) -> None:
    path = write(tmp_path, '[destinations.c]\nplugin = "keyed"\ntimeout = "soon"\n')

    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={})

    assert list(caught.value.problems) == [
        "destinations.c.timeout: Input should be a valid number, unable to parse string as a "
        "number",
        "destinations.c.api_key: Field required",
    ]


@pytest.mark.parametrize(
    ("key", "guess"),
    [("apikey", "api_key"), ("hots", "host"), ("timout", "timeout"), ("apiKey", "api_key")],
)
def test_an_unknown_setting_close_to_a_known_one_gets_a_suggestion(
    tmp_path: Path, registry: PluginRegistry, key: str, guess: str
) -> None:
    table = '[destinations.c]\nplugin = "keyed"\napi_key = "k-1"\n'
    path = write(tmp_path, f'{table}{key} = "x"\n')

    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={})

    assert f"destinations.c.{key}: unknown setting; did you mean {guess!r}?" in (
        caught.value.problems
    )


def test_an_unknown_setting_far_from_every_known_one_gets_no_suggestion(
    tmp_path: Path, registry: PluginRegistry
) -> None:
    path = write(tmp_path, '[destinations.c]\nplugin = "keyed"\napi_key = "k-1"\ncolour = 1\n')

    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={})

    assert list(caught.value.problems) == ["destinations.c.colour: unknown setting"]


def test_an_unknown_plugin_close_to_a_loaded_one_gets_a_suggestion(
    tmp_path: Path, registry: PluginRegistry
) -> None:
    path = write(tmp_path, '[destinations.c]\nplugin = "keyd"\n')

    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={})

    (problem,) = caught.value.problems
    assert problem.startswith("destinations.c.plugin: unknown plugin 'keyd';")
    assert problem.endswith("; did you mean 'keyed'?")


def test_a_plugins_env_entry_naming_no_installed_plugin_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENT_ROUTER_PLUGINS", "segmnt,posthog")

    registry = PluginRegistry()

    expected = (
        "EVENT_ROUTER_PLUGINS names 'segmnt', which no installed plugin is called; "
        "did you mean 'segment'?"
    )
    assert registry.unmatched() == [expected]
    assert registry.names() == ["posthog"]
    why = registry.why_missing("segment")
    assert "EVENT_ROUTER_PLUGINS='segmnt,posthog' restricts loading" in why
    assert expected in why


# -- a relative [queue] path ------------------------------------------------------------------


def test_a_relative_queue_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "conf" / "router.toml"
    path.write_text('[queue]\npath = "data/outbox.db"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path / "elsewhere")

    settings = RouterConfig.load(path).queue_settings()
    relative = RouterConfig.load(Path("..") / "conf" / "router.toml").queue_settings()

    assert settings is not None
    assert relative is not None
    assert settings.path == tmp_path / "conf" / "data" / "outbox.db"
    assert relative.path.resolve() == tmp_path / "conf" / "data" / "outbox.db"


def test_a_queue_path_in_code_or_absolute_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, f'[queue]\npath = "{tmp_path / "abs.db"}"\n')

    in_code = RouterConfig.from_dict({"queue": {"path": "data/outbox.db"}}).queue_settings()
    absolute = RouterConfig.load(path).queue_settings()
    overridden = RouterConfig.load(path).queue_settings(override={"path": "mine.db"})

    assert in_code is not None
    assert in_code.path == Path("data/outbox.db")
    assert absolute is not None
    assert absolute.path == tmp_path / "abs.db"
    assert overridden is not None
    assert overridden.path == Path("mine.db")


def test_a_bad_routing_key_does_not_hide_an_unknown_plugin(
    tmp_path: Path, registry: PluginRegistry
) -> None:
    path = write(tmp_path, '[destinations.c]\nplugin = "keyd"\ntimeout = 0\n')

    with pytest.raises(ConfigError) as caught:
        RouterConfig.load(path).resolve(registry, env={})

    timeout, plugin = caught.value.problems
    assert timeout == "destinations.c.timeout: Input should be greater than 0"
    assert plugin.startswith("destinations.c.plugin: unknown plugin 'keyd';")
