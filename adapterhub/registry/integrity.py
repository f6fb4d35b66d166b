"""Checking stored entries against their manifests: each file read and matched to its recorded sha256
(or vouched for by :mod:`.verified`), and ``verify``'s full report of what is wrong with an entry or the index.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import index, verified
from ..errors import AdapterHubError, IntegrityError, InvalidAdapterError
from .database import RegistryIndex
from .files import MAX_JSON_BYTES, NotARegularFileError, ObservedRead, read_observed, read_regular
from .manifest import MANIFEST_FILE, WEIGHTS_FILE, AdapterRecord, check_file
from .safetensors_file import safetensors_shapes


def read_checked_file(record: AdapterRecord, file: str,
                      recorded: tuple[str, str] | None) -> tuple[ObservedRead, str | None]:
    """Read one file and check it against the manifest, hashing it unless ``recorded`` vouches for it.

    Returns the read and, for a file it hashed, the identity to record (``None`` when it must not be).

    Raises:
        IntegrityError: the file is missing, not a regular file, unreadable, truncated or altered.
    """
    path = record.path / file
    expected = record.manifest["files"][file]
    try:
        read = read_observed(path, writable=file == WEIGHTS_FILE)  # the tensors will view it in place
    except FileNotFoundError:
        raise IntegrityError(f"{record.ref}: {path} is missing", ref=record.ref) from None
    except NotARegularFileError as error:
        raise IntegrityError(f"{record.ref}: {error} (replaced after it was stored)", ref=record.ref) from None
    except OSError as error:
        raise IntegrityError(f"{record.ref}: {path} cannot be read ({error.strerror or error})",
                             ref=record.ref) from None
    if verified.trusted(read, recorded, expected["sha256"]) and len(read.data) == expected["size"]:
        return read, None
    check_file(read.data, expected, where=str(path), ref=record.ref)
    return read, verified.recordable(read)


def read_checked(record: AdapterRecord,
                 known: Mapping[str, tuple[str, str]]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Every file of ``record``, checked; and ``(file, sha256, identity)`` for each one hashed that may be recorded."""
    files, seen = {}, []
    for file, expected in record.manifest["files"].items():
        read, stamp = read_checked_file(record, file, known.get(file))
        files[file] = read.data
        seen += [(file, expected["sha256"], stamp)] if stamp else []
    return files, seen


def read_verified(registry_index: RegistryIndex, record: AdapterRecord,
                  known: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Every file of ``record``, checked; files it had to hash are recorded for the next read."""
    files, seen = read_checked(record, known)
    registry_index.remember(record.name, record.version, seen)
    return files


def remember_new(registry_index: RegistryIndex, record: AdapterRecord) -> None:
    """Hash a new entry's files once more, as stored, and record them so the first load need not.

    Only when their timestamps have already settled (see :mod:`.verified`; writing and fsyncing
    a large file takes longer than that): an add never waits for it, and an entry written faster is
    recorded by its first load. Never raises: the add is committed already.
    """
    try:
        infos = [os.stat(record.path / file) for file in record.manifest["files"]]
        if verified.wait_ns(infos, time.time_ns()) == 0:
            registry_index.remember(record.name, record.version, read_checked(record, {})[1])
    except (AdapterHubError, OSError):
        return  # a load hashes and reports it


def verify_rows(registry_index: RegistryIndex, rows: Iterable[sqlite3.Row], *, adapters: Path,
                whole_index: bool, progress: bool = False) -> list[str]:
    """One line per problem of each entry in ``rows`` (and of the index file itself with ``whole_index``).

    Always hashes every file, and records the files that check out.
    """
    from tqdm.auto import tqdm

    problems = index_problems(registry_index) if whole_index else []
    for row in tqdm(list(rows), desc="verify", unit="entry", disable=not progress):
        problems += entry_problems(registry_index, row, adapters=adapters)
    return problems


def entry_problems(registry_index: RegistryIndex, row: sqlite3.Row, *, adapters: Path) -> list[str]:
    """Every problem of one indexed entry: its index row, each file, its on-disk manifest."""
    try:
        record = index.record_from_row(row, [], adapters=adapters, index_path=registry_index.path)
        files = dict(record.manifest["files"])
    except (IntegrityError, KeyError, TypeError, AttributeError) as error:
        return [error.message if isinstance(error, IntegrityError) else
                f"{row['name']}@{row['version']}: the index row's manifest lacks {error}; "
                "run `adapterhub registry rebuild-index`"]
    problems, seen = [], []
    for file in files:
        try:
            read, stamp = read_checked_file(record, file, None)
            if file == WEIGHTS_FILE:
                safetensors_shapes(read.data, where=str(record.path / file))
            seen += [(file, files[file]["sha256"], stamp)] if stamp else []
        except (IntegrityError, InvalidAdapterError) as error:
            problems.append(error.message if isinstance(error, IntegrityError) else f"{record.ref}: {error}")
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{record.ref}: the index's record of {file} is damaged ({error!r}); "
                            "run `adapterhub registry rebuild-index`")
    if not problems:
        registry_index.remember(record.name, record.version, seen)
    return problems + manifest_problems(record)


def manifest_problems(record: AdapterRecord) -> list[str]:
    """What is wrong between the entry's ``adapterhub.json`` on disk and its index row (``[]``: nothing)."""
    path = record.path / MANIFEST_FILE
    try:
        on_disk = json.loads(read_regular(path, limit=MAX_JSON_BYTES))
        same = all(on_disk.get(key) == record.manifest.get(key) for key in ("name", "version", "files"))
        rest = _canonical(on_disk) == _canonical(record.manifest)
    except (OSError, ValueError, AttributeError, RecursionError) as error:
        return [f"{record.ref}: {path} is unreadable ({type(error).__name__}); the index still describes the entry"]
    if not same:
        return [f"{record.ref}: {path} disagrees with the index about name, version or files"]
    return [] if rest else [f"{record.ref}: the index row differs from {path} (a damaged row?); run "
                            "`adapterhub registry rebuild-index` to index the manifest on disk again"]


def index_problems(registry_index: RegistryIndex) -> list[str]:
    """SQLite's ``quick_check`` of the index file, one line per problem (``[]``: sound)."""
    with registry_index.read() as db:
        result = [row[0] for row in db.execute("PRAGMA quick_check")]
    return [] if result == ["ok"] else [f"index {registry_index.path}: {line}" for line in result]


def _canonical(manifest: Mapping[str, Any]) -> str:
    return json.dumps({key: value for key, value in manifest.items() if key != "tags"}, sort_keys=True)
