"""Residency: pins taken through any door (a hub call, the stepper, a held lease) free their slot for waiters."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from adapterhub.runtime import AdapterHub
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
