"""The adapter registry: versioned, verified, crash-safe storage of PEFT adapters.

Layout under the root (see :func:`adapterhub.paths.default_registry_root`)::

    index.sqlite                 # WAL index: entries, version counters, tags
    adapters/<name>/<version>/   # plain PEFT dir + adapterhub.json, never modified
    .staging/                    # locked temporary folders; litter of killed processes

An ``add`` writes and fsyncs the files in a staging folder, then, holding the
index write lock, allocates the version, renames the folder into place and
inserts the row in one transaction. A process killed at any instant leaves at
most an unindexed folder, which nobody can see and the next ``add``/``gc`` removes.

>>> from adapterhub import Registry
>>> registry = Registry("/tmp/adapters")  # doctest: +SKIP
>>> record = registry.add("out/legal-lora", "legal", domain="legal")  # doctest: +SKIP
>>> record.ref  # doctest: +SKIP
'legal@1'
>>> registry.load("legal@latest").tensors  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import index
from .compat import check_compatible
from ..errors import AdapterNotFoundError, ConfigError, IntegrityError, InvalidNameError, RegistryError
from .manifest import (ADAPTER_FILES, CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, AdapterRecord, LoadedAdapter,
                       check_file, new_manifest, parse_json, parse_ref, read_adapter_dir, safetensors_shapes,
                       validate_name, validate_tag)
from ..paths import default_registry_root
from .staging import StagingArea, fsync_dir, write_synced

INDEX_FILE = "index.sqlite"
ADAPTERS_DIR = "adapters"
STAGING_DIR = ".staging"


class Registry:
    """A folder of immutable, checksummed adapter versions with an SQLite index.

    Args:
        root: registry folder; ``None`` uses :func:`adapterhub.paths.default_registry_root`
            (``$ADAPTERHUB_REGISTRY``, else the checkout's ``registry/``, else
            ``$ADAPTERHUB_HOME/registry``). Created on first use.

    >>> Registry("/tmp/adapters").root  # doctest: +SKIP
    PosixPath('/tmp/adapters')
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_registry_root()
        self._index = index.RegistryIndex(self.root / INDEX_FILE)
        self._staging = StagingArea(self.root / STAGING_DIR)

    def __repr__(self) -> str:
        return f"Registry(root={str(self.root)!r})"

    # --- writing ----------------------------------------------------------------
    def add(self, peft_dir: str | os.PathLike[str], name: str, *, domain: str | None = None, task: Any = None,
            tags: Iterable[str] = (), description: str = "", base: Any = None,
            metrics: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
            source: Mapping[str, Any] | None = None) -> AdapterRecord:
        """Store a plain PEFT adapter directory as the next version of ``name``.

        Args:
            peft_dir: folder with ``adapter_config.json`` and ``adapter_model.safetensors``
                (an ``adapterhub.json`` there supplies defaults for the fields below).
            name: adapter name (letters, digits, ``.``, ``_``, ``-``).
            domain: free label used by ``list(domain=...)``, e.g. ``"legal"``.
            task: a ``TaskSpec`` or its dict; ``None`` means free generation.
            tags: tags to point at the new version (moved from older versions).
            description: one line for people.
            base: the :class:`adapterhub.Base` it belongs to: compatibility is checked
                and its fingerprint and name are recorded.
            metrics, recipe: recorded as given.
            source: ``{"kind": "trained"|"imported"|"pulled", ...}``; default imported from ``peft_dir``.

        Returns:
            The new :class:`AdapterRecord` (version = previous highest ever + 1).

        Raises:
            InvalidNameError: bad name, tag or domain.
            InvalidAdapterError: not a usable PEFT directory (nothing is written).
            IncompatibleBaseError: it does not fit ``base``.

        >>> Registry().add("out/legal", "legal", domain="legal", tags=["prod"]).ref  # doctest: +SKIP
        'legal@1'
        """
        validate_name(name)
        tags = list(dict.fromkeys(validate_tag(tag) for tag in tags))
        if domain is not None:
            validate_name(domain, what="domain")
        adapter = read_adapter_dir(peft_dir)
        if base is not None:
            recorded = ((adapter.manifest or {}).get("base") or {}).get("fingerprint")
            check_compatible(adapter.config, adapter.tensor_shapes, base, fingerprint=recorded)
        manifest = new_manifest(adapter, name, domain=domain, task=task, tags=tags, description=description,
                                base=base, metrics=metrics, recipe=recipe, origin=source)
        self._staging.clean()
        with self._staging.stage() as stage:
            for file in ADAPTER_FILES:
                write_synced(stage / file, adapter.files[file])
            target = None
            try:
                with self._index.write() as db:
                    other = index.name_differing_in_case(db, name)
                    if other is not None:
                        raise InvalidNameError(f"adapter name {name!r} differs only in case from the existing "
                                               f"{other!r}; use {other!r} or a clearly different name")
                    manifest["version"] = index.next_version(db, name)
                    write_synced(stage / MANIFEST_FILE, _manifest_bytes(manifest))
                    fsync_dir(stage)
                    target = self._place(db, stage, name, manifest["version"])
                    index.insert(db, manifest)
                    for tag in tags:
                        index.set_tag(db, name, tag, manifest["version"])
            except BaseException:
                if target is not None:  # placed but not committed: back to staging, deleted on leaving
                    os.rename(target, stage)
                raise
        return self._record(manifest, tags)

    def _place(self, db: sqlite3.Connection, stage: Path, name: str, version: int) -> Path:
        """Rename a complete staging folder to ``adapters/<name>/<version>`` (under the write lock)."""
        folder = self.root / ADAPTERS_DIR / name
        for needed in (folder.parent, folder):
            if not needed.is_dir():
                needed.mkdir()
                fsync_dir(needed.parent)
        self._discard_orphans(db, folder)
        target = folder / str(version)
        try:
            os.rename(stage, target)
        except OSError as error:
            raise RegistryError(f"could not move the new entry into {target}: {error}; run `adapterhub registry gc` "
                                "and check the registry folder is writable") from error
        fsync_dir(folder)
        return target

    def _discard_orphans(self, db: sqlite3.Connection, folder: Path) -> list[Path]:
        """Remove version folders of one name that the index does not know (under the write lock)."""
        if not folder.is_dir():
            return []
        indexed = {row["version"] for row in index.rows(db, name=folder.name)}
        orphans = [entry for entry in folder.iterdir() if entry.name.isdigit() and int(entry.name) not in indexed]
        return [entry for entry in orphans if self._staging.discard(entry)]

    def remove(self, ref: str, *, all_versions: bool = False) -> list[AdapterRecord]:
        """Delete the version ``ref`` resolves to (or every version of a bare name with ``all_versions``).

        Version numbers are never reused, and tags on removed versions go with them.

        Returns:
            The removed records.

        Raises:
            AdapterNotFoundError: nothing matches ``ref`` (nothing is removed).
            InvalidNameError: malformed ``ref``, or ``all_versions`` with a ``name@...`` ref.

        >>> Registry().remove("legal@1")  # doctest: +SKIP
        """
        name, selector = parse_ref(ref)
        if all_versions and "@" in ref:
            raise InvalidNameError(f"all_versions removes every version of a name; pass {name!r}, not {ref!r}")
        with self._index.write() as db:
            rows = index.rows(db, name=name) if all_versions else [index.resolve(db, name, selector)]
            if not rows or rows[0] is None:
                raise self._not_found(db, ref, name, action="nothing was removed")
            removed = [self._record_from_row(row, []) for row in rows]
            for record in removed:
                index.delete(db, record.name, record.version)
        for record in removed:  # after commit: a kill here leaves an unindexed folder for gc
            self._staging.discard(record.path)
        return removed

    def tag(self, ref: str, tag: str) -> AdapterRecord:
        """Point ``name@tag`` at the version ``ref`` resolves to (moving it if it pointed elsewhere).

        Raises:
            InvalidNameError: bad tag (numbers and ``latest`` are reserved).
            AdapterNotFoundError: nothing matches ``ref``.

        >>> Registry().tag("legal@3", "prod").tags  # doctest: +SKIP
        ('prod',)
        """
        validate_tag(tag)
        name, selector = parse_ref(ref)
        with self._index.write() as db:
            row = index.resolve(db, name, selector)
            if row is None:
                raise self._not_found(db, ref, name, action="nothing was tagged")
            index.set_tag(db, name, tag, row["version"])
            return self._record_from_row(row, index.tags_of(db, name, row["version"]))

    def gc(self) -> list[Path]:
        """Delete what killed processes left behind: staging folders and unindexed version folders.

        Returns:
            The paths removed.

        >>> Registry().gc()  # doctest: +SKIP
        []
        """
        removed = self._staging.clean()
        adapters = self.root / ADAPTERS_DIR
        with self._index.write() as db:
            for folder in sorted(adapters.iterdir()) if adapters.is_dir() else []:
                if folder.is_dir() and not folder.is_symlink():
                    removed += self._discard_orphans(db, folder)
                    if not any(folder.iterdir()):
                        folder.rmdir()
                        removed.append(folder)
        return removed

    # --- reading ----------------------------------------------------------------
    def get(self, ref: str) -> AdapterRecord:
        """Resolve ``name``, ``name@N``, ``name@latest`` or ``name@tag`` (cheap: reads only the index).

        Raises:
            InvalidNameError: malformed ``ref``.
            AdapterNotFoundError: nothing matches; the message lists the versions that exist.

        >>> Registry().get("legal@prod").version  # doctest: +SKIP
        3
        """
        name, selector = parse_ref(ref)
        with self._index.read() as db:
            row = index.resolve(db, name, selector)
            if row is None:
                raise self._not_found(db, ref, name)
            return self._record_from_row(row, index.tags_of(db, name, row["version"]))

    def list(self, *, domain: str | None = None, base: str | None = None) -> list[AdapterRecord]:
        """Every entry, by name then version, optionally only one domain and/or base fingerprint.

        >>> [r.ref for r in Registry().list(domain="legal")]  # doctest: +SKIP
        ['legal@1', 'legal@2']
        """
        with self._index.read() as db:
            tags = index.tags_by_entry(db)
            return [self._record_from_row(row, tags.get((row["name"], row["version"]), []))
                    for row in index.rows(db, domain=domain, base=base)]

    def load(self, ref: str, *, base: Any = None) -> LoadedAdapter:
        """Read an entry into memory, verifying every file's sha256 on the bytes it parses.

        Args:
            ref: a reference (see :meth:`get`).
            base: if given, the adapter must fit it (fingerprint, modules, shapes).

        Returns:
            :class:`LoadedAdapter` with ``record``, ``config`` and CPU ``tensors``.

        Raises:
            AdapterNotFoundError: nothing matches ``ref``.
            IntegrityError: a file is missing, truncated or altered (the message names it).
            IncompatibleBaseError: it does not fit ``base``.

        >>> Registry().load("legal", base=base).tensors.keys()  # doctest: +SKIP
        """
        from safetensors.torch import load as load_safetensors

        record = self.get(ref)
        files = self._read_verified(record)
        config = parse_json(files[CONFIG_FILE], where=str(record.path / CONFIG_FILE))
        if base is not None:
            shapes = safetensors_shapes(files[WEIGHTS_FILE], where=str(record.path / WEIGHTS_FILE))
            check_compatible(config, shapes, base, fingerprint=record.base_fingerprint)
        return LoadedAdapter(record=record, config=config, tensors=load_safetensors(files[WEIGHTS_FILE]))

    def verify(self, ref: str | None = None, *, progress: bool = False) -> list[str]:
        """Check every file of one entry (or all) against its checksums; ``[]`` means all is well.

        Args:
            ref: one entry; ``None`` checks every entry and the index itself.
            progress: show a progress bar (stderr).

        Returns:
            One line per problem, each naming the entry and the file.

        >>> Registry().verify()  # doctest: +SKIP
        []
        """
        from tqdm.auto import tqdm

        problems = [] if ref is not None else self._index_problems()
        records = [self.get(ref)] if ref is not None else self.list()
        for record in tqdm(records, desc="verify", unit="entry", disable=not progress):
            for file in record.manifest["files"]:
                try:
                    self._read_file(record, file)
                except IntegrityError as error:
                    problems.append(str(error))
            problems += self._manifest_problems(record)
        return problems

    def export(self, ref: str, directory: str | os.PathLike[str]) -> Path:
        """Write a verified copy of an entry (plain PEFT dir + ``adapterhub.json``) to ``directory``.

        Returns:
            The directory, loadable by ``PeftModel.from_pretrained``.

        Raises:
            ConfigError: ``directory`` exists and is not empty.
            AdapterNotFoundError / IntegrityError: as :meth:`load`.

        >>> Registry().export("legal@2", "out/legal-v2")  # doctest: +SKIP
        PosixPath('out/legal-v2')
        """
        record = self.get(ref)
        files = self._read_verified(record)
        target = Path(directory).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(f"export folder {target} already exists and is not empty; choose a new or empty folder")
        target.mkdir(parents=True, exist_ok=True)
        for file, data in {**files, MANIFEST_FILE: _manifest_bytes(record.manifest)}.items():
            (target / file).write_bytes(data)
        return target

    # --- helpers -------------------------------------------------------------------
    def _read_file(self, record: AdapterRecord, file: str) -> bytes:
        path = record.path / file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{record.ref}: {path} is missing; remove the entry with "
                                 f"`adapterhub registry rm {record.ref}` and import the adapter again") from None
        check_file(data, record.manifest["files"][file], where=str(path), ref=record.ref)
        return data

    def _read_verified(self, record: AdapterRecord) -> dict[str, bytes]:
        return {file: self._read_file(record, file) for file in record.manifest["files"]}

    def _manifest_problems(self, record: AdapterRecord) -> list[str]:
        path = record.path / MANIFEST_FILE
        try:
            on_disk = json.loads(path.read_bytes())
            same = all(on_disk.get(key) == record.manifest.get(key) for key in ("name", "version", "files"))
        except (OSError, ValueError, AttributeError) as error:
            return [f"{record.ref}: {path} is unreadable ({type(error).__name__}); the index still describes the entry"]
        return [] if same else [f"{record.ref}: {path} disagrees with the index about name, version or files"]

    def _index_problems(self) -> list[str]:
        with self._index.read() as db:
            result = [row[0] for row in db.execute("PRAGMA quick_check")]
        return [] if result == ["ok"] else [f"index {self._index.path}: {line}" for line in result]

    def _record(self, manifest: dict[str, Any], tags: Iterable[str]) -> AdapterRecord:
        tags = sorted(tags)
        return AdapterRecord(name=manifest["name"], version=manifest["version"], domain=manifest["domain"],
                             method=manifest["method"], path=self.root / ADAPTERS_DIR / manifest["name"] /
                             str(manifest["version"]), manifest={**manifest, "tags": tags}, tags=tuple(tags))

    def _record_from_row(self, row: sqlite3.Row, tags: Iterable[str]) -> AdapterRecord:
        return self._record(json.loads(row["manifest"]), tags)

    def _not_found(self, db: sqlite3.Connection, ref: str, name: str, *, action: str = "") -> AdapterNotFoundError:
        versions = [row["version"] for row in index.rows(db, name=name)]
        known = (f"versions of {name!r}: {', '.join(map(str, versions))}" if versions
                 else "run `adapterhub registry list` to see what is registered")
        note = f" ({action})" if action else ""
        return AdapterNotFoundError(f"no adapter {ref!r} in registry {self.root}{note}; {known}")


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
