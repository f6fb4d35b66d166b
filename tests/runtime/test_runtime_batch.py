"""Row -> slot mapping: segments, groups, beam expansion and per-context routing."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from adapterhub.errors import ConfigError
from adapterhub.runtime.batch import BARE, RowSlots, Segment, active_rows, find_segments, routed


@pytest.mark.parametrize("slots, segments", [
    ([], ()),
    ([4], ((4, 0, 1),)),
    ([1, 1, 1], ((1, 0, 3),)),
    ([1, BARE, 1], ((1, 0, 1), (BARE, 1, 2), (1, 2, 3))),
    ([2, 2, 3, 3, 3, BARE], ((2, 0, 2), (3, 2, 5), (BARE, 5, 6))),
])
def test_find_segments(slots, segments):
    assert find_segments(slots) == tuple(Segment(*s) for s in segments)


def test_uniform_rows_take_the_fast_path():
    rows = RowSlots.build([7, 7, 7])
    assert rows.uniform == 7 and rows.groups == ((7, slice(0, 3)),)
    bare = RowSlots.build([BARE, BARE])
    assert bare.uniform == BARE and bare.groups == ()


def test_mixed_rows_group_by_slot_with_views_where_contiguous():
    rows = RowSlots.build([5, 5, BARE, 9, 5])
    assert rows.uniform is None
    groups = dict(rows.groups)
    assert set(groups) == {5, 9}  # bare rows pay nothing
    assert groups[9] == slice(3, 4)
    assert groups[5].tolist() == [0, 1, 4]


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_beam_expansion_repeats_each_row_in_place(factor):
    rows = RowSlots.build([1, BARE, 2])
    expanded = rows.for_batch(3 * factor)
    assert expanded.slots == tuple(s for s in (1, BARE, 2) for _ in range(factor))
    assert rows.for_batch(3 * factor) is expanded  # cached


def test_a_batch_that_is_no_multiple_of_the_rows_is_an_error():
    with pytest.raises(ConfigError, match="5 rows but the call routed 2"):
        RowSlots.build([1, 2]).for_batch(5)


def test_routing_is_per_thread_and_per_task():
    seen = {}

    def worker(slot):
        with routed(RowSlots.build([slot])):
            threading.Event().wait(0.01)
            seen[slot] = active_rows().slots

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {slot: (slot,) for slot in range(6)} and active_rows() is None

    async def task(slot):
        with routed(RowSlots.build([slot, slot])):
            await asyncio.sleep(0.01)
            return active_rows().uniform

    async def main():
        return await asyncio.gather(*(task(slot) for slot in range(4)))

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_row_index_tensors_live_on_the_requested_device():
    rows = RowSlots.build([1, 2, 1], device=torch.device("cpu"))
    assert dict(rows.groups)[1].device.type == "cpu"
