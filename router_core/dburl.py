"""``[queue] url``: its scheme, SQLite's path in it, and how to show one without its password.

``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy's spelling)
name a SQLite file; ``postgresql://`` and ``postgres://`` (libpq's URIs) a PostgreSQL server.
Which backend a scheme selects is the backends' own say (``router_core.outbox.backends``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

from pydantic import SecretStr

from router_core.secrets import MASK

__all__ = [
    "DatabaseUrl",
    "mask_url",
    "password_of",
    "scheme_of",
    "sqlite_path",
]


def scheme_of(url: str) -> str:
    """``url``'s scheme, lowercase (``""`` when it has no ``scheme://``)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///`` URL names (``sqlite:////abs`` is absolute, as in SQLAlchemy)."""
    rest = url.partition("://")[2]
    if not rest.startswith("/"):
        raise ValueError(
            "a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return unquote(rest[1:].partition("?")[0])


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """``(user[:password], the rest)`` of what follows ``scheme://``, as libpq reads it: the
    credentials end at an ``@`` met before any ``/``."""
    for i, char in enumerate(rest):
        if char == "/":
            break
        if char == "@":
            return rest[:i], rest[i:]
    return None, rest


def password_of(url: str) -> str | None:
    """The password in a PostgreSQL URL (after ``user:``, or a ``password=`` parameter)."""
    userinfo, after = _split_userinfo(url.partition("://")[2])
    if userinfo is not None and ":" in userinfo:
        return unquote(userinfo.partition(":")[2])
    for key, value in parse_qsl(after.partition("?")[2], keep_blank_values=True):
        if key == "password":
            return value
    return None


def mask_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, after = _split_userinfo(rest)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{MASK}{after}" if colon else rest
    path, question, query = rest.partition("?")
    if question:
        pairs = [
            f"password={MASK}" if pair.partition("=")[0] == "password" else pair
            for pair in query.split("&")
        ]
        rest = f"{path}?{'&'.join(pairs)}"
    return f"{scheme}{sep}{rest}"


class DatabaseUrl(SecretStr):
    """A database URL that shows itself with the password masked (reprs, ``str()``, logs).

    ``get_secret_value()`` gives the URL to connect with.
    """

    def _display(self) -> str:
        return mask_url(self.get_secret_value())
