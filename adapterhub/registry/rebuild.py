"""Rebuilding the index from the version folders: every folder carries its full manifest.

The index is the registry's only list of what exists, so losing it (deleted,
truncated to zero bytes, replaced) must never read as "a new, empty registry":
:class:`~adapterhub.registry.database.RegistryIndex` refuses such an index while
version folders exist, and :func:`rebuild_index` indexes them again.

A folder is indexed only if it verifies: its ``adapterhub.json`` names this
folder's name and version, and every file it lists has the recorded size and
sha256 and reads as a valid adapter. Version counters take the highest number
ever seen — the old index's counters, every folder's version, and the marks
``remove`` leaves under ``.removed/`` — so a rebuild never hands a version
number out twice.

>>> report = Registry("/srv/adapters").rebuild_index()  # doctest: +SKIP
>>> report.indexed, report.problems  # doctest: +SKIP
(['legal@1', 'legal@2'], [])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterHubError
from .database import Rebuilt, RegistryIndex
from .files import MAX_JSON_BYTES, parse_json, read_regular
from .manifest import ADAPTER_FILES, MANIFEST_FILE, check_file, read_adapter_dir
from .refs import validate_name, validate_tag
from .staging import fsync_dir, write_synced

REMOVED_DIR = ".removed"  # <name> -> the highest version ever removed (read by rebuild only)


@dataclass
class RebuildReport:
    """What a rebuild found: entries indexed, tags set, counters, and folders left out (with why)."""

    indexed: list[str] = field(default_factory=list)  # refs, by name then version
    tags: dict[str, str] = field(default_factory=dict)  # "name@tag" -> "name@version"
    last_versions: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"indexed": self.indexed, "tags": self.tags, "last_versions": self.last_versions,
                "problems": self.problems}


def version_folders(adapters: Path) -> list[tuple[str, int]]:
    """``(name, version)`` of every ``adapters/<name>/<version>/`` that holds a manifest file."""
    found = []
    for name_dir in sorted(adapters.iterdir()) if adapters.is_dir() else []:
        if not name_dir.is_dir() or name_dir.is_symlink():
            continue
        for entry in sorted(name_dir.iterdir()):
            if entry.name.isascii() and entry.name.isdigit() and (entry / MANIFEST_FILE).exists():
                found.append((name_dir.name, int(entry.name)))
    return found


def write_removed_mark(root: Path, name: str, version: int) -> None:
    """Record that ``name@version`` (and everything below it) was handed out, before removing it."""
    folder = root / REMOVED_DIR
    folder.mkdir(exist_ok=True)
    marks = removed_versions(root)
    if marks.get(name, 0) >= version:
        return
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    write_synced(temporary, f"{version}\n".encode())
    os.replace(temporary, folder / name)
    fsync_dir(folder)


def removed_versions(root: Path) -> dict[str, int]:
    """``{name: highest removed version}`` from the marks ``remove`` leaves."""
    marks = {}
    folder = root / REMOVED_DIR
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            marks[validate_name(path.name)] = int(read_regular(path, limit=64).decode().strip())
        except (AdapterHubError, OSError, ValueError):
            continue
    return marks


def rebuild_index(index: RegistryIndex, adapters: Path, removed: dict[str, int]) -> RebuildReport:
    """Replace the index's rows with every verifying version folder under ``adapters`` (one transaction)."""
    report = RebuildReport()

    def scan(old_versions: dict[str, int], old_tags: dict[tuple[str, str], int]) -> Rebuilt:
        manifests, last = [], dict(old_versions)
        for name, version in removed.items():
            last[name] = max(last.get(name, 0), version)
        for name, version in version_folders(adapters):
            last[name] = max(last.get(name, 0), version)
            manifest, problem = _verified_manifest(adapters / name / str(version), name, version)
            if problem:
                report.problems.append(f"{name}@{version}: {problem}; not indexed (the folder is left as it is)")
            else:
                manifests.append(manifest)
        present = {(m["name"], m["version"]) for m in manifests}
        kept = {key: version for key, version in old_tags.items() if (key[0], version) in present}
        tags = dict(kept)
        for manifest in sorted(manifests, key=lambda m: m["version"]):  # the newest version listing a tag wins
            for tag in manifest.get("tags") or []:
                if (manifest["name"], tag) not in kept and _is_tag(tag):
                    tags[(manifest["name"], tag)] = manifest["version"]
        report.indexed = [f"{m['name']}@{m['version']}" for m in sorted(manifests, key=lambda m: (m["name"],
                                                                                                   m["version"]))]
        report.tags = {f"{name}@{tag}": f"{name}@{version}" for (name, tag), version in sorted(tags.items())}
        report.last_versions = dict(sorted(last.items()))
        return Rebuilt(manifests=manifests, last_versions=last, tags=tags)

    index.rebuild(scan)
    return report


def _is_tag(tag: Any) -> bool:
    try:
        validate_tag(tag)
        return True
    except AdapterHubError:
        return False


def _verified_manifest(folder: Path, name: str, version: int) -> tuple[dict[str, Any] | None, str | None]:
    """The folder's manifest if the folder is a complete, verifying entry; else ``(None, why)``."""
    try:
        validate_name(name)
        manifest = parse_json(read_regular(folder / MANIFEST_FILE, limit=MAX_JSON_BYTES), where=str(folder / MANIFEST_FILE))
        if manifest.get("name") != name or manifest.get("version") != version:
            return None, (f"its manifest names {manifest.get('name')!r}@{manifest.get('version')!r}, not the folder's "
                          f"{name}@{version}")
        files = manifest.get("files")
        if not isinstance(files, dict) or set(files) != set(ADAPTER_FILES):
            return None, f"its manifest lists files {sorted(files) if isinstance(files, dict) else files!r}"
        for file, expected in files.items():
            check_file(read_regular(folder / file), expected, where=str(folder / file), ref=f"{name}@{version}")
        adapter = read_adapter_dir(folder)
        if manifest.get("method") != adapter.method or not isinstance(manifest.get("created"), str):
            return None, "its manifest's method or creation time is missing or wrong"
        domain, base = manifest.get("domain"), manifest.get("base")
        if domain is not None:
            validate_name(domain, what="domain")
        if not isinstance(base, dict) or not isinstance(base.get("fingerprint"), (str, type(None))):
            return None, "its manifest's base is not an object with a fingerprint"
    except FileNotFoundError as error:
        return None, f"{error.filename or error} is missing"
    except (AdapterHubError, OSError, KeyError, TypeError) as error:
        return None, str(error) if isinstance(error, AdapterHubError) else f"{type(error).__name__}: {error}"
    return manifest, None
