"""Issue 13: the registry survives losing its index, and every file it takes in or hands out is checked.

* a lost index (deleted, zero bytes, replaced by an empty one) is refused, never read as an empty
  registry; ``rebuild_index`` restores every entry, its tags and its version counters;
* ``verify`` reports (never crashes or hangs on) directories, FIFOs and damaged index rows;
* safetensors are checked whole (dtype, shape, offsets, coverage) and ``adapter_config.json`` values too;
* names full-match (no trailing newline, ASCII versions only);
* a cleaner racing the staging area never fails an add; a full disk is one clear error;
* a read-only registry is readable, and writing to it is one clear error.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from adapterhub.cli import main
from adapterhub.errors import (IndexLostError, IntegrityError, InvalidAdapterError, InvalidNameError,
                               ReadOnlyRegistryError, StorageError)
from adapterhub.registry import Registry
from adapterhub.registry.manifest import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, file_entry
from adapterhub.registry.refs import parse_ref, validate_name
from adapterhub.registry.store import ADAPTERS_DIR, INDEX_FILE, STAGING_DIR
from tests.helpers.read_only import read_only


@pytest.fixture
def seeded(tmp_path, lora_dir, prefix_dir) -> Registry:
    """legal@1 (tag prod), legal@2 (prefix), fin@1, and old@1..3 with old@3 removed."""
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "legal", domain="legal", tags=["prod"])
    registry.add(prefix_dir, "legal", domain="legal")
    registry.add(lora_dir, "fin", domain="finance")
    for _ in range(3):
        registry.add(lora_dir, "old")
    registry.remove("old@3")
    return registry


def _refs(registry: Registry) -> list[str]:
    return [record.ref for record in registry.list()]


def _folders(registry: Registry) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in (registry.root / ADAPTERS_DIR).glob("*/*"))


# --- 1. a lost index ---------------------------------------------------------------------------
def _delete(index: Path) -> None:
    for path in index.parent.glob(INDEX_FILE + "*"):
        path.unlink()


def _zero_bytes(index: Path) -> None:
    _delete(index)
    index.write_bytes(b"")


def _empty_index(index: Path) -> None:
    _delete(index)
    Registry(index.parent.parent / "elsewhere").list()  # a fresh registry's index: schema, no rows
    os.replace(index.parent.parent / "elsewhere" / INDEX_FILE, index)


@pytest.mark.parametrize("lose", [_delete, _zero_bytes, _empty_index])
def test_a_lost_index_is_refused_then_rebuilt_with_tags_and_counters(seeded, lora_dir, lose):
    before, folders = _refs(seeded), _folders(seeded)
    lose(seeded.root / INDEX_FILE)
    fresh = Registry(seeded.root)  # a new process: nothing cached
    for operation in (fresh.list, fresh.verify, fresh.gc, lambda: fresh.get("legal"),
                      lambda: fresh.add(lora_dir, "legal")):
        with pytest.raises(IndexLostError, match="rebuild-index"):
            operation()
    assert _folders(fresh) == folders  # gc deleted nothing, add reused nothing

    report = fresh.rebuild_index()
    assert report.indexed == before and report.problems == []
    assert report.tags == {"legal@prod": "legal@1"} and fresh.get("legal@prod").ref == "legal@1"
    assert fresh.verify() == [] and fresh.gc() == [] and _refs(fresh) == before
    assert fresh.add(lora_dir, "old").ref == "old@4"  # old@3 was handed out once: never again
    assert fresh.add(lora_dir, "legal").ref == "legal@3"


def test_an_index_deleted_under_a_running_process_is_not_recreated(seeded, lora_dir):
    seeded.list()
    _delete(seeded.root / INDEX_FILE)
    with pytest.raises(IndexLostError, match="rebuild-index"):
        seeded.add(lora_dir, "legal")
    assert not (seeded.root / INDEX_FILE).exists()


def test_rebuild_from_a_readable_index_keeps_moved_tags_and_counters(seeded, lora_dir):
    seeded.tag("legal@2", "prod")  # moved after the add: only the index knows
    seeded.remove("fin@1")
    with sqlite3.connect(seeded.root / INDEX_FILE) as db:  # damage one row
        db.execute("UPDATE adapters SET manifest = substr(manifest, 1, 40) WHERE name = 'legal' AND version = 1")
    report = seeded.rebuild_index()
    assert report.indexed == ["legal@1", "legal@2", "old@1", "old@2"]
    assert seeded.get("legal@prod").ref == "legal@2" and seeded.verify() == []
    assert seeded.add(lora_dir, "fin").ref == "fin@2"


def test_rebuild_leaves_out_folders_that_do_not_verify(seeded):
    (seeded.get("fin@1").path / WEIGHTS_FILE).write_bytes(b"tampered")
    _delete(seeded.root / INDEX_FILE)
    report = seeded.rebuild_index()
    assert "fin@1" not in report.indexed and len(report.problems) == 1 and "fin@1" in report.problems[0]
    assert (seeded.root / ADAPTERS_DIR / "fin" / "1").is_dir()


def test_cli_rebuild_index(seeded, capsys):
    _zero_bytes(seeded.root / INDEX_FILE)
    assert main(["registry", "list", "--root", str(seeded.root)]) == 2
    assert "adapterhub registry rebuild-index" in capsys.readouterr().err
    assert main(["registry", "rebuild-index", "--root", str(seeded.root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["indexed"] == ["fin@1", "legal@1", "legal@2", "old@1", "old@2"] and report["problems"] == []
    assert report["last_versions"]["old"] == 3


# --- 3. verify reports, never crashes or hangs --------------------------------------------------
@pytest.mark.timeout(60)
def test_verify_reports_directories_fifos_and_damaged_rows(seeded, tmp_path):
    weights = seeded.get("legal@1").path / WEIGHTS_FILE
    weights.unlink()
    weights.mkdir()
    config = seeded.get("fin@1").path / CONFIG_FILE
    config.unlink()
    os.mkfifo(config)
    with sqlite3.connect(seeded.root / INDEX_FILE) as db:
        row = db.execute("SELECT manifest FROM adapters WHERE name = 'legal' AND version = 2").fetchone()[0]
        flipped = row.replace('"files"', '"filet"')  # one flipped byte in a key
        db.execute("UPDATE adapters SET manifest = ? WHERE name = 'legal' AND version = 2", (flipped,))
        row = db.execute("SELECT manifest FROM adapters WHERE name = 'old' AND version = 1").fetchone()[0]
        db.execute("UPDATE adapters SET manifest = ? WHERE name = 'old' AND version = 1",
                   (row[:10] + chr(ord(row[10]) ^ 0x01) + row[11:],))  # one flipped bit: no longer JSON
    problems = seeded.verify()
    assert [p.split(":")[0] for p in problems] == ["fin@1", "legal@1", "legal@2", "old@1"], problems
    assert "FIFO" in problems[0] and "directory" in problems[1] and "rebuild-index" in problems[2]
    for ref, error in (("fin@1", IntegrityError), ("legal@1", IntegrityError), ("legal@2", IntegrityError)):
        with pytest.raises(error):
            seeded.load(ref)
    with pytest.raises(IntegrityError, match="rebuild-index"):
        seeded.list()
    assert main(["registry", "verify", "--root", str(seeded.root)]) == 1


# --- 4. safetensors checked whole -----------------------------------------------------------------
def _split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join(header: dict | str, body: bytes) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text)) + text + body


def _damaged_weights(lora: Path, kind: str) -> bytes:
    header, body = _split((lora / WEIGHTS_FILE).read_bytes())
    names = sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][0])
    first, second = header[names[0]], header[names[1]]
    if kind == "negative shape":
        first["shape"] = [-first["shape"][0], -first["shape"][1]]
    elif kind == "float shape":
        first["shape"] = [float(d) for d in first["shape"]]
    elif kind == "unknown dtype":
        first["dtype"] = "Q7"
    elif kind == "overlap":
        second["data_offsets"] = [first["data_offsets"][0], first["data_offsets"][1]]
    elif kind == "size differs from shape":
        first["shape"] = [first["shape"][0], first["shape"][1] * 2]
    elif kind == "trailing junk":
        return _join(header, body + b"\0" * 2_000_000)
    elif kind == "gap":
        return _join({n: {**m, "data_offsets": [o + 4 for o in m["data_offsets"]]} if n != "__metadata__" else m
                      for n, m in header.items()}, b"\0" * 4 + body)
    elif kind == "duplicate key":
        text = json.dumps(header)
        return _join(text[:-1] + f', "{names[0]}": ' + json.dumps(first) + "}", body)
    elif kind == "header length overflow":
        return struct.pack("<Q", 2**63) + (lora / WEIGHTS_FILE).read_bytes()[8:]
    return _join(header, body)


SAFETENSORS_DAMAGE = ["negative shape", "float shape", "unknown dtype", "overlap", "size differs from shape",
                      "trailing junk", "gap", "duplicate key", "header length overflow"]


@pytest.mark.parametrize("kind", SAFETENSORS_DAMAGE)
def test_safetensors_are_validated_whole_at_import_and_verify(seeded, lora_dir, tmp_path, kind):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / CONFIG_FILE).write_bytes((lora_dir / CONFIG_FILE).read_bytes())
    data = _damaged_weights(lora_dir, kind)
    (bad / WEIGHTS_FILE).write_bytes(data)
    before = _refs(seeded)
    with pytest.raises(InvalidAdapterError, match="not a valid safetensors file") as caught:
        seeded.add(bad, "legal")
    assert len(str(caught.value)) < 400 and _refs(seeded) == before

    # an entry stored before this check (files and checksums consistent): verify reports it
    record = seeded.get("fin@1")
    (record.path / WEIGHTS_FILE).write_bytes(data)
    manifest = {**record.manifest, "files": {**record.manifest["files"], WEIGHTS_FILE: file_entry(data)}}
    manifest.pop("tags")
    manifest["tags"] = []
    (record.path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with sqlite3.connect(seeded.root / INDEX_FILE) as db:
        db.execute("UPDATE adapters SET manifest = ? WHERE name = 'fin'", (json.dumps(manifest, sort_keys=True),))
    problems = seeded.verify()
    assert len(problems) == 1 and problems[0].startswith("fin@1") and "not a valid safetensors" in problems[0]


# --- 5. adapter_config.json values ------------------------------------------------------------------
@pytest.mark.parametrize("method, change, message", [
    ("lora", {"lora_alpha": float("nan")}, "lora_alpha must be a finite number"),
    ("lora", {"lora_alpha": float("inf")}, "lora_alpha must be a finite number"),
    ("lora", {"lora_alpha": None}, "lora_alpha is null"),
    ("lora", {"lora_alpha": "16"}, "lora_alpha must be a finite number"),
    ("lora", {"lora_alpha": True}, "lora_alpha must be a finite number"),
    ("lora", {"r": 0}, "r must be at least 1"),
    ("lora", {"r": "4"}, "r must be an integer"),
    ("lora", {"alpha_pattern": {"q_proj(": 8}}, "alpha_pattern key 'q_proj\\(' is not a valid regular expression"),
    ("lora", {"alpha_pattern": {"q_proj": float("nan")}}, "alpha_pattern\\['q_proj'\\] must be a finite number"),
    ("lora", {"alpha_pattern": ["q_proj"]}, "alpha_pattern must be an object"),
    ("lora", {"rank_pattern": {"v_proj": 0}}, "rank_pattern\\['v_proj'\\] must be at least 1"),
    ("lora", {"target_modules": {"q_proj": 1}}, "target_modules must be a string or a list of strings"),
    ("lora", {"peft_type": ["LORA"]}, "peft_type is a list, not a string"),
    ("lora", {"peft_type": {"LORA": 1}}, "peft_type is a dict, not a string"),
    ("lora", {"peft_type": 7}, "peft_type is a int, not a string"),
    ("prefix", {"num_attention_heads": 0}, "num_attention_heads must be at least 1"),
    ("prefix", {"num_virtual_tokens": "many"}, "num_virtual_tokens must be an integer"),
    ("prefix", {"token_dim": None}, "token_dim is missing"),
])
def test_adapter_config_values_are_checked_at_import(seeded, lora_dir, prefix_dir, tmp_path, method, change, message):
    source = lora_dir if method == "lora" else prefix_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    config = {**json.loads((source / CONFIG_FILE).read_text()), **change}
    (bad / CONFIG_FILE).write_text(json.dumps(config))  # json writes NaN / Infinity, as Python's reader accepts
    (bad / WEIGHTS_FILE).write_bytes((source / WEIGHTS_FILE).read_bytes())
    before = _refs(seeded)
    with pytest.raises(InvalidAdapterError, match=message) as caught:
        seeded.add(bad, "legal")
    assert "\n" not in str(caught.value) and _refs(seeded) == before


# --- 6. names full-match ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["legal\n", "legal\r\n", "lé", "legal\t"])
def test_names_full_match(name):
    with pytest.raises(InvalidNameError):
        validate_name(name)


@pytest.mark.parametrize("ref", ["ok@\uff11", "ok@\u0661", "ok@1\n", "legal\n@1", "ok@\u00b2"])
def test_references_take_ascii_versions_only(seeded, ref):
    with pytest.raises(InvalidNameError):
        parse_ref(ref)
    with pytest.raises(InvalidNameError):
        seeded.get(ref)


# --- 7. the staging area under a racing cleaner --------------------------------------------------
def test_a_cleaner_between_mkdtemp_and_lock_never_fails_an_add(seeded, lora_dir, monkeypatch):
    import adapterhub.registry.staging as staging

    original, raced = tempfile.mkdtemp, []

    def mkdtemp_then_a_cleaner_runs(*args, **kwargs):
        path = original(*args, **kwargs)
        if not raced:  # another process's gc/add cleanup takes the folder before we lock it
            raced.extend(staging.StagingArea(seeded.root / STAGING_DIR).clean())
        return path

    monkeypatch.setattr(staging.tempfile, "mkdtemp", mkdtemp_then_a_cleaner_runs)
    assert seeded.add(lora_dir, "legal").ref == "legal@3"
    assert len(raced) == 1 and seeded.verify() == []


WRITER = """
import sys
from adapterhub.registry import Registry
registry = Registry(sys.argv[1])
for _ in range(int(sys.argv[3])):
    registry.add(sys.argv[2], "race")
"""
GC_LOOP = """
import sys, time
from pathlib import Path
from adapterhub.registry import Registry
registry = Registry(sys.argv[1])
while not Path(sys.argv[2]).exists():
    registry.gc()
"""


def test_concurrent_writers_and_gc_never_fail_an_add(tmp_path, lora_dir):
    root, done = tmp_path / "registry", tmp_path / "done"
    Registry(root).add(lora_dir, "race")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = [sys.executable, "-c"]
    cleaner = subprocess.Popen([*run, GC_LOOP, str(root), str(done)], env=env, stderr=subprocess.PIPE, text=True)
    writers = [subprocess.Popen([*run, WRITER, str(root), str(lora_dir), "6"], env=env, stderr=subprocess.PIPE,
                                text=True) for _ in range(6)]
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    done.touch()
    cleaner_errors = cleaner.communicate(timeout=60)[1]
    assert [writer.returncode for writer in writers] == [0] * 6, errors
    assert cleaner.returncode == 0, cleaner_errors
    assert _refs(Registry(root)) == [f"race@{v}" for v in range(1, 38)] and Registry(root).verify() == []


# --- 10. read-only registries ------------------------------------------------------------------------
def test_a_read_only_registry_is_readable_and_refuses_writes_clearly(seeded, lora_dir, tiny_base, tmp_path, capsys):
    refs = _refs(seeded)
    with read_only(seeded.root) as root:
        registry = Registry(root)
        assert _refs(registry) == refs and registry.get("legal@prod").ref == "legal@1"
        assert registry.verify() == [] and registry.load("fin@1", base=tiny_base).tensors
        assert registry.export("legal@1", tmp_path / "out").is_dir()
        for write in (lambda: registry.add(lora_dir, "legal"), lambda: registry.tag("legal@2", "prod"),
                      lambda: registry.remove("fin@1"), registry.gc):
            with pytest.raises(ReadOnlyRegistryError, match="read-only"):
                write()
        assert main(["registry", "list", "--root", str(root), "--json"]) == 0
        assert [row["ref"] for row in json.loads(capsys.readouterr().out)] == refs
        assert main(["registry", "import", str(lora_dir), "--name", "x", "--root", str(root)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: registry") and "read-only" in err and "Traceback" not in err
    assert _refs(seeded) == refs


# --- 11. disk full and unwritable paths ---------------------------------------------------------------
def test_a_full_disk_during_add_is_one_clear_error_and_leaves_nothing(seeded, lora_dir, monkeypatch):
    import adapterhub.registry.entries as entries

    def full(path, data, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(entries, "write_synced", full)
    before = _folders(seeded)
    with pytest.raises(StorageError, match="free disk space") as caught:
        seeded.add(lora_dir, "legal")
    assert "nothing was registered" in str(caught.value)
    monkeypatch.undo()
    assert _folders(seeded) == before and not any((seeded.root / STAGING_DIR).iterdir())
    assert seeded.add(lora_dir, "legal").ref == "legal@3"


def test_a_really_full_disk(tmp_path, lora_dir):
    """A 1 MiB tmpfs fills up: every add either lands whole or fails with StorageError; none are lost."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        registry, added = Registry(disk / "registry"), []
        with pytest.raises(StorageError, match="free disk space|disk holding"):
            for _ in range(200):
                added.append(registry.add(lora_dir, "full").ref)
        assert added and _refs(registry) == added and registry.verify() == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_export_to_an_unwritable_path_is_one_clear_error(seeded, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot export legal@1"):
        seeded.export("legal@1", blocker / "out")
    assert main(["registry", "export", "legal@1", str(blocker / "out"), "--root", str(seeded.root)]) == 2
    assert "Traceback" not in capsys.readouterr().err
