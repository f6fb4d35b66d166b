"""Residency: pins taken through any door (a hub call, the stepper, a held lease) free their slot for waiters."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from adapterhub.runtime import AdapterHub
from adapterhub.runtime.mixing import Mix
from adapterhub.runtime.testing import make_random_adapters


@pytest.fixture(scope="module")
def dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("residency-adapters")
    return {f"lora-{i}": path for i, path in enumerate(make_random_adapters(tiny_base, root, 2, r=2))}


def _waiting_on_a_condition(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in ``threading.Condition.wait`` right now (read from its stack)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            return True
        frame = frame.f_back
    return False


@pytest.mark.timeout(60)
def test_a_load_waiting_behind_a_served_row_wakes_when_the_row_is_released(tiny_base, dirs):
    with AdapterHub(tiny_base, max_resident=1, slot_wait_s=5) as hub:
        stepper = hub.stepper()
        held = stepper.acquire(str(dirs["lora-0"]))  # a served row pins the only slot
        done: dict[str, float] = {}
        loader = threading.Thread(target=lambda: (hub.load(dirs["lora-1"]), done.setdefault("at", time.monotonic())))
        loader.start()
        deadline = time.monotonic() + 30
        while not _waiting_on_a_condition(loader):  # the load has read its adapter and waits for a slot
            assert loader.is_alive() and time.monotonic() < deadline, "the load never waited for a slot"
            time.sleep(0.005)
        released = time.monotonic()
        stepper.release(held)
        loader.join(30)
        late = done.get("at", float("inf")) - released
        assert late < 0.1, f"the load woke {late:.2f} s after the release"
        assert [info.name for info in hub.resident()] == ["lora-1"]


def _wait_until_waiting(thread: threading.Thread) -> None:
    deadline = time.monotonic() + 30
    while not _waiting_on_a_condition(thread):
        assert thread.is_alive() and time.monotonic() < deadline, "the load never waited for a slot"
        time.sleep(0.005)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", ["residency.pin", "stepper mix", "hub call"])
def test_every_release_wakes_a_waiting_load(tiny_base, dirs, tmp_path, door):
    """Whichever door pinned the slots (the residency, a mix a served row holds, a running hub call),
    the release wakes the load at once."""
    third = make_random_adapters(tiny_base, tmp_path, r=2, prefix="third")[0]
    with AdapterHub(tiny_base, max_resident=2, slot_wait_s=5) as hub:
        hub.load(dirs["lora-0"])
        hub.load(dirs["lora-1"])
        stepper, call_done, holder = hub.stepper(), threading.Event(), None
        if door == "residency.pin":
            held = [hub.residency.pin("lora-0"), hub.residency.pin("lora-1")]
            release = lambda: [hub.residency.unpin(entry) for entry in held]  # noqa: E731
        elif door == "stepper mix":
            lease = stepper.acquire("lora-0:0.5+lora-1:0.5")
            release = lambda: stepper.release(lease)  # noqa: E731
        else:
            def running_call() -> None:
                with hub.residency.pinned(["lora-0", Mix.of({"lora-0": 0.5, "lora-1": 0.5})]):
                    call_done.wait(30)

            holder = threading.Thread(target=running_call)
            holder.start()
            while [info.pins for info in hub.resident()] != [1, 1]:  # one pin per adapter, mix parts included
                assert holder.is_alive(), "the running call ended early"
                time.sleep(0.005)
            release = call_done.set
        done: dict[str, float] = {}
        loader = threading.Thread(target=lambda: (hub.load(third), done.setdefault("at", time.monotonic())))
        loader.start()
        _wait_until_waiting(loader)
        released = time.monotonic()
        release()
        loader.join(30)
        if holder is not None:
            holder.join(30)
        late = done.get("at", float("inf")) - released
        assert late < 0.1, f"the load woke {late:.2f} s after the release"
        assert all(info.pins == 0 for info in hub.resident()) and hub.resident()[0].name == "third-0"


def _count_pins_while_routing(monkeypatch, hub) -> list[list[int]]:
    """Each call's pins of every resident adapter, seen while it routes its rows (inside its pinned block)."""
    seen: list[list[int]] = []
    routing = hub.residency.routing

    def counting(rows, **options):
        seen.append([info.pins for info in hub.resident()])
        return routing(rows, **options)

    monkeypatch.setattr(hub.residency, "routing", counting)
    return seen


def test_a_held_pin_is_used_as_it_is_and_blocks_unload(tiny_base, dirs, monkeypatch):
    from adapterhub.errors import AdapterInUseError

    ids = torch.arange(4, 12)
    with AdapterHub(tiny_base) as hub:
        hub.load(dirs["lora-0"])
        entry = hub.residency.pin("lora-0")
        seen = _count_pins_while_routing(monkeypatch, hub)
        assert torch.equal(hub.logits(ids, domain=entry), hub.logits(ids, domain="lora-0"))
        assert seen == [[1], [2]]  # a held pin is used as it is; a name is pinned again for the call
        with pytest.raises(AdapterInUseError, match="in use by a running call"):
            hub.unload("lora-0")
        hub.residency.unpin(entry)
        assert hub.resident()[0].pins == 0 and hub.unload("lora-0") is True


def test_a_versioned_reference_a_row_holds_stays_resident_under_that_string(tiny_base, dirs, tmp_path):
    from adapterhub.registry import Registry

    registry = Registry(tmp_path / "registry")
    registry.add(dirs["lora-0"], "legal", base=tiny_base)
    registry.add(dirs["lora-1"], "legal", base=tiny_base)
    with AdapterHub(tiny_base, registry=registry) as hub:
        hub.load("legal")  # legal@2 under "legal"
        old = hub.stepper().acquire("legal@1")
        assert {info.name: info.source for info in hub.resident()} == {"legal@1": "legal@1", "legal": "legal@2"}
        assert old.name == "legal@1" and old.pins == 1
        hub.stepper().release(old)


@pytest.mark.parametrize("where", ["folder", "registry"])
def test_a_load_reads_the_method_once(tiny_base, dirs, tmp_path, monkeypatch, where):
    import adapterhub.methods as methods
    from adapterhub.registry import Registry

    registry = Registry(tmp_path / "registry")
    registry.add(dirs["lora-0"], "legal", base=tiny_base)
    calls = []
    original = methods.method_from_config
    monkeypatch.setattr(methods, "method_from_config", lambda config: (calls.append(1), original(config))[1])
    with AdapterHub(tiny_base, registry=registry) as hub:
        info = hub.load(dirs["lora-0"] if where == "folder" else "legal")
    assert info.method == "lora" and len(calls) == 1


def test_the_server_classifies_with_one_pin(tiny_base, tmp_path, monkeypatch):
    from adapterhub.prompts import TaskSpec
    from adapterhub.runtime.testing import write_manifest
    from adapterhub.serve.engine import Engine

    task = TaskSpec(type="classification", labels=("yes", "no"), prompt_template="Yes or no ({labels})?\n{text}")
    folder = write_manifest(make_random_adapters(tiny_base, tmp_path, r=2, prefix="clf")[0], name="clf", task=task,
                            base=tiny_base)
    with AdapterHub(tiny_base) as hub:
        hub.load(folder)
        seen = _count_pins_while_routing(monkeypatch, hub)
        rows = Engine(hub).classify("clf", ["Is it?"])
        assert rows[0]["label"] in task.labels and seen and all(pins == [1] for pins in seen)
        assert hub.resident()[0].pins == 0

