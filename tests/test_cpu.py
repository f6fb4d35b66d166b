"""CPU threads: the cores idle now by default, an explicit choice always wins, the CLI applies it."""

from __future__ import annotations

import pytest
import torch

from adapterhub import cpu


@pytest.fixture
def machine(monkeypatch):
    """A machine with ``cores`` cores and a 1-minute load average of ``load``; no thread settings."""
    for name in ("ADAPTERHUB_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)

    def set_machine(cores: int, load: float) -> None:
        monkeypatch.setattr(cpu, "usable_cores", lambda: cores)
        monkeypatch.setattr(cpu.os, "getloadavg", lambda: (load, load, load))

    return set_machine


@pytest.mark.parametrize(("cores", "load", "threads"), [(2, 0.1, 2), (2, 0.9, 1), (2, 1.5, 1), (2, 12.0, 1),
                                                        (8, 3.2, 5), (8, 0.0, 8)])
def test_default_is_the_idle_cores_and_at_least_one(machine, cores, load, threads):
    machine(cores, load)
    assert cpu.default_threads() == threads
    assert cpu.chosen_threads() == (threads, f"idle cores of {cores}")


def test_an_explicit_choice_wins(machine, monkeypatch):
    machine(2, 12.0)
    assert cpu.chosen_threads(2) == (2, "asked for")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu.chosen_threads() == (None, "$OMP_NUM_THREADS")  # torch already follows it
    monkeypatch.setenv("ADAPTERHUB_THREADS", "3")
    assert cpu.chosen_threads() == (3, "$ADAPTERHUB_THREADS")
    monkeypatch.setenv("ADAPTERHUB_THREADS", "many")
    with pytest.raises(ValueError, match="ADAPTERHUB_THREADS"):
        cpu.chosen_threads()


def test_the_cli_applies_threads_to_verbs_that_run_models(machine, tiny_llama_dir, capsys):
    from adapterhub.cli import main

    before = torch.get_num_threads()
    try:
        machine(2, 12.0)
        torch.set_num_threads(2)
        assert main(["base", "info", str(tiny_llama_dir), "--device", "cpu", "--json"]) == 0
        assert torch.get_num_threads() == 1  # busy machine: one thread
        assert main(["base", "info", str(tiny_llama_dir), "--device", "cpu", "--json", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        assert main(["base", "info", str(tiny_llama_dir), "--threads", "0"]) == 2
        assert "threads must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
