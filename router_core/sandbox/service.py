"""Something that is started and stopped, usable as a context manager."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Service"]


class Service(ABC):
    """``with service:`` starts it and always stops it."""

    @abstractmethod
    def start(self) -> None:
        """Start serving; return once ready."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release everything; safe to call twice."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
