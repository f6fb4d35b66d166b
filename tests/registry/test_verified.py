"""Issue 18: a load hashes only files that changed since they last verified; nothing weakens tamper detection.

* a second load, and the first load of a fresh ``Registry`` (a new process), hash nothing;
* a same-size rewrite with its mtime put back (``os.utime``) is caught: ctime moved;
* a copied registry (other inodes and ctimes) hashes again and still loads;
* a read-only registry (or an index written before the record existed) loads by hashing and writes nothing;
* ``verify`` always hashes, and finds what stat cannot see;
* a record is never made from bytes that might share a timestamp tick with a later write.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from tests.helpers.read_only import read_only

from adapterhub.errors import IntegrityError
from adapterhub.registry import Registry, index, verified
from adapterhub.registry.files import ObservedRead
from adapterhub.registry.manifest import CONFIG_FILE, WEIGHTS_FILE
from adapterhub.registry.store import INDEX_FILE


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """The sizes of the blobs sha256 is asked to hash, from now on."""
    sizes: list[int] = []
    original = hashlib.sha256

    def counting(data: bytes = b"", **kwargs):
        sizes.append(len(data))
        return original(data, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting)
    return sizes


def _settle() -> None:
    time.sleep(verified.SETTLE_NS / 1e9 + 0.01)


def _weights_size(registry: Registry, ref: str) -> int:
    return registry.get(ref).manifest["files"][WEIGHTS_FILE]["size"]


def _recorded(registry: Registry, ref: str) -> dict[str, tuple[str, str]]:
    record = registry.get(ref)
    with registry._index.read() as db:
        return index.verified_files(db, record.name, record.version)


@pytest.fixture
def stored(tmp_path, lora_dir) -> Registry:
    """legal@1, its files settled and recorded by a first load."""
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal")
    _settle()
    registry.load("legal@1")
    assert set(_recorded(registry, "legal@1")) == {CONFIG_FILE, WEIGHTS_FILE}
    return registry


def test_a_second_load_and_a_fresh_processs_first_load_hash_nothing(stored, hashed):
    size = _weights_size(stored, "legal@1")
    first = stored.load("legal@1")
    fresh = Registry(stored.root).load("legal@1")  # a new Registry keeps nothing in memory: like a new process
    assert hashed == []
    assert first.tensors.keys() == fresh.tensors.keys() and size > 0


def test_an_unrecorded_entry_is_hashed_once_then_recorded(tmp_path, lora_dir, hashed):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal")  # a tiny add finishes before its timestamps settle: not recorded
    assert _recorded(registry, "legal@1") == {}
    _settle()
    hashed.clear()
    registry.load("legal@1")
    assert _weights_size(registry, "legal@1") in hashed
    hashed.clear()
    Registry(registry.root).load("legal@1")
    assert hashed == []


def test_an_add_whose_files_have_settled_records_them(tmp_path, lora_dir, monkeypatch, hashed):
    monkeypatch.setattr(verified, "SETTLE_NS", 0)  # as when writing and fsyncing 20 MB took longer than it
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal")
    assert set(_recorded(registry, "legal@1")) == {CONFIG_FILE, WEIGHTS_FILE}
    hashed.clear()
    Registry(registry.root).load("legal@1")
    assert hashed == []


def _rewrite_same_size_keep_mtime(path: Path) -> None:
    """Flip the last byte in place (same inode, same size) and put atime and mtime back."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns


@pytest.mark.parametrize("file", [WEIGHTS_FILE, CONFIG_FILE])
def test_a_same_size_rewrite_with_its_mtime_restored_is_caught(stored, file):
    path = stored.get("legal@1").path / file
    _rewrite_same_size_keep_mtime(path)
    for registry in (stored, Registry(stored.root)):
        with pytest.raises(IntegrityError, match="does not match its recorded sha256") as caught:
            registry.load("legal@1")
        assert str(path) in str(caught.value)
    assert len(stored.verify("legal@1")) == 1


def test_a_copied_registry_hashes_again_and_loads(stored, tmp_path, hashed):
    copy = tmp_path / "copy"
    shutil.copytree(stored.root, copy)  # copy2: same bytes and mtimes, other inodes and ctimes
    moved = Registry(copy)
    size = _weights_size(moved, "legal@1")
    hashed.clear()
    assert moved.load("legal@1").tensors
    assert size in hashed
    _settle()
    moved.load("legal@1")  # this load recorded the copy's files only if they had settled: now they have
    hashed.clear()
    Registry(copy).load("legal@1")
    assert hashed == []
    assert stored.load("legal@1").tensors and size not in hashed  # the original's record still holds


def _index_files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.glob(INDEX_FILE + "*"))}


@pytest.mark.parametrize("old_index", [False, True], ids=["unrecorded", "index-before-the-record-table"])
def test_a_read_only_registry_loads_by_hashing_and_writes_nothing(tmp_path, lora_dir, hashed, old_index):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal")
    if old_index:
        with sqlite3.connect(registry.root / INDEX_FILE) as db:
            db.execute("DROP TABLE verified")
    _settle()
    size = _weights_size(registry, "legal@1")
    before = _index_files(registry.root)
    with read_only(registry.root) as root:
        for _ in range(2):
            hashed.clear()
            assert Registry(root).load("legal@1").tensors
            assert size in hashed
        assert Registry(root).verify() == []
    assert _index_files(registry.root) == before


def test_a_read_only_registry_uses_what_was_recorded(stored, hashed):
    with read_only(stored.root) as root:
        hashed.clear()
        assert Registry(root).load("legal@1").tensors
        assert hashed == []


def test_verify_always_hashes_and_finds_what_stat_cannot(stored, hashed):
    size = _weights_size(stored, "legal@1")
    assert stored.verify("legal@1") == [] and size in hashed
    hashed.clear()
    assert stored.verify() == [] and size in hashed
    path = stored.get("legal@1").path / WEIGHTS_FILE  # a change stat cannot see (a bit flipped on the disk):
    _rewrite_same_size_keep_mtime(path)  # here, a rewrite whose new identity is then recorded as verified
    with sqlite3.connect(stored.root / INDEX_FILE) as db:
        db.execute("UPDATE verified SET identity = ? WHERE file = ?", (verified.identity(path.stat()), WEIGHTS_FILE))
    hashed.clear()
    stored.load("legal@1")  # trusts the record: this is what verify is for
    assert size not in hashed
    problems = stored.verify("legal@1")
    assert len(problems) == 1 and "does not match its recorded sha256" in problems[0]


def test_verify_records_what_checks_out(tmp_path, lora_dir, hashed):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal")
    _settle()
    assert registry.verify() == [] and set(_recorded(registry, "legal@1")) == {CONFIG_FILE, WEIGHTS_FILE}
    hashed.clear()
    registry.load("legal@1")
    assert hashed == []


def test_removing_an_entry_drops_its_record(stored, lora_dir):
    stored.remove("legal@1")
    with sqlite3.connect(stored.root / INDEX_FILE) as db:
        assert db.execute("SELECT count(*) FROM verified").fetchone()[0] == 0


def test_a_load_never_waits_for_a_busy_writer_to_record(tmp_path, lora_dir, hashed):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal")
    _settle()
    writer = sqlite3.connect(registry.root / INDEX_FILE, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holding the write lock (an add, a rebuild)
    try:
        start = time.monotonic()
        assert registry.load("legal@1").tensors
        assert time.monotonic() - start < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert _recorded(registry, "legal@1") == {}


def _read(before: os.stat_result, after: os.stat_result | None = None, *, started_ns: int) -> ObservedRead:
    return ObservedRead(data=b"", before=before, after=after or before, started_ns=started_ns)


def _stat(*, ctime_ns: int, mtime_ns: int | None = None, size: int = 10, ino: int = 7) -> os.stat_result:
    mtime_ns = ctime_ns if mtime_ns is None else mtime_ns
    return os.stat_result((0o100644, ino, 1, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, ctime_ns))


def test_a_record_needs_settled_unchanging_timestamps():
    changed = 1_700_000_000_123_456_789
    old = _stat(ctime_ns=changed)
    assert verified.recordable(_read(old, started_ns=changed + verified.SETTLE_NS)) == verified.identity(old)
    assert verified.recordable(_read(old, started_ns=changed + verified.SETTLE_NS - 1)) is None  # same tick, maybe
    assert verified.recordable(_read(old, _stat(ctime_ns=changed + 1), started_ns=changed + 10**10)) is None
    whole_seconds = _stat(ctime_ns=1_700_000_000 * 10**9)  # a filesystem keeping whole seconds: wait longer
    assert verified.recordable(_read(whole_seconds, started_ns=1_700_000_001 * 10**9)) is None
    assert verified.recordable(_read(whole_seconds, started_ns=1_700_000_003 * 10**9)) is not None


def test_trust_needs_the_recorded_sha256_and_identity():
    old = _stat(ctime_ns=1_700_000_000_123_456_789)
    read, stamp = _read(old, started_ns=0), verified.identity(old)
    assert verified.trusted(read, ("ab", stamp), "ab")
    assert not verified.trusted(read, ("ab", stamp), "cd")  # recorded for other bytes
    assert not verified.trusted(read, None, "ab")
    for other in (_stat(ctime_ns=old.st_ctime_ns + 1), _stat(ctime_ns=old.st_ctime_ns, size=11),
                  _stat(ctime_ns=old.st_ctime_ns, ino=8)):
        assert not verified.trusted(_read(other, started_ns=0), ("ab", stamp), "ab")
    assert not verified.trusted(_read(old, _stat(ctime_ns=old.st_ctime_ns + 1), started_ns=0), ("ab", stamp), "ab")
