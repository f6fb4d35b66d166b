"""Residency bookkeeping: LRU order, pins, budgets."""

from __future__ import annotations

import pytest

from adapterhub.errors import ConfigError, MemoryBudgetError
from adapterhub.runtime.slots import ResidentAdapter, SlotTable


def add(residency, name, nbytes=100):
    entry = ResidentAdapter(name=name, slot=residency.new_slot(), method="lora", source=name, nbytes=nbytes,
                            file_bytes=nbytes)
    residency.add(entry)
    return entry


def test_least_recently_used_is_evicted_first():
    residency = SlotTable(max_resident=3)
    a, b, c = (add(residency, n) for n in "abc")
    residency.touch(a)
    assert [e.name for e in residency.evictions_for(100, name="d")] == ["b"]
    assert residency.evictions_for(100, name="d", protect=frozenset({"b"}))[0] is c


def test_pinned_entries_are_never_evicted():
    residency = SlotTable(max_resident=2)
    a, b = add(residency, "a"), add(residency, "b")
    a.pins = 1
    assert residency.evictions_for(100, name="c") == [b]
    b.pins = 1
    with pytest.raises(MemoryBudgetError, match="a, b are in use"):
        residency.evictions_for(100, name="c")


def test_byte_budget_evicts_as_many_as_needed():
    residency = SlotTable(budget_bytes=300)
    for name in "abc":
        add(residency, name)
    assert [e.name for e in residency.evictions_for(250, name="big")] == ["a", "b", "c"][:3]
    assert residency.evictions_for(0, name="tiny") == []


def test_an_adapter_larger_than_the_budget_is_refused():
    with pytest.raises(MemoryBudgetError, match="needs 1.0 MiB"):
        SlotTable(budget_bytes=2**19).evictions_for(2**20, name="big")


@pytest.mark.parametrize("kwargs", [dict(max_resident=0), dict(budget_bytes=0)])
def test_limits_must_be_positive(kwargs):
    with pytest.raises(ConfigError):
        SlotTable(**kwargs)


def test_slots_are_unique_across_residencies():
    assert SlotTable.new_slot() != SlotTable.new_slot()
