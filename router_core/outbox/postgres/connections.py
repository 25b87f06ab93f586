"""The psycopg 3 connection behind what an app passes as ``send(event, connection=...)``.

Accepted: a ``psycopg.Connection``; a SQLAlchemy ``Connection`` or ``Session`` whose engine uses
the psycopg 3 driver (``postgresql+psycopg://``); Django's ``django.db.connection.connection``
(with the psycopg 3 backend, it is a ``psycopg.Connection``). SQLAlchemy is never imported
here: an app that passes one of its objects has imported it already.
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg

from router_core.errors import TransactionalSendError

__all__ = ["app_connection"]


def app_connection(connection: object) -> psycopg.Connection[Any]:
    """The psycopg 3 connection ``connection`` is or wraps; ``TransactionalSendError`` if none."""
    if isinstance(connection, psycopg.Connection):
        return connection
    raw = _from_sqlalchemy(connection)
    if isinstance(raw, psycopg.Connection):
        return raw
    kind = type(connection)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if raw is not None:
        inner = type(raw)
        name += f" on a {inner.__module__}.{inner.__qualname__} connection"
    raise TransactionalSendError(
        f"connection= must be a psycopg 3 connection, or a SQLAlchemy Connection or Session "
        f"using the psycopg 3 driver (postgresql+psycopg://); got {name}"
    )


def _from_sqlalchemy(connection: object) -> object | None:
    """The DBAPI connection of a SQLAlchemy ``Session`` or ``Connection``, else ``None``."""
    sqlalchemy = sys.modules.get("sqlalchemy")
    if sqlalchemy is None:
        return None
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is not None and isinstance(connection, orm.Session):
        connection = connection.connection()  # the session's transaction begins here
    if isinstance(connection, sqlalchemy.engine.Connection):
        if not connection.in_transaction():
            # What its first execute() would do: without it, its commit() commits nothing.
            connection.begin()
        raw: object = connection.connection.driver_connection
        return raw
    return None
