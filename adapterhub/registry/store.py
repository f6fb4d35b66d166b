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

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import entries, index, integrity, listing
from .compat import check_compatible
from ..errors import AdapterHubError, AdapterNotFoundError, ConfigError, InvalidNameError, StorageError
from .database import RegistryIndex
from .files import parse_json
from .manifest import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, AdapterRecord, LoadedAdapter
from .refs import parse_ref, validate_tag
from .channels import Channels
from .promotion import ChannelMoves
from .safetensors_file import safetensors_layout, safetensors_tensors
from .rebuild import RebuildReport, rebuild_index, removed_versions, version_folders, write_removed_mark
from ..paths import default_registry_root
from .entries import NewEntry
from .staging import StagingArea

INDEX_FILE = "index.sqlite"
ADAPTERS_DIR = "adapters"
STAGING_DIR = ".staging"


class Registry(ChannelMoves):
    """A folder of immutable, checksummed adapter versions with an SQLite index; channels move through
    :class:`~adapterhub.registry.promotion.ChannelMoves` (``promote``, ``rollback``, ``history``).

    Args:
        root: registry folder; ``None`` uses :func:`adapterhub.paths.default_registry_root`
            (``$ADAPTERHUB_REGISTRY``, else the checkout's ``registry/``, else
            ``$ADAPTERHUB_HOME/registry``). Created on first use.

    >>> Registry("/tmp/adapters").root  # doctest: +SKIP
    PosixPath('/tmp/adapters')
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_registry_root()
        self._index = RegistryIndex(self.root / INDEX_FILE,
                                          entries=lambda: version_folders(self.root / ADAPTERS_DIR))
        self._staging = StagingArea(self.root / STAGING_DIR)
        self.channels = Channels(self.root, self._index)

    def __repr__(self) -> str:
        return f"Registry(root={str(self.root)!r})"

    # --- writing ----------------------------------------------------------------
    def add(self, peft_dir: str | os.PathLike[str], name: str, *, domain: str | None = None, task: Any = None,
            tags: Iterable[str] = (), description: str = "", base: Any = None,
            metrics: Mapping[str, Any] | None = None, recipe: Mapping[str, Any] | None = None,
            source: Mapping[str, Any] | None = None, contract: Mapping[str, Any] | None = None) -> AdapterRecord:
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
            contract: the serving contract (:mod:`adapterhub.registry.contract`); default: the one in
                ``peft_dir``'s ``adapterhub.json``, if any.

        Returns:
            The new :class:`AdapterRecord` (version = previous highest ever + 1).

        Raises:
            InvalidNameError: bad name, tag or domain.
            InvalidAdapterError: not a usable PEFT directory (nothing is written).
            IncompatibleBaseError: it does not fit ``base``.

        >>> Registry().add("out/legal", "legal", domain="legal", tags=["prod"]).ref  # doctest: +SKIP
        'legal@1'
        """
        prepared = entries.prepare(entries.NewEntry(peft_dir, name, domain=domain, task=task, tags=tuple(tags),
                                                    description=description, metrics=metrics, recipe=recipe,
                                                    source=source, contract=contract), base=base)
        self._write([prepared], durable_each=True)
        record = index.record(prepared.manifest, prepared.tags, adapters=self.root / ADAPTERS_DIR)
        integrity.remember_new(self._index, record)
        return record

    def add_many(self, new: Iterable[NewEntry], *, base: Any = None, batch: int = 256,
                 progress: bool = False) -> list[AdapterRecord]:
        """Store many adapters, ``batch`` at a time, each batch in one transaction (much faster than ``add``).

        The same checks and the same files as :meth:`add` (so ``rebuild-index`` finds exactly these entries);
        a batch is made durable by one ``os.sync`` instead of an fsync per file. Every name, tag and domain is
        checked before anything is written; each batch is all or nothing, so when an adapter folder of a later
        batch is bad, the earlier batches stay registered and the error says how many.

        Args:
            new: :class:`~adapterhub.registry.entries.NewEntry` items (``add``'s arguments).
            base: as in :meth:`add`, for every entry.
            batch: entries per transaction (their files are held in memory meanwhile).
            progress: show a progress bar (stderr).

        Returns:
            The new records, in the order given.

        Raises:
            As :meth:`add`; ``ConfigError`` for ``batch < 1``.

        >>> Registry().add_many([NewEntry("out/a", "a"), NewEntry("out/b", "b", domain="legal")])  # doctest: +SKIP
        """
        from tqdm.auto import tqdm

        new = list(new)
        if batch < 1:
            raise ConfigError(f"add_many batch={batch} must be at least 1")
        for entry in new:
            entries.check_labels(entry.name, domain=entry.domain, tags=entry.tags)
        records: list[AdapterRecord] = []
        with tqdm(total=len(new), desc="registering", unit="adapter", disable=not progress, leave=False) as bar:
            for start in range(0, len(new), batch):
                try:
                    read = entries.reader_once_per_folder()  # a folder given again in a batch is read once
                    prepared = [entries.prepare(entry, base=base, read=read) for entry in new[start:start + batch]]
                    self._write(prepared, durable_each=False)
                except AdapterHubError as error:
                    if records:  # say what stays registered, on every surface of the error
                        error.message += (f" (the first {len(records)} entries, up to {records[-1].ref}, were "
                                          "registered; none after them)")
                        error.args = (f"{error.message}; {error.fix}" if error.fix else error.message,
                                      *error.args[1:])
                    raise
                records += [index.record(item.manifest, item.tags, adapters=self.root / ADAPTERS_DIR)
                            for item in prepared]
                bar.update(len(prepared))
        return records

    def _write(self, prepared: list[entries.Prepared], *, durable_each: bool) -> None:
        """Place and index prepared entries in one transaction; a failing disk is one clear error."""
        self._index.check_writable()
        try:
            entries.write_entries(self._index, self._staging, self.root / ADAPTERS_DIR, prepared,
                                  durable_each=durable_each)
        except OSError as error:
            if isinstance(error, AdapterHubError):
                raise
            names = ", ".join(item.name for item in prepared[:3]) + (", ..." if len(prepared) > 3 else "")
            raise StorageError(f"could not write {names} into registry {self.root}: {error}; free disk space or "
                               "make the folder writable, then retry (nothing was registered)") from error

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
            write_removed_mark(self.root, name, max(record.version for record in removed))  # for rebuild-index
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
        if self.channels.has_history(name, tag):
            raise ConfigError(f"{name}@{tag} is a channel: it moves only through `adapterhub promote` and "
                              "`adapterhub rollback` (registry.promote / registry.rollback), which keep its history")
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
                    removed += entries.discard_orphans(db, self._staging, folder)
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
        return self._get_with_verified(ref)[0]

    def list(self, *, name_prefix: str | None = None, domain: str | None = None, tag: str | None = None,
             base: str | None = None, method: str | None = None, limit: int | None = None,
             offset: int = 0) -> list[AdapterRecord]:
        """Entries by name then version, optionally filtered and paged (every filter given must match).

        Args:
            name_prefix: names starting with this (case-sensitive), e.g. ``"legal-"``.
            domain: exactly this domain.
            tag: the version this tag or channel points at, e.g. ``"prod"``.
            base: a base fingerprint, or its leading part (as ``registry list`` prints it).
            method: e.g. ``"lora"``.
            limit, offset: one page: skip ``offset`` matching entries, return at most ``limit``
                (:meth:`count` with the same filters gives the total).

        Raises:
            InvalidNameError / ConfigError: a malformed filter or page (see
                :class:`~adapterhub.registry.listing.ListQuery`).

        >>> [r.ref for r in Registry().list(domain="legal", tag="prod", limit=50)]  # doctest: +SKIP
        ['legal@2']
        """
        query = listing.ListQuery(name_prefix=name_prefix, domain=domain, tag=tag, base=base, method=method,
                                  limit=limit, offset=offset)
        with self._index.read() as db:
            return [self._record_from_row(row, tags) for row, tags in listing.page(db, query)]

    def count(self, *, name_prefix: str | None = None, domain: str | None = None, tag: str | None = None,
              base: str | None = None, method: str | None = None) -> int:
        """How many entries match the filters of :meth:`list` (cheap; works when a row is damaged, unlike
        :meth:`list`).

        >>> Registry().count(domain="legal")  # doctest: +SKIP
        2
        """
        query = listing.ListQuery(name_prefix=name_prefix, domain=domain, tag=tag, base=base, method=method)
        with self._index.read() as db:
            return listing.count(db, query)

    def load(self, ref: str, *, base: Any = None) -> LoadedAdapter:
        """Read an entry into memory, verifying every file's sha256 on the bytes it parses.

        A file unchanged (same device, inode, size, mtime and ctime) since its bytes last matched
        their sha256 is not hashed again (see :mod:`adapterhub.registry.verified`); :meth:`verify` always hashes.

        Args:
            ref: a reference (see :meth:`get`).
            base: if given, the adapter must fit it (fingerprint, modules, shapes).

        Returns:
            :class:`LoadedAdapter` with ``record``, ``config``, CPU ``tensors`` and, with ``base``, the ``method``
            that checked it.

        Raises:
            AdapterNotFoundError: nothing matches ``ref``.
            IntegrityError: a file is missing, truncated or altered (the message names it).
            IncompatibleBaseError: it does not fit ``base``.

        >>> Registry().load("legal", base=base).tensors.keys()  # doctest: +SKIP
        """
        record, known = self._get_with_verified(ref)
        files = integrity.read_verified(self._index, record, known)
        config = parse_json(files[CONFIG_FILE], where=str(record.path / CONFIG_FILE))
        layout = safetensors_layout(files[WEIGHTS_FILE], where=str(record.path / WEIGHTS_FILE))
        method = None if base is None else check_compatible(
            config, {name: span.shape for name, span in layout.items()}, base, fingerprint=record.base_fingerprint)
        # views into the verified bytes just read (a private buffer), not a second copy of them
        return LoadedAdapter(record=record, config=config, tensors=safetensors_tensors(files[WEIGHTS_FILE], layout),
                             method=method)

    def verify(self, ref: str | None = None, *, progress: bool = False) -> list[str]:
        """Check every file of one entry (or all) against its checksums; ``[]`` means all is well.

        Always hashes every file (unlike :meth:`load`), and records the files that check out.

        Args:
            ref: one entry; ``None`` checks every entry and the index itself.
            progress: show a progress bar (stderr).

        Returns:
            One line per problem, each naming the entry and the file.

        >>> Registry().verify()  # doctest: +SKIP
        []
        """
        if ref is None:
            with self._index.read() as db:
                rows = index.rows(db)
        else:
            name, selector = parse_ref(ref)
            with self._index.read() as db:
                row = index.resolve(db, name, selector)
                if row is None:
                    raise self._not_found(db, ref, name)
                rows = [row]
        return integrity.verify_rows(self._index, rows, adapters=self.root / ADAPTERS_DIR, whole_index=ref is None,
                                     progress=progress)

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
        record, known = self._get_with_verified(ref)
        files = integrity.read_verified(self._index, record, known)
        target = Path(directory).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(f"export folder {target} already exists and is not empty; choose a new or empty folder")
        try:
            target.mkdir(parents=True, exist_ok=True)
            for file, data in {**files, MANIFEST_FILE: entries.manifest_bytes(record.manifest)}.items():
                (target / file).write_bytes(data)
        except OSError as error:
            raise StorageError(f"cannot export {record.ref} to {target}: {error.strerror or error}; choose a writable "
                               "folder with free space") from error
        return target

    def rebuild_index(self) -> RebuildReport:
        """Index every verifiable version folder again, from its own ``adapterhub.json``.

        For an index that is missing, empty or damaged (the registry refuses to use it
        and names this method). Each folder's files are checked against its manifest
        before it is indexed; version counters keep the highest number ever seen (the old
        index's, every folder's and every removed version's), so no version is reused;
        tags come from the old index where it still holds them, else from the manifests.
        Folders that do not verify are listed, left in place and not indexed.

        Returns:
            A :class:`RebuildReport` (entries indexed, tags, problems).

        Raises:
            ReadOnlyRegistryError: the registry folder is read-only.

        >>> Registry("/srv/adapters").rebuild_index().indexed  # doctest: +SKIP
        ['legal@1', 'legal@2']
        """
        report = rebuild_index(self._index, self.root / ADAPTERS_DIR, removed_versions(self.root))
        report.tags.update(self.channels.restore())  # channels follow their history, not the manifests
        return report

    # --- helpers -------------------------------------------------------------------
    def _get_with_verified(self, ref: str) -> tuple[AdapterRecord, dict[str, tuple[str, str]]]:
        """:meth:`get`, plus what the index recorded of the entry's verified files, in one read."""
        name, selector = parse_ref(ref)
        with self._index.read() as db:
            row = index.resolve(db, name, selector)
            if row is None:
                raise self._not_found(db, ref, name)
            record = self._record_from_row(row, index.tags_of(db, name, row["version"]))
            return record, index.verified_files(db, name, row["version"])

    def _record_from_row(self, row: sqlite3.Row, tags: Iterable[str]) -> AdapterRecord:
        return index.record_from_row(row, tags, adapters=self.root / ADAPTERS_DIR, index_path=self._index.path)

    def _not_found(self, db: sqlite3.Connection, ref: str, name: str, *, action: str = "") -> AdapterNotFoundError:
        versions = [row["version"] for row in index.rows(db, name=name)]
        known = (f"versions of {name!r}: {', '.join(map(str, versions))}" if versions
                 else "run `adapterhub registry list` to see what is registered")
        note = f" ({action})" if action else ""
        return AdapterNotFoundError(f"no adapter {ref!r} in registry {self.root}{note}; {known}")


