"""Crash safety and concurrency of the registry, with real processes.

* SIGKILL at random instants of a loop of ``add``: after every kill the index
  shows only complete, verifying entries, every acknowledged add is there, and
  whatever the kill left behind is invisible and removed by the next add/gc.
* SIGKILL at each named step of add and remove (deterministic).
* 4 processes x 10 adds of one name get versions 1..40, none lost or doubled.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapterhub.registry import Registry
from adapterhub.registry.store import ADAPTERS_DIR, STAGING_DIR

REPO = Path(__file__).resolve().parents[2]
KILLS = 25

ADD_LOOP = """
import sys, time
from pathlib import Path
from adapterhub.registry import Registry
root, source, name, count, go = sys.argv[1:6]
registry = Registry(root)
print("ready", flush=True)
while go != "-" and not Path(go).exists():
    time.sleep(0.001)
added = 0
while int(count) == 0 or added < int(count):
    print(registry.add(source, name).version, flush=True)
    added += 1
"""

CRASH_AT = """
import os, signal, sys
import adapterhub.registry.entries as entries_module, adapterhub.registry.index as index_module
from adapterhub.registry import Registry
from adapterhub.registry.staging import StagingArea
root, source, operation, step = sys.argv[1:5]
owner, attribute = step.rsplit(".", 1)
owner = {"entries": entries_module, "registry_index": index_module, "StagingArea": StagingArea}[owner]
setattr(owner, attribute, lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL))
registry = Registry(root)
registry.add(source, "crash") if operation == "add" else registry.remove("crash@1")
"""


def spawn(script: str, *args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def leftovers(registry: Registry) -> tuple[list[Path], list[Path]]:
    """``(unindexed version folders, staging entries)`` — invisible, but to be cleaned."""
    indexed = {(r.name, str(r.version)) for r in registry.list()}
    folders = sorted((registry.root / ADAPTERS_DIR).glob("*/*"))
    staging = registry.root / STAGING_DIR
    return ([f for f in folders if (f.parent.name, f.name) not in indexed],
            sorted(staging.iterdir()) if staging.is_dir() else [])


def assert_consistent(registry: Registry) -> list[int]:
    """Every indexed entry is complete and verifies; versions are distinct. Returns them."""
    versions = [r.version for r in registry.list()]
    assert versions == sorted(set(versions))
    assert registry.verify() == []
    for record in registry.list():
        assert sorted(p.name for p in record.path.iterdir()) == sorted([*record.manifest["files"], "adapterhub.json"])
    return versions


def test_sigkill_at_random_points_of_add(tmp_path, lora_dir):
    rng = random.Random(20240601)
    registry = Registry(tmp_path / "registry")
    acknowledged: set[int] = set()
    left_orphans = left_litter = 0
    for _ in range(KILLS):
        child = spawn(ADD_LOOP, registry.root, lora_dir, "kill", 0, "-")
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.08))
        child.send_signal(signal.SIGKILL)
        child.wait()
        acknowledged.update(int(v) for v in child.stdout.read().split())
        child.stdout.close()
        child.stderr.close()
        versions = assert_consistent(registry)
        assert acknowledged <= set(versions)  # no acknowledged add is lost
        orphans, litter = leftovers(registry)
        left_orphans += bool(orphans)
        left_litter += bool(litter)
    final = registry.add(lora_dir, "kill")  # no leftover trips it, and it cleans them
    assert final.version > max(acknowledged)
    assert leftovers(registry) == ([], [])
    assert registry.gc() == [] and assert_consistent(registry)[-1] == final.version
    print(f"\nkill test: {KILLS} SIGKILLs, {len(acknowledged)} acknowledged adds, {len(registry.list())} entries, "
          f"kills leaving an unindexed folder: {left_orphans}, leaving staging litter: {left_litter}, problems: 0")


@pytest.mark.parametrize("cleaner", ["add", "gc"])
@pytest.mark.parametrize("operation, step, visible, orphan", [
    ("add", "entries.write_synced", ["crash@1"], None),  # while staging files
    ("add", "entries.fsync_dir", ["crash@1"], None),  # holding the lock, before the rename
    ("add", "registry_index.insert", ["crash@1"], "crash/2"),  # renamed into place, not indexed
    ("remove", "StagingArea.discard", [], "crash/1"),  # unindexed, files not yet discarded
])
def test_sigkill_at_each_step(tmp_path, lora_dir, operation, step, visible, orphan, cleaner):
    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "crash")
    child = spawn(CRASH_AT, registry.root, lora_dir, operation, step)
    _, errors = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, errors
    assert [r.ref for r in registry.list()] == visible and registry.verify() == []
    orphans, litter = leftovers(registry)
    assert orphans == ([registry.root / ADAPTERS_DIR / orphan] if orphan else [])
    assert bool(litter) == (orphan is None)  # a kill before the rename leaves a staging folder
    if cleaner == "gc":
        emptied = [] if visible else [registry.root / ADAPTERS_DIR / "crash"]  # the name folder goes too
        assert sorted(registry.gc()) == sorted([*orphans, *litter, *emptied])
    assert registry.add(lora_dir, "crash").version == 2
    assert leftovers(registry) == ([], []) and registry.gc() == []
    assert_consistent(registry)


def test_four_processes_adding_one_name_get_distinct_versions(tmp_path, lora_dir):
    root, go = tmp_path / "registry", tmp_path / "go"
    children = [spawn(ADD_LOOP, root, lora_dir, "same", 10, go) for _ in range(4)]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()
    results = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * 4, [errors for _, errors in results]
    per_process = [[int(v) for v in out.split()] for out, _ in results]
    assert all(len(v) == 10 and v == sorted(v) for v in per_process)
    assert sorted(v for versions in per_process for v in versions) == list(range(1, 41))
    registry = Registry(root)
    assert assert_consistent(registry) == list(range(1, 41))
    interleaved = sum(a + 1 != b for versions in per_process for a, b in zip(versions, versions[1:]))
    print(f"\nconcurrency: 4 processes x 10 adds -> 40 entries, versions 1..40, 0 problems, "
          f"{interleaved} interleavings between processes")


def test_a_failure_after_placing_takes_the_folder_back_out(tmp_path, lora_dir, monkeypatch):
    import adapterhub.registry.index as index_module

    registry = Registry(tmp_path / "registry")
    registry.add(lora_dir, "crash")

    def broken_insert(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "insert", broken_insert)
    with pytest.raises(OSError, match="disk full"):
        registry.add(lora_dir, "crash")
    assert [r.ref for r in registry.list()] == ["crash@1"] and leftovers(registry) == ([], [])
    monkeypatch.undo()
    assert registry.add(lora_dir, "crash").version == 2


GC_LOOP = """
import sys, time
from pathlib import Path
from adapterhub.registry import Registry
registry, removed = Registry(sys.argv[1]), 0
while not Path(sys.argv[2]).exists():
    removed += len(registry.gc())
    time.sleep(0.005)
print(removed, flush=True)
"""
STORM_KILLS = int(os.environ.get("REGISTRY_STORM_KILLS", "120"))  # ~40 s on 2 quiet cores; raise it for soak runs


@pytest.mark.reliability
@pytest.mark.timeout(600)
def test_sigkill_storm_beside_a_gc_loop_then_the_index_is_lost_and_rebuilt(tmp_path, lora_dir):
    """Issue 13's measure: many SIGKILLs during adds while another process runs gc in a loop (the staging
    race), then the index is deleted: it is refused, rebuilt from the manifests, and no version is reused."""
    from adapterhub.errors import IndexLostError
    from adapterhub.registry.store import INDEX_FILE

    rng = random.Random(20261127)
    registry, done = Registry(tmp_path / "registry"), tmp_path / "done"
    registry.add(lora_dir, "storm")
    cleaner = spawn(GC_LOOP, registry.root, done)
    acknowledged: set[int] = {1}
    for kill in range(STORM_KILLS):
        child = spawn(ADD_LOOP, registry.root, lora_dir, "storm", 0, "-")
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        child.wait()
        acknowledged.update(int(v) for v in child.stdout.read().split())
        child.stdout.close()
        child.stderr.close()
        assert acknowledged <= {r.version for r in registry.list()}  # no acknowledged add is lost
        if kill % 50 == 49:
            assert_consistent(registry)
    done.touch()
    gc_output, gc_errors = cleaner.communicate(timeout=60)
    assert cleaner.returncode == 0, gc_errors  # the gc loop never failed either
    final = registry.add(lora_dir, "storm")
    before = [r.ref for r in registry.list()]
    assert leftovers(registry) == ([], []) and assert_consistent(registry)[-1] == final.version

    for path in registry.root.glob(INDEX_FILE + "*"):
        path.unlink()
    with pytest.raises(IndexLostError, match="rebuild-index"):
        Registry(registry.root).list()
    report = Registry(registry.root).rebuild_index()
    assert report.indexed == before and report.problems == []
    assert Registry(registry.root).add(lora_dir, "storm").version == final.version + 1
    print(f"\nstorm: {STORM_KILLS} SIGKILLs beside a gc loop ({int(gc_output)} leftovers removed by it), "
          f"{len(acknowledged)} acknowledged adds, {len(before)} entries, problems: 0; index deleted -> refused, "
          f"rebuilt {len(report.indexed)} entries, next version {final.version + 1}")
