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


class PathSet:
    """Several glob paths matched together, in one walk over the data."""

    __slots__ = ("_all_literal", "_patterns", "_start")

    def __init__(self, patterns: Iterable[PathPattern]) -> None:
        self._patterns = tuple(p.segments for p in patterns)
        self._start = self._closure((i, 0) for i in range(len(self._patterns)))
        # States whose next segment is literal can look keys up instead of scanning them all.
        self._all_literal: dict[frozenset[_State], tuple[str, ...] | None] = {}

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
        for key in self.roots:
            if key not in data:
                continue
            states, hit = self._step(self._start, key)
            value = data[key]
            if hit or not isinstance(value, dict | list):
                continue
            pruned = self._keep(value, states)
            if pruned is not value:
                if changed is None:
                    changed = dict(data)
                changed[key] = pruned if pruned is not None else type(value)()
        return data if changed is None else changed

    def find(self, data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
        """Every matched ``(path, value)``, the path as a tuple of keys and list indexes."""
        yield from self._find(data, self._start, ())

    # -- the walk -----------------------------------------------------------------------------

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

    def _step(self, states: frozenset[_State], key: str) -> tuple[frozenset[_State], bool]:
        """The states after matching ``key``, and whether a whole pattern matched there."""
        reached: list[_State] = []
        for p, i in states:
            segments = self._patterns[p]
            if i == len(segments):
                continue
            segment = segments[i]
            if segment == ANY_DEPTH:
                reached.append((p, i))
            elif segment == key if isinstance(segment, str) else segment.matches(key):
                reached.append((p, i + 1))
        after = self._closure(reached)
        hit = any(i == len(self._patterns[p]) for p, i in after)
        live = frozenset(s for s in after if s[1] < len(self._patterns[s[0]]))
        return live, hit

    def _keys(self, node: Mapping[str, Any] | list[Any], states: frozenset[_State]) -> list[Any]:
        """The keys (or indexes) of ``node`` worth trying in ``states``."""
        literal = self._literal_keys(states)
        if isinstance(node, list):
            if literal is None:
                return list(range(len(node)))
            return sorted({int(k) for k in literal if k.isdigit() and int(k) < len(node)})
        if literal is None:
            return list(node)
        return [k for k in literal if k in node]

    def _literal_keys(self, states: frozenset[_State]) -> tuple[str, ...] | None:
        """The keys ``states`` can match when all are literal (in pattern order), else None."""
        try:
            return self._all_literal[states]
        except KeyError:
            pass
        keys: list[str] = []
        found: tuple[str, ...] | None = None
        for p, i in sorted(states):
            segment = self._patterns[p][i]
            if not isinstance(segment, str) or segment == ANY_DEPTH:
                break
            if segment not in keys:
                keys.append(segment)
        else:
            found = tuple(keys)
        self._all_literal[states] = found
        return found

    def _update(self, node: Any, states: frozenset[_State], fn: ValueFunction) -> Any:
        if not states or not isinstance(node, Mapping | list):
            return node
        replaced: dict[Any, Any] = {}
        for key in self._keys(node, states):
            value = node[key]
            after, hit = self._step(states, str(key))
            new = fn(value) if hit else self._update(value, after, fn)
            if new is not value:
                replaced[key] = new
        if not replaced:
            return node
        if isinstance(node, list):
            return [replaced.get(i, v) for i, v in enumerate(node) if replaced.get(i) is not DELETE]
        out = dict(node)
        for key, new in replaced.items():
            if new is DELETE:
                del out[key]
            else:
                out[key] = new
        return out

    def _keep(self, node: dict[str, Any] | list[Any], states: frozenset[_State]) -> Any:
        """``node`` pruned to what matches; ``None`` when nothing does."""
        kept: list[tuple[Any, Any]] = []
        changed = False
        for key in self._keys(node, states):
            value = node[key]
            after, hit = self._step(states, str(key))
            if hit:
                kept.append((key, value))
                continue
            pruned = self._keep(value, after) if after and isinstance(value, dict | list) else None
            if pruned is not None:
                kept.append((key, pruned))
            changed = changed or pruned is not value
        if not kept:
            return None
        if not changed and len(kept) == len(node):
            return node
        if isinstance(node, list):
            return [value for _, value in kept]  # list indexes come in ascending order
        pruned_items = dict(kept)
        return {k: pruned_items[k] for k in node if k in pruned_items}  # keep the input's order

    def _find(
        self, node: Any, states: frozenset[_State], path: tuple[str | int, ...]
    ) -> Iterator[tuple[tuple[str | int, ...], Any]]:
        if not states or not isinstance(node, Mapping | list):
            return
        for key in self._keys(node, states):
            after, hit = self._step(states, str(key))
            if hit:
                yield (*path, key), node[key]
            else:
                yield from self._find(node[key], after, (*path, key))
