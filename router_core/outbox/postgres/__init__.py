"""The PostgreSQL outbox: ``[queue] url = "postgresql://..."`` (``pip install
'event-router[postgres]'``). See ``backend.py`` for how it works and docs/delivery.md for use.

Importing this package needs psycopg 3 and psycopg_pool; without them it raises a
``ConfigError`` that says how to install them. Nothing else in ``router_core`` imports it
except when a ``postgresql://`` outbox is opened.
"""

from router_core.errors import ConfigError

try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ImportError as exc:  # the optional extra is not installed
    raise ConfigError(
        [
            f"queue.url: a PostgreSQL outbox needs psycopg 3 and psycopg_pool ({exc}); "
            "install them with: pip install 'event-router[postgres]'"
        ]
    ) from None

from router_core.outbox.postgres.backend import (
    PostgresOutbox,
    PostgresOutboxError,
    migrate_schema,
)
from router_core.outbox.postgres.schema import (
    SCHEMA_VERSION,
    MigrationResult,
    SchemaMissingError,
    SchemaVersionError,
)

__all__ = [
    "SCHEMA_VERSION",
    "MigrationResult",
    "PostgresOutbox",
    "PostgresOutboxError",
    "SchemaMissingError",
    "SchemaVersionError",
    "migrate_schema",
]
