"""New registry entries: checked and given a manifest before anything is written, then staged and placed
under the index's write lock — one entry (``Registry.add``) or many in one transaction (``Registry.add_many``).

Placement is crash-safe either way: files are written into a locked staging folder, then, holding the
index write lock, each entry gets its version, its manifest, and is renamed to ``adapters/<name>/<version>``
before its row is inserted; the transaction commits only after every placed byte is durable (one ``fsync``
per file for a single add, one ``os.sync`` per batch for many). A kill at any instant leaves at most
unindexed folders, which nobody sees and the next ``add``/``gc`` removes; an error before the commit moves
the placed folders back into staging, so no half-written entry is ever visible.

>>> prepared = prepare("out/legal", "legal", domain="legal")  # doctest: +SKIP
>>> write_entries(index, staging, root / "adapters", [prepared], durable_each=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import index
from ..errors import InvalidNameError, RegistryError
from .compat import check_compatible
from .database import RegistryIndex
from .manifest import ADAPTER_FILES, MANIFEST_FILE, SourceAdapter, new_manifest, read_adapter_dir, recorded_fields
from .refs import validate_name, validate_tag
from .staging import StagingArea, fsync_dir, write_synced


@dataclass(frozen=True)
class NewEntry:
    """One adapter for :meth:`Registry.add_many <adapterhub.registry.store.Registry.add_many>`: the arguments
    :meth:`Registry.add <adapterhub.registry.store.Registry.add>` takes (``base`` is given once, for all).

    >>> NewEntry("out/legal", "legal", domain="legal", tags=("prod",))  # doctest: +SKIP
    """

    peft_dir: str | os.PathLike[str]
    name: str
    domain: str | None = None
    task: Any = None
    tags: Sequence[str] = ()
    description: str = ""
    metrics: Mapping[str, Any] | None = None
    recipe: Mapping[str, Any] | None = None
    source: Mapping[str, Any] | None = None
    contract: Mapping[str, Any] | None = None


@dataclass
class Prepared:
    """An entry checked and ready to write: its files in memory, its manifest (version still unset), its tags."""

    adapter: SourceAdapter
    manifest: dict[str, Any]
    tags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest["name"]


def check_labels(name: str, *, domain: str | None, tags: Sequence[str]) -> list[str]:
    """Validate ``name``, ``domain`` and ``tags`` (cheap, nothing read); returns the tags without repeats.

    Raises:
        InvalidNameError: a bad name, domain or tag.
    """
    validate_name(name)
    if domain is not None:
        validate_name(domain, what="domain")
    return list(dict.fromkeys(validate_tag(tag) for tag in tags))


def prepare(entry: NewEntry, *, base: Any = None,
            read: Callable[[str | os.PathLike[str]], SourceAdapter] = read_adapter_dir) -> Prepared:
    """Read and check one adapter folder (with ``read``) and build its manifest; nothing is written.

    Raises:
        InvalidNameError: bad name, tag or domain.
        InvalidAdapterError: not a usable PEFT directory.
        IncompatibleBaseError: it does not fit ``base``.
    """
    tags = check_labels(entry.name, domain=entry.domain, tags=entry.tags)
    adapter = read(entry.peft_dir)
    if base is not None:
        recorded = (recorded_fields(adapter.manifest or {}, where=str(adapter.path / MANIFEST_FILE))
                    .get("base") or {}).get("fingerprint")
        check_compatible(adapter.config, adapter.tensor_shapes, base, fingerprint=recorded, method=adapter.method)
    manifest = new_manifest(adapter, entry.name, domain=entry.domain, task=entry.task, tags=tags,
                            description=entry.description, base=base, metrics=entry.metrics, recipe=entry.recipe,
                            origin=entry.source, contract=entry.contract)
    return Prepared(adapter=adapter, manifest=manifest, tags=tags)


def reader_once_per_folder() -> Callable[[str | os.PathLike[str]], SourceAdapter]:
    """A :func:`read_adapter_dir` that reads a folder given again only once (its result is kept while it lives)."""
    seen: dict[str, SourceAdapter] = {}

    def read(folder: str | os.PathLike[str]) -> SourceAdapter:
        key = os.fspath(folder)
        if key not in seen:
            seen[key] = read_adapter_dir(folder)
        return seen[key]

    return read


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """How a manifest is stored: indented, sorted JSON with a final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def write_entries(registry_index: RegistryIndex, staging: StagingArea, adapters: Path,
                  entries: Sequence[Prepared], *, durable_each: bool) -> None:
    """Stage, version, place and index ``entries`` in one write transaction (all or none).

    Each manifest gets its ``version``. ``durable_each``: fsync every file and folder as it is written (one
    entry); otherwise one ``os.sync`` before the commit makes the whole batch durable at once.

    Raises:
        InvalidNameError: a name differs only in case from an existing one (nothing of the batch is kept).
        RegistryError / OSError: placing or indexing failed (nothing of the batch is kept).
    """
    staging.clean()
    with staging.stage() as stage:
        folders = []
        for number, entry in enumerate(entries):
            folder = stage if len(entries) == 1 else stage / str(number)  # one entry: the stage itself moves
            folder.mkdir(exist_ok=folder == stage)
            for file in ADAPTER_FILES:
                write_synced(folder / file, entry.adapter.files[file], sync=durable_each)
            folders.append(folder)
        placed: list[tuple[Path, Path]] = []
        try:
            with registry_index.write() as db:
                try:
                    for entry, folder in zip(entries, folders):
                        _version(db, entry, folder, durable_each=durable_each)
                        placed.append((place(db, staging, adapters, folder, entry.name, entry.manifest["version"],
                                             durable=durable_each), folder))
                        index.insert(db, entry.manifest)
                        for tag in entry.tags:
                            index.set_tag(db, entry.name, tag, entry.manifest["version"])
                    if not durable_each:
                        os.sync()
                except BaseException:
                    _unplace(placed)  # still under the write lock: no other writer is placing into these folders
                    raise
        except BaseException:
            _unplace(placed)  # the commit itself failed
            raise


def _unplace(placed: list[tuple[Path, Path]]) -> None:
    """Move placed but uncommitted folders back into staging (deleted on leaving it), and drop the name
    folders this left empty; ``placed`` is emptied."""
    while placed:
        target, folder = placed.pop()
        os.rename(target, folder)
        try:
            target.parent.rmdir()  # only when empty: the name had no other version
        except OSError:
            pass


def _version(db: sqlite3.Connection, entry: Prepared, folder: Path, *, durable_each: bool) -> None:
    """Allocate the entry's version and write its manifest into its staged folder (under the write lock)."""
    name = entry.name
    other = index.name_differing_in_case(db, name)
    if other is not None:
        raise InvalidNameError(f"adapter name {name!r} differs only in case from the existing "
                               f"{other!r}; use {other!r} or a clearly different name")
    entry.manifest["version"] = index.next_version(db, name)
    write_synced(folder / MANIFEST_FILE, manifest_bytes(entry.manifest), sync=durable_each)
    if durable_each:
        fsync_dir(folder)


def place(db: sqlite3.Connection, staging: StagingArea, adapters: Path, complete: Path, name: str, version: int, *,
          durable: bool = True) -> Path:
    """Rename a complete staged folder to ``adapters/<name>/<version>`` (under the write lock)."""
    folder = adapters / name
    for needed in (folder.parent, folder):
        if not needed.is_dir():
            needed.mkdir()
            if durable:
                fsync_dir(needed.parent)
    discard_orphans(db, staging, folder)
    target = folder / str(version)
    try:
        os.rename(complete, target)
    except OSError as error:
        raise RegistryError(f"could not move the new entry into {target}: {error}; run `adapterhub registry gc` "
                            "and check the registry folder is writable") from error
    if durable:
        fsync_dir(folder)
    return target


def discard_orphans(db: sqlite3.Connection, staging: StagingArea, folder: Path) -> list[Path]:
    """Remove version folders of one name that the index does not know (under the write lock)."""
    if not folder.is_dir():
        return []
    indexed = {row["version"] for row in index.rows(db, name=folder.name)}
    orphans = [entry for entry in folder.iterdir()
               if entry.name.isascii() and entry.name.isdigit() and int(entry.name) not in indexed]
    return [entry for entry in orphans if staging.discard(entry)]
