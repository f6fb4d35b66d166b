"""CPU threads: the cores idle now by default, an explicit choice always wins, the CLI applies it."""

from __future__ import annotations

import pytest
import torch

from adapterhub import cpu


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine with ``cores`` cores and a 1-minute load average of ``load``; no thread settings, and no
    seat of an adapterhub process running outside the test (its own ``ADAPTERHUB_HOME``)."""
    for name in ("ADAPTERHUB_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path / "home"))

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


@pytest.fixture
def seats(machine, monkeypatch, tmp_path):
    """An empty seats folder; ``hold()`` starts another process holding a seat, ``release()`` ends it."""
    import subprocess
    import sys

    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path))
    monkeypatch.setattr(cpu, "REBALANCE_EVERY_S", 0.0)
    children = []
    code = ("import sys; from adapterhub import cpu; cpu.take_seat(); print('seated', flush=True); sys.stdin.read()")

    def hold() -> None:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 env={**__import__("os").environ, "ADAPTERHUB_HOME": str(tmp_path)})
        assert child.stdout.readline().strip() == b"seated"
        children.append(child)

    def release() -> None:
        child = children.pop()
        child.stdin.close()
        child.wait(timeout=30)

    yield type("Seats", (), {"hold": staticmethod(hold), "release": staticmethod(release), "dir": tmp_path / "cpu"})
    while children:
        release()
    cpu.leave_seat()


def test_processes_started_together_split_the_cores(seats, machine):
    machine(2, 0.0)  # the load average has not seen the other process yet
    assert cpu.sharers() == 1
    seats.hold()
    assert cpu.sharers() == 2
    assert cpu.default_threads() == 1
    assert cpu.chosen_threads() == (1, "idle cores of 2, shared by 2 adapterhub processes")
    seats.release()
    assert cpu.sharers() == 1  # the ended process's seat went with it
    assert list(seats.dir.iterdir()) == []


def test_a_killed_process_frees_its_seat(seats, machine):
    (seats.dir).mkdir(parents=True, exist_ok=True)
    (seats.dir / "12345-1").write_text("")  # left by a process that was killed: nobody holds its lock
    machine(2, 0.0)
    assert cpu.sharers() == 1
    assert not (seats.dir / "12345-1").exists()


def test_a_running_process_rebalances_when_others_come_and_go(seats, machine):
    before = torch.get_num_threads()
    try:
        machine(2, 0.0)
        assert cpu.use_threads() == 2  # alone on a quiet machine: every core
        assert cpu.sharers() == 1  # its own seat
        seats.hold()
        assert cpu.sharers() == 2
        assert cpu.rebalance() == 1 and torch.get_num_threads() == 1
        seats.release()
        assert cpu.rebalance() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_an_explicit_choice_is_never_rebalanced(seats, machine):
    before = torch.get_num_threads()
    try:
        machine(2, 0.0)
        assert cpu.use_threads(2) == 2
        seats.hold()
        assert cpu.rebalance() is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
