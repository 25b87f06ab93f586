"""A plugin's exception with its secrets masked, as ``DeliveryResult.exception`` carries it.

An exception can show a key in its ``args``, its message, an attribute its ``__str__`` reads, a
note, a member of an exception group, or the exception it was raised from (printed by every
traceback). ``redact_exception`` masks every registered secret in all of them:

1. in place: ``args``, string values in the instance ``__dict__`` (``DeliveryError.message``,
   ``body`` and ``output`` among them) and ``__notes__``, for the exception and every one in
   its ``__cause__`` / ``__context__`` chain and group members;
2. an exception whose ``str()`` or ``repr()`` still shows a secret (its ``__str__`` builds the
   text from something else) is given a subclass of its own type, of the same name, whose
   ``__str__`` and ``__repr__`` mask what the original ones return; ``isinstance`` still holds;
3. built-in types, whose class cannot change, are replaced by a ``RedactedError`` holding the
   type's name and the masked text; the original, which still holds the secret, is dropped.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from router_core.secrets import exposes, redact, redact_value

__all__ = ["RedactedError", "exception_text", "redact_exception"]


class RedactedError(Exception):
    """Stands in for a plugin's exception whose text showed a secret that could not be masked
    in place (a built-in type keeping text outside ``args``, such as an ``OSError``'s file name).

    ``type_name`` is the original exception's type; ``str()`` reads ``"TypeName: masked text"``.
    The traceback, cause, context and notes are the original's, masked.
    """

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(type_name, text)
        self.type_name = type_name
        self.text = text

    def __str__(self) -> str:
        return f"{self.type_name}: {self.text}"


def redact_exception(exc: BaseException) -> BaseException:
    """``exc`` with every registered secret masked (see the module docstring).

    Usually ``exc`` itself, masked in place; a replacement when it could not be.
    """
    return _Masker().clean(exc)


def exception_text(exc: BaseException) -> str:
    """``str(exc)`` with secrets masked; never raises, even when ``exc.__str__`` does."""
    try:
        return redact(str(exc))
    except Exception:
        return f"<{type(exc).__name__} whose str() failed>"


class _Masker:
    """One pass over an exception graph; each exception is visited once (chains can loop)."""

    def __init__(self) -> None:
        self._done: dict[int, BaseException] = {}
        self._keep: list[BaseException] = []  # keeps ids unique while the pass runs

    def clean(self, exc: BaseException) -> BaseException:
        known = self._done.get(id(exc))
        if known is not None:
            return known
        self._done[id(exc)] = exc
        self._keep.append(exc)
        _mask_in_place(exc)
        self._clean_links(exc)
        result = exc
        if isinstance(result, BaseExceptionGroup):
            result = self._clean_members(result)
        if _shows_secret(result):
            result = _retyped(result) or _stand_in(result)
        self._done[id(exc)] = result
        return result

    def _clean_links(self, exc: BaseException) -> None:
        cause, context = exc.__cause__, exc.__context__
        if cause is not None:
            clean = self.clean(cause)
            if clean is not cause:
                suppress = exc.__suppress_context__  # setting __cause__ would turn it on
                exc.__cause__ = clean
                exc.__suppress_context__ = suppress
        if context is not None:
            clean = self.clean(context)
            if clean is not context:
                exc.__context__ = clean

    def _clean_members(self, group: BaseExceptionGroup[Any]) -> BaseException:
        members = [self.clean(e) for e in group.exceptions]
        replaced = any(new is not old for new, old in zip(members, group.exceptions, strict=True))
        if not replaced and not exposes(group.message):
            return group
        try:
            if type(group) in (ExceptionGroup, BaseExceptionGroup):
                rebuilt: BaseException = BaseExceptionGroup(redact(group.message), members)
            else:  # a subclass knows how to copy itself; its message is masked by _retyped
                rebuilt = group.derive(members)
        except Exception:
            return _stand_in(group)
        _copy_links(group, rebuilt)
        return rebuilt


def _mask_in_place(exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        exc.args = tuple(_masked(arg, opaque=True) for arg in exc.args)
    attributes = getattr(exc, "__dict__", None)
    if isinstance(attributes, dict):
        for name, value in list(attributes.items()):
            # Only data: other objects (an httpx request, the plugin's settings) stay as they
            # are, and an exception whose text they feed is retyped instead.
            attributes[name] = _masked(value, opaque=False)


def _masked(value: Any, *, opaque: bool) -> Any:
    """``value`` with secrets masked in its strings; an ``opaque`` object whose repr shows a
    secret becomes that repr, masked (it sits in ``args``, where only its text matters)."""
    if isinstance(value, BaseException):
        return value  # group members and chained exceptions are cleaned on their own
    text = _safe(repr, value)
    if not exposes(text):
        return value  # unchanged, type and identity included
    if isinstance(value, str | Mapping) or type(value) in (list, tuple):
        return redact_value(value)
    return redact(text) if opaque else value


def _shows_secret(exc: BaseException) -> bool:
    return exposes(_safe(str, exc)) or exposes(_safe(repr, exc))


def _safe(render: Any, value: Any) -> str:
    try:
        return str(render(value))
    except Exception:
        return ""


_MASKING = "_event_router_masks_secrets"  # marks the subclasses made here
_masking_types: dict[type[BaseException], type[BaseException]] = {}
_masking_types_lock = threading.Lock()


def _masking_type(cls: type[BaseException]) -> type[BaseException]:
    """A subclass of ``cls``, of the same name, whose text is ``cls``'s with secrets masked."""
    with _masking_types_lock:
        found = _masking_types.get(cls)
        if found is not None:
            return found

        def __str__(self: BaseException) -> str:
            return redact(cls.__str__(self))

        def __repr__(self: BaseException) -> str:
            return redact(cls.__repr__(self))

        def __reduce__(self: BaseException) -> Any:
            # Pickles as the original type: this one cannot be found by its name.
            reduced = cls.__reduce__(self)
            if isinstance(reduced, tuple) and reduced and reduced[0] is type(self):
                return (cls, *reduced[1:])
            return reduced

        namespace = {
            "__slots__": (),  # the same layout, so an instance's class can be switched
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__str__": __str__,
            "__repr__": __repr__,
            "__reduce__": __reduce__,
            _MASKING: True,
        }
        metaclass: type[Any] = type(cls)  # a custom metaclass builds the subclass too
        made: type[BaseException] = metaclass(cls.__name__, (cls,), namespace)
        _masking_types[cls] = made
        return made


def _retyped(exc: BaseException) -> BaseException | None:
    """``exc`` switched to its masking subclass, or ``None`` when its type does not allow it."""
    if _MASKING in vars(type(exc)):
        return None  # already masking; what still shows is not a registered secret
    try:
        exc.__class__ = _masking_type(type(exc))
    except Exception:  # built-in (immutable) types, or a class that refuses subclasses
        return None
    return exc if not _shows_secret(exc) else None


def _stand_in(exc: BaseException) -> RedactedError:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    replacement = RedactedError(name, exception_text(exc))
    _copy_links(exc, replacement)
    return replacement


def _copy_links(source: BaseException, target: BaseException) -> None:
    """Give ``target`` the traceback, cause, context and notes of ``source``."""
    target.__cause__ = source.__cause__
    target.__context__ = source.__context__
    target.__suppress_context__ = source.__suppress_context__
    target.__traceback__ = source.__traceback__
    notes = getattr(source, "__notes__", None)
    if isinstance(notes, list):
        target.__notes__ = list(notes)
