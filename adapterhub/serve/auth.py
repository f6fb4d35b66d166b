"""API keys: created once, stored only as a salted hash in SQLite under ``$ADAPTERHUB_HOME``.

A key reads ``ahk_<id>.<secret>``: ``<id>`` finds the row, the secret is checked
against ``sha256(salt + key)`` in constant time. The key itself is printed once
by :meth:`KeyStore.create` and never stored, logged or counted.

>>> store = KeyStore("/tmp/keys.sqlite")  # doctest: +SKIP
>>> secret = store.create("billing", allow=["finance"], rpm=60)  # doctest: +SKIP
>>> store.verify(secret).name  # doctest: +SKIP
'billing'
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import paths
from ..errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCHEMA = """CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    allow TEXT NOT NULL, admin INTEGER NOT NULL, rpm INTEGER, created REAL NOT NULL, revoked REAL)"""


def default_path() -> Path:
    """``$ADAPTERHUB_HOME/keys.sqlite``."""
    return paths.home() / "keys.sqlite"


@dataclass(frozen=True)
class ApiKey:
    """What a key may do (never the secret)."""

    name: str
    allow: tuple[str, ...]  # adapter references it may use; empty = all
    admin: bool
    rpm: int | None  # requests per minute; None = unlimited
    created: float
    revoked: float | None = None

    def may_use(self, model: str | None) -> bool:
        """Whether the key may call ``model`` (``None``: the bare base, open to every key)."""
        if model is None or not self.allow:
            return True
        from ..runtime.mixing import parse_mix

        mix = parse_mix(model)
        names = [name for name, _ in mix.parts] if mix is not None else [model]  # a mix needs every part allowed
        return all(name in self.allow or name.split("@", 1)[0] in self.allow for name in names)

    def may_pull(self, ref: str) -> bool:
        """Whether the key may make the server pull ``ref`` (``hf://org/name[@rev]``) from the Hugging Face Hub.

        An admin key may; any other key only through an ``hf://`` entry of its allow list that matches the
        repository (``hf://acme/legal``, or a pattern such as ``hf://acme/*``). An empty allow list (every
        registered adapter) does not reach the Hub.

        >>> ApiKey("team", allow=("hf://acme/*",), admin=False, rpm=None, created=0).may_pull("hf://acme/legal@v2")
        True
        """
        repo = ref.split("@", 1)[0]
        return self.admin or any(fnmatch.fnmatchcase(repo, entry.split("@", 1)[0]) and
                                 (entry == repo or "@" not in entry or entry == ref)
                                 for entry in self.allow if entry.startswith("hf://"))

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "allow": list(self.allow), "admin": self.admin, "rpm": self.rpm,
                "created": self.created, "revoked": self.revoked}


class KeyStoreBusy(Exception):
    """Another process holds the key table's lock past the wait (the server answers 503)."""


class KeyStore:
    """The key table (``path`` default: :func:`default_path`); the file is readable by its owner only (0600).

    ``busy_timeout``: seconds a lookup waits for another process's lock before :class:`KeyStoreBusy`.
    """

    def __init__(self, path: str | Path | None = None, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.busy_timeout = busy_timeout

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per operation: committed on success, always closed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        if self.path.stat().st_mode & 0o077:
            os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, timeout=self.busy_timeout)
        try:
            db.row_factory = sqlite3.Row
            db.execute(_SCHEMA)
            with db:
                yield db
        finally:
            db.close()

    def create(self, name: str, *, allow: list[str] | None = None, admin: bool = False,
               rpm: int | None = None) -> str:
        """Store a new key named ``name`` and return its secret (the only time it is shown).

        Raises:
            ConfigError: a malformed name, a name already in use by a live key, or ``rpm < 1``.
        """
        if not _NAME.match(name):
            raise ConfigError(f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if rpm is not None and rpm < 1:
            raise ConfigError(f"--rpm must be at least 1, got {rpm}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = f"ahk_{key_id}.{secret}"
        salt = secrets.token_bytes(16)
        with self._connect() as db:
            row = db.execute("SELECT revoked FROM keys WHERE name = ?", (name,)).fetchone()
            if row is not None and row["revoked"] is None:
                raise ConfigError(f"a key named {name!r} exists; revoke it first (adapterhub keys revoke {name})")
            db.execute("DELETE FROM keys WHERE name = ?", (name,))
            db.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                       (name, key_id, salt, _digest(salt, key), json.dumps(list(allow or [])), int(admin), rpm,
                        time.time()))
        return key

    def list(self) -> list[ApiKey]:
        with self._connect() as db:
            return [_key(row) for row in db.execute("SELECT * FROM keys ORDER BY name").fetchall()]

    def revoke(self, name: str) -> bool:
        """Revoke ``name``; returns whether a live key was revoked."""
        with self._connect() as db:
            cursor = db.execute("UPDATE keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name))
            return cursor.rowcount > 0

    def verify(self, key: str) -> ApiKey | None:
        """The live key ``key`` is, or ``None`` (unknown, malformed or revoked)."""
        match = re.fullmatch(r"ahk_([0-9a-f]{12})\.[A-Za-z0-9_-]{20,}", key or "")
        if match is None:
            return None
        try:
            with self._connect() as db:
                row = db.execute("SELECT * FROM keys WHERE key_id = ?", (match.group(1),)).fetchone()
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise KeyStoreBusy(str(error)) from None
            raise
        if row is None or row["revoked"] is not None:
            return None
        if not hmac.compare_digest(bytes(row["hash"]), _digest(bytes(row["salt"]), key)):
            return None
        return _key(row)


class RateLimiter:
    """Requests per minute per key name, over a sliding 60-second window."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, name: str, rpm: int | None) -> int | None:
        """Record one request; returns ``None`` if allowed, else the seconds to wait (``Retry-After``)."""
        if rpm is None:
            return None
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(name, deque())
            while seen and now - seen[0] >= self.window:
                seen.popleft()
            if len(seen) >= rpm:
                return max(1, math.ceil(self.window - (now - seen[0])))
            seen.append(now)
            return None


def _digest(salt: bytes, key: str) -> bytes:
    return hashlib.sha256(salt + key.encode()).digest()


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(name=row["name"], allow=tuple(json.loads(row["allow"])), admin=bool(row["admin"]), rpm=row["rpm"],
                  created=row["created"], revoked=row["revoked"])
