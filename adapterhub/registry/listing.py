"""Listing a large registry: filters (name prefix, domain, tag, base, method) and pages, as SQL on the index.

Every filter is answered by the index (name ranges on the primary key; domain, method, base and tag
each have their own SQLite index), and only the page asked for is read and parsed, so a filtered page
of 50 stays cheap at 10,000 entries. Order: by name, then version.

>>> query = ListQuery(name_prefix="legal-", tag="prod", limit=50)
>>> query.describe()
"name prefix 'legal-', tag 'prod'"
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .refs import validate_name, validate_tag

_TAGS_BY_NAME_UP_TO = 500  # more names on a page than this: read every tag at once
_NAME_END = "\x7f"  # above every character a name may hold: [prefix, prefix + this) is every name starting so


@dataclass(frozen=True)
class ListQuery:
    """Which entries :meth:`Registry.list <adapterhub.registry.store.Registry.list>` returns.

    Attributes:
        name_prefix: names starting with this (case-sensitive).
        domain: exactly this domain.
        tag: the version this tag (or channel) points at, e.g. ``prod``.
        base: base fingerprint, or its leading part as ``registry list`` prints it.
        method: adapter method, e.g. ``lora`` (see :func:`adapterhub.methods.names`).
        limit: at most this many entries (``None``: all).
        offset: skip this many matching entries first.

    Raises:
        InvalidNameError: a malformed prefix, domain or tag.
        ConfigError: an unknown method, ``limit < 1``, ``offset < 0`` or an empty base.
    """

    name_prefix: str | None = None
    domain: str | None = None
    tag: str | None = None
    base: str | None = None
    method: str | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.name_prefix is not None:
            validate_name(self.name_prefix, what="name prefix")
        if self.domain is not None:
            validate_name(self.domain, what="domain")
        if self.tag is not None:
            validate_tag(self.tag)
        if self.base is not None and not (isinstance(self.base, str) and self.base.strip()):
            raise ConfigError(f"base filter {self.base!r} is empty; give a base fingerprint or its leading part")
        if self.method is not None:
            from .. import methods

            if self.method not in methods.names():
                raise ConfigError(f"unknown method {self.method!r} in the list filter; use one of "
                                  f"{', '.join(methods.names())}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise ConfigError(f"list limit {self.limit!r} must be a whole number >= 1 (or none for every entry)")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError(f"list offset {self.offset!r} must be a whole number >= 0")

    def describe(self) -> str:
        """The filters in words (``""`` when there are none)."""
        parts = [("name prefix", self.name_prefix), ("domain", self.domain), ("tag", self.tag), ("base", self.base),
                 ("method", self.method)]
        return ", ".join(f"{what} {value!r}" for what, value in parts if value is not None)

    def _where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.name_prefix is not None:
            clauses.append("a.name >= ? AND a.name < ?")
            args += [self.name_prefix, self.name_prefix + _NAME_END]
        if self.domain is not None:
            clauses.append("a.domain = ?")
            args.append(self.domain)
        if self.method is not None:
            clauses.append("a.method = ?")
            args.append(self.method)
        if self.base is not None:
            clauses.append("a.base_fingerprint >= ? AND a.base_fingerprint < ?")
            args += [self.base, self.base + "\U0010ffff"]
        if self.tag is not None:
            clauses.append("(a.name, a.version) IN (SELECT name, version FROM tags WHERE tag = ?)")
            args.append(self.tag)
        return " AND ".join(clauses) or "1", args


def page(db: sqlite3.Connection, query: ListQuery) -> list[tuple[sqlite3.Row, list[str]]]:
    """The rows of one page, by name then version, each with its tags (sorted)."""
    where, args = query._where()
    limit = -1 if query.limit is None else query.limit
    found = db.execute(f"SELECT a.* FROM adapters AS a WHERE {where} ORDER BY a.name, a.version LIMIT ? OFFSET ?",
                       [*args, limit, query.offset]).fetchall()
    names = sorted({row["name"] for row in found})
    if not names:
        return []
    if len(names) <= _TAGS_BY_NAME_UP_TO:  # a page: only its own names' tags
        tag_rows = db.execute(f"SELECT name, version, tag FROM tags WHERE name IN ({','.join('?' * len(names))}) "
                              "ORDER BY tag", names)
    else:
        tag_rows = db.execute("SELECT name, version, tag FROM tags ORDER BY tag")
    tags: dict[tuple[str, int], list[str]] = {}
    for row in tag_rows:
        tags.setdefault((row["name"], row["version"]), []).append(row["tag"])
    return [(row, tags.get((row["name"], row["version"]), [])) for row in found]


def count(db: sqlite3.Connection, query: ListQuery) -> int:
    """How many entries match the filters (paging ignored)."""
    where, args = query._where()
    return db.execute(f"SELECT count(*) FROM adapters AS a WHERE {where}", args).fetchone()[0]
