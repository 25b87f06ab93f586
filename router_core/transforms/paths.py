"""Glob paths into an event's fields: the one matcher drop, allow, pseudonymise and scrub share.

A path is dot-separated segments, the first naming an event field (``properties``,
``context``, ``user_id``, ...) and each later one a key below it: ``context.page.url``.

- ``*`` within a segment matches any characters of one key: ``properties.card_*``;
- ``**`` as a whole segment matches any number of keys, none included:
  ``properties.**.secret`` is ``secret`` at any depth of ``properties``;
- list items are matched by their index, so ``properties.products.*.coupon`` reaches every
  product and ``properties.products.0`` the first one.

Nothing else is special. Keys are matched one at a time, so a key that itself contains a dot
is reached with ``*`` (``properties.a*`` matches the key ``"a.b"``).

Every operation here is copy-on-write: the input is never changed, and when nothing matches
the very same object comes back, so an event a transform leaves alone costs no copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["DELETE", "PathPattern", "PathSet"]

ANY_DEPTH: Final = "**"


class _Delete:
    """The sentinel a value function returns to remove the value it was given."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE: Final = _Delete()

ValueFunction = Callable[[Any], Any]
"""Maps one matched value to its replacement, or to ``DELETE``; returning it unchanged (the
same object) means no change."""


@dataclass(frozen=True, slots=True)
class _Glob:
    """A segment holding ``*``: matched with a regular expression."""

    text: str
    regex: re.Pattern[str]

    def matches(self, key: str) -> bool:
        return self.regex.fullmatch(key) is not None


_Segment = str | _Glob  # a str is a literal key, or ANY_DEPTH


@dataclass(frozen=True, slots=True)
class PathPattern:
    """One parsed glob path. Build it with ``PathPattern.parse("properties.card_*")``."""

    text: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, text: str, roots: Collection[str] | None = None) -> PathPattern:
        """Parse ``text``; ``ValueError`` says what is wrong with it (without repeating the
        text: a config error never echoes a value, which might be a misplaced secret).

        ``roots``, when given, are the event fields the path may start with; the first segment
        must then be one of them, literally (a glob there could reach ``type`` or
        ``message_id``).
        """
        if not text:
            raise ValueError("a path cannot be empty")
        parts = text.split(".")
        segments: list[_Segment] = []
        for part in parts:
            if not part:
                raise ValueError("a path cannot have an empty segment")
            if part == ANY_DEPTH:
                segments.append(ANY_DEPTH)
            elif ANY_DEPTH in part:
                raise ValueError("'**' must be a whole segment")
            elif "*" in part:
                pattern = ".*".join(re.escape(piece) for piece in part.split("*"))
                segments.append(_Glob(part, re.compile(pattern, re.DOTALL)))
            else:
                segments.append(part)
        if roots is not None:
            first = segments[0]
            if not isinstance(first, str) or first == ANY_DEPTH or first not in roots:
                raise ValueError(f"a path must start with one of {', '.join(roots)}")
        return cls(text, tuple(segments))

    @property
    def root(self) -> str:
        """The first segment (a literal event field when parsed with ``roots``)."""
        first = self.segments[0]
        return first if isinstance(first, str) else first.text


# A matcher state: (pattern number, number of segments matched so far).
_State = tuple[int, int]

# Transitions remembered per node. Keys met under a glob are the data's own keys, so this
# bounds the memory a stream of ever-new keys can take; past it, transitions are recomputed.
_MAX_REMEMBERED = 1024

_CONTAINERS = (dict, list)  # what a path can walk into (a tuple: faster in isinstance)


class _Node:
    """A set of matcher states, with the transitions out of it remembered.

    Built lazily, one per distinct state set, so matching a key is a dict lookup after the
    first time. Races between threads only ever store equal values.
    """

    __slots__ = ("literal", "next", "states")

    def __init__(self, states: frozenset[_State], literal: tuple[str, ...] | None) -> None:
        self.states = states
        self.literal = literal  # the only keys it can match, when every state is literal
        self.next: dict[str, tuple[_Node | None, bool]] = {}


class PathSet:
    """Several glob paths matched together, in one walk over the data."""

    __slots__ = ("_nodes", "_patterns", "_start")

    def __init__(self, patterns: Iterable[PathPattern]) -> None:
        self._patterns = tuple(p.segments for p in patterns)
        self._nodes: dict[frozenset[_State], _Node] = {}
        start = self._closure((i, 0) for i in range(len(self._patterns)))
        # A lone "**" also matches no key at all: the data itself, which is never replaced.
        self._start = self._node(frozenset(s for s in start if s[1] < len(self._patterns[s[0]])))

    @classmethod
    def parse(cls, texts: Iterable[str], roots: Collection[str] | None = None) -> PathSet:
        return cls(PathPattern.parse(t, roots) for t in texts)

    @property
    def roots(self) -> frozenset[str]:
        """The literal first segments of the patterns."""
        return frozenset(s[0] for s in self._patterns if isinstance(s[0], str))

    # -- operations ---------------------------------------------------------------------------

    def update(self, data: Mapping[str, Any], fn: ValueFunction) -> Mapping[str, Any]:
        """``data`` with ``fn`` applied to every matched value (``DELETE`` removes it).

        A matched value is handed to ``fn`` whole (a matched dict is not walked further).
        """
        result: Mapping[str, Any] = self._update(data, self._start, fn)  # keeps the kind
        return result

    def keep(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """``data`` with only the matched values kept inside each root the patterns name.

        Fields the patterns do not start with are left alone; containers emptied by pruning
        are removed.
        """
        changed: dict[str, Any] | None = None
        for key in self._keys(data, self._start):
            node, hit = self._move(self._start, key)
            value = data[key]
            if hit or node is None or not isinstance(value, _CONTAINERS):
                continue
            pruned = self._keep(value, node)
            if pruned is not value:
                if changed is None:
                    changed = dict(data)
                changed[key] = pruned if pruned is not None else type(value)()
        return data if changed is None else changed

    def find(self, data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
        """Every matched ``(path, value)``, the path as a tuple of keys and list indexes."""
        yield from self._find(data, self._start, ())

    # -- the matcher --------------------------------------------------------------------------

    def _closure(self, states: Iterable[_State]) -> frozenset[_State]:
        """``states`` plus what ``**`` reaches by matching no segment."""
        out: set[_State] = set()
        todo = list(states)
        while todo:
            state = todo.pop()
            if state in out:
                continue
            out.add(state)
            p, i = state
            segments = self._patterns[p]
            if i < len(segments) and segments[i] == ANY_DEPTH:
                todo.append((p, i + 1))
        return frozenset(out)

    def _node(self, states: frozenset[_State]) -> _Node:
        node = self._nodes.get(states)
        if node is None:
            keys: list[str] = []
            literal: tuple[str, ...] | None = None
            for p, i in sorted(states):  # sorted: the same key order in every process
                segment = self._patterns[p][i]
                if not isinstance(segment, str) or segment == ANY_DEPTH:
                    break
                if segment not in keys:
                    keys.append(segment)
            else:
                literal = tuple(keys)
            node = _Node(states, literal)
            self._nodes[states] = node
        return node

    def _move(self, node: _Node, key: str) -> tuple[_Node | None, bool]:
        """The node after matching ``key`` (None: nothing more can match below it), and
        whether a whole pattern matched there."""
        known = node.next.get(key)
        if known is not None:
            return known
        reached: list[_State] = []
        for p, i in node.states:
            segment = self._patterns[p][i]
            if segment == ANY_DEPTH:
                reached.append((p, i))
            elif segment == key if isinstance(segment, str) else segment.matches(key):
                reached.append((p, i + 1))
        after = self._closure(reached)
        hit = any(i == len(self._patterns[p]) for p, i in after)
        live = frozenset(s for s in after if s[1] < len(self._patterns[s[0]]))
        move = (self._node(live) if live else None, hit)
        if len(node.next) < _MAX_REMEMBERED:
            node.next[key] = move
        return move

    def _keys(self, data: Mapping[str, Any] | list[Any], node: _Node) -> list[Any]:
        """The keys (or indexes) of ``data`` worth trying at ``node``."""
        literal = node.literal
        if isinstance(data, list):
            if literal is None:
                return list(range(len(data)))
            return sorted({int(k) for k in literal if k.isdigit() and int(k) < len(data)})
        if literal is None:
            return list(data)
        return [k for k in literal if k in data]

    # -- the walks ----------------------------------------------------------------------------

    def _update(self, data: Any, node: _Node, fn: ValueFunction) -> Any:
        replaced: dict[Any, Any] = {}
        is_list = isinstance(data, list)
        for key in self._keys(data, node):
            value = data[key]
            after, hit = self._move(node, str(key) if is_list else key)
            if hit:
                new = fn(value)
            elif after is not None and isinstance(value, _CONTAINERS):
                new = self._update(value, after, fn)
            else:
                continue
            if new is not value:
                replaced[key] = new
        if not replaced:
            return data
        if is_list:
            return [replaced.get(i, v) for i, v in enumerate(data) if replaced.get(i) is not DELETE]
        out = dict(data)
        for key, new in replaced.items():
            if new is DELETE:
                del out[key]
            else:
                out[key] = new
        return out

    def _keep(self, data: dict[str, Any] | list[Any], node: _Node) -> Any:
        """``data`` pruned to what matches; ``None`` when nothing does."""
        kept: list[tuple[Any, Any]] = []
        changed = False
        for key in self._keys(data, node):
            value = data[key]
            after, hit = self._move(node, str(key))
            if hit:
                kept.append((key, value))
                continue
            pruned = None
            if after is not None and isinstance(value, _CONTAINERS):
                pruned = self._keep(value, after)
            if pruned is not None:
                kept.append((key, pruned))
            changed = changed or pruned is not value
        if not kept:
            return None
        if not changed and len(kept) == len(data):
            return data
        if isinstance(data, list):
            return [value for _, value in kept]  # list indexes come in ascending order
        pruned_items = dict(kept)
        return {k: pruned_items[k] for k in data if k in pruned_items}  # keep the input's order

    def _find(
        self, data: Any, node: _Node, path: tuple[str | int, ...]
    ) -> Iterator[tuple[tuple[str | int, ...], Any]]:
        for key in self._keys(data, node):
            after, hit = self._move(node, str(key))
            if hit:
                yield (*path, key), data[key]
            elif after is not None and isinstance(data[key], _CONTAINERS):
                yield from self._find(data[key], after, (*path, key))
