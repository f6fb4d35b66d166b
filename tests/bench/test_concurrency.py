"""Concurrent trainings: each leg's processes really run their thread policy (torch's default in both, or a seat
and adapterhub's share), time their steps together, and the report, plot and target read the result (behaviour
only: no timed assertion)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from adapterhub import cpu
from adapterhub.bench.concurrency import SEATS, TORCH, meet, render, summarize
from adapterhub.bench.isolated import IsolatedRunError, run_isolated, run_together
from adapterhub.bench.report import render_markdown
from adapterhub.bench.targets import MET, MISSED, NOT_MEASURED, check_targets


@pytest.fixture(scope="module")
def concurrency_run(tiny_llama_dir, tmp_path_factory):
    """``adapterhub bench --quick --only concurrency`` with ``OMP_NUM_THREADS=1`` exported (which no leg may
    follow) and a home of its own, so only this run's processes hold seats; the CLI takes one for the bench."""
    from adapterhub.cli import main

    out = tmp_path_factory.mktemp("concurrency")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERHUB_HOME", str(out / "home"))
        patch.setenv("OMP_NUM_THREADS", "1")
        try:
            code = main(["bench", "--quick", "--base", str(tiny_llama_dir), "--out", str(out / "report"), "--work",
                         str(out / "work"), "--only", "concurrency", "--no-progress"])
            seat_after = cpu.holds_seat()
        finally:
            cpu.leave_seat()
            torch.set_num_threads(threads)
        torch_default = run_isolated("torch:get_num_threads", {}, env={
            name: value for name, value in os.environ.items() if name not in cpu.USER_SETTINGS})
    report = json.loads((out / "report" / "bench.json").read_text())
    return {"code": code, "report": report, "out": out / "report", "seat_after": seat_after,
            "torch_default": torch_default}


def _legs(run):
    return run["report"]["results"]["concurrency"]["legs"]


def test_only_concurrency_runs_three_legs_and_writes_its_report(concurrency_run):
    report, out = concurrency_run["report"], concurrency_run["out"]
    assert concurrency_run["code"] == 0 and not report["skipped"]
    assert set(report["results"]) == {"concurrency"}
    assert sorted(path.name for path in out.iterdir()) == ["bench.json", "bench.md", "concurrency.png"]
    legs = _legs(concurrency_run)
    assert list(legs) == ["alone", "before", "after"]
    assert [len(leg["processes"]) for leg in legs.values()] == [1, 2, 2]
    assert all(process["tokens"] > 0 and process["steps"] == 2 for leg in legs.values()
               for process in leg["processes"])
    markdown = (out / "bench.md").read_text()
    assert "## 11. Concurrent trainings" in markdown and "the aggregate tokens/s with CPU seats" in markdown
    check = next(check for check in report["targets"] if check["id"] == "concurrency")
    result = report["results"]["concurrency"]
    assert check["value"] == result["after_over_before"] > 0 and check["limit"] == 1.0
    assert check["status"] == "not a claim (tiny model)" and check["verdict"] in (MET, MISSED)


def test_before_runs_torch_default_threads_in_both_processes(concurrency_run):
    for process in _legs(concurrency_run)["before"]["processes"]:
        assert process["policy"] == TORCH and not process["seat"]
        # a fresh process's default without the user's settings: the exported OMP_NUM_THREADS=1 did not reach it
        assert process["threads"] == process["threads_end"] == process["torch_default"] \
            == concurrency_run["torch_default"]


def test_after_each_process_holds_a_seat_and_takes_its_share(concurrency_run):
    cores = concurrency_run["report"]["results"]["concurrency"]["usable_cores"]
    for process in _legs(concurrency_run)["after"]["processes"]:
        assert process["policy"] == SEATS and process["seat"]
        assert process["sharers"] == 2  # each other, not the bench process (it gave its seat up meanwhile)
        assert 1 <= process["threads"] <= max(1, cores // 2)
    assert concurrency_run["seat_after"]  # and took it back afterwards


def test_alone_holds_the_only_seat(concurrency_run):
    (process,) = _legs(concurrency_run)["alone"]["processes"]
    cores = concurrency_run["report"]["results"]["concurrency"]["usable_cores"]
    assert process["policy"] == SEATS and process["seat"] and process["sharers"] == 1
    assert 1 <= process["threads"] <= cores


@pytest.mark.parametrize("leg", ["before", "after"])
def test_the_processes_of_a_leg_time_their_steps_together(concurrency_run, leg):
    processes = _legs(concurrency_run)[leg]["processes"]
    assert max(p["start"] for p in processes) < min(p["end"] for p in processes)
    assert 0 < _legs(concurrency_run)[leg]["overlap"] <= 1


def test_ratios_follow_from_the_legs(concurrency_run):
    result = concurrency_run["report"]["results"]["concurrency"]
    legs = result["legs"]
    assert result["after_over_before"] == pytest.approx(legs["after"]["tokens_per_s"] / legs["before"]["tokens_per_s"])
    for leg in ("before", "after"):
        for process in legs[leg]["processes"]:
            assert process["slowdown_vs_alone"] == pytest.approx(legs["alone"]["tokens_per_s"] / process["tokens_per_s"])
    assert "slowdown_vs_alone" not in legs["alone"]["processes"][0]


def test_the_aggregate_counts_every_token_over_the_whole_span():
    early = {"tokens": 100, "start": 10.0, "end": 12.0}
    late = {"tokens": 300, "start": 11.0, "end": 14.0}
    summary = summarize([early, late])
    assert summary["tokens_per_s"] == pytest.approx(400 / 4.0)
    assert summary["overlap"] == pytest.approx(1.0 / 4.0)
    assert summarize([early, {"tokens": 1, "start": 20.0, "end": 21.0}])["overlap"] == 0.0


def test_meet_waits_for_every_peer(tmp_path):
    call = ("adapterhub.bench.concurrency:meet", {"folder": str(tmp_path), "stage": "ready", "peers": 2})
    assert run_together([call, call]) == [None, None]
    with pytest.raises(TimeoutError, match="1 of 2 processes reached 'alone'"):
        meet(str(tmp_path), "alone", 2, timeout=0.05)


def test_a_failing_child_stops_the_ones_waiting_for_it(tmp_path):
    waiting = ("adapterhub.bench.concurrency:meet", {"folder": str(tmp_path), "stage": "never", "peers": 2,
                                                     "timeout": 120})
    failing = ("adapterhub.bench.environment:cpu_model", {"bogus": 1})
    with pytest.raises(IsolatedRunError, match=r"(?s)environment:cpu_model.*unexpected keyword"):
        run_together([waiting, failing])  # waiting for the first would raise its TimeoutError, 2 minutes later


def test_seat_released_gives_the_seat_up_and_takes_it_back(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERHUB_HOME", str(tmp_path))
    with cpu.seat_released():  # holding none: none taken afterwards
        pass
    assert not cpu.holds_seat()
    cpu.take_seat()
    with cpu.seat_released():
        assert not cpu.holds_seat() and cpu.sharers() == 1 and not list(cpu.seats_dir().iterdir())
    assert cpu.holds_seat() and len(list(cpu.seats_dir().iterdir())) == 1


def _process(tokens_per_s, threads=1, threads_end=1, slowdown=None):
    return {"tokens_per_s": tokens_per_s, "threads": threads, "threads_end": threads_end,
            **({} if slowdown is None else {"slowdown_vs_alone": slowdown})}


def _result(**legs):
    return {"recipe": "recipes/finance.yaml", "steps": 8, "warmup": 2, "batch_size": 8, "usable_cores": 4,
            "legs": legs}


def test_the_section_shows_each_leg_and_the_ratio():
    alone = {"policy": SEATS, "load_average": 0.2, "overlap": 1.0, "tokens_per_s": 100.0,
             "processes": [_process(100.0, 4, 4)]}
    before = {"policy": TORCH, "load_average": 0.3, "overlap": 0.9, "tokens_per_s": 60.0,
              "processes": [_process(30.0, 4, 4, 3.3), _process(31.0, 4, 4, 3.2)]}
    after = {"policy": SEATS, "load_average": 0.1, "overlap": 0.95, "tokens_per_s": 90.0,
             "processes": [_process(45.0, 4, 2, 2.2), _process(45.0, 2, 2, 2.2)]}
    markdown = render_markdown({"results": {"concurrency": {**_result(alone=alone, before=before, after=after),
                                                            "after_over_before": 1.5}}})
    assert "## 11. Concurrent trainings" in markdown and "**1.5×** the aggregate tokens/s" in markdown
    assert "| after | adapterhub seats | 4 → 2 + 2 | 45, 45 | 90 | 2.2×, 2.2× | 95% | 0.1 |" in markdown
    assert "| alone | adapterhub seats | 4 | 100 | 100 | – | 100% | 0.2 |" in markdown
    only_alone = render({**_result(alone=alone)})
    assert not any("aggregate tokens/s with CPU seats" in line for line in only_alone)
    assert render({}) == ["Not measured."]


@pytest.mark.parametrize(("result", "status"), [
    ({}, NOT_MEASURED),
    ({"concurrency": {"after_over_before": 1.8}}, MET),
    ({"concurrency": {"after_over_before": 1.0}}, MET),
    ({"concurrency": {"after_over_before": 0.9}}, MISSED),
    ({"concurrency": {"legs": {}}}, NOT_MEASURED),  # a leg failed: no ratio
])
def test_concurrency_target(result, status):
    check = next(check for check in check_targets({"results": result}) if check["id"] == "concurrency")
    assert check["status"] == status
