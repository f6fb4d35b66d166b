"""Time to accuracy: the probe's clock leaves evaluation out, both trainers stop at the first evaluation that
reaches the threshold, and the target reads a missing side as not reached (behaviour only: no timed assertion)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adapterhub.bench import BenchConfig
from adapterhub.bench.accuracy import AccuracyProbe, measure_time_to_accuracy
from adapterhub.bench.peft_trainer import probe_callback
from adapterhub.bench.report import render_markdown
from adapterhub.bench.targets import MET, MISSED, NOT_MEASURED, check_targets

EVALUATION_SECONDS = 100.0


class FakeClock:
    """A clock that moves only when told: one second per training step, 100 s per evaluation."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time


def _probe(accuracies, *, threshold=0.85, every=2, total_steps=8):
    clock = FakeClock()
    scores = iter(accuracies)

    def score(model):
        clock.time += EVALUATION_SECONDS
        return next(scores)

    return AccuracyProbe(score, threshold=threshold, every=every, total_steps=total_steps, timer=clock), clock


def test_the_clock_counts_training_and_leaves_evaluation_out():
    probe, clock = _probe([0.5, 0.9])
    probe.start()
    for step in range(1, 5):
        clock.time += 1.0  # one training step
        probe.count(10)
        if probe.due(step) and probe.evaluate(step, model=None):
            break
    result = probe.result()
    assert result["reached"] and result["steps"] == 4 and result["tokens"] == 40
    assert result["seconds"] == 4.0  # four steps of training, not the two evaluations
    assert result["wall_seconds"] == 4.0 + 2 * EVALUATION_SECONDS
    assert result["eval_seconds"] == 2 * EVALUATION_SECONDS and result["evaluations"] == 2
    assert [(point["step"], point["accuracy"], point["seconds"]) for point in result["curve"]] == [(2, 0.5, 2.0),
                                                                                                   (4, 0.9, 4.0)]


def test_never_reached_reports_the_best_accuracy():
    probe, clock = _probe([0.3, 0.6, 0.5], total_steps=5)
    probe.start()
    for step in range(1, 6):
        clock.time += 1.0
        if probe.due(step):  # steps 2, 4 and the last one, 5
            assert not probe.evaluate(step, model=None)
    result = probe.result()
    assert not result["reached"] and result["seconds"] is None and result["steps"] is None
    assert (result["best_accuracy"], result["best_step"], result["steps_run"]) == (0.6, 4, 5)
    assert result["train_seconds"] == 5.0


def test_the_peft_callback_evaluates_when_due_with_the_clock_paused_and_stops_training():
    probe, clock = _probe([0.9], every=2)
    callback = probe_callback(probe)
    control = SimpleNamespace(should_training_stop=False)
    callback.on_train_begin(None, SimpleNamespace(global_step=0), control)
    for step in (1, 2):
        clock.time += 1.0
        callback.on_step_end(None, SimpleNamespace(global_step=step), control, model="the model")
        assert control.should_training_stop == (step == 2)  # step 1 is not due
    assert probe.result()["seconds"] == 2.0 and probe.result()["wall_seconds"] == 2.0 + EVALUATION_SECONDS


@pytest.fixture(scope="module")
def reachable(tiny_llama_dir, tmp_path_factory):
    """Both trainers on the tiny model with a threshold every evaluation reaches."""
    out = tmp_path_factory.mktemp("accuracy")
    config = BenchConfig.preset(quick=True, base=str(tiny_llama_dir), out=out, accuracy_threshold=0.0)
    skipped = []
    result = measure_time_to_accuracy(config, base_name=str(tiny_llama_dir), device="cpu", skipped=skipped)
    return result, skipped, out


@pytest.mark.parametrize("side", ["ours", "peft"])
def test_a_reachable_threshold_stops_both_trainers_at_the_first_evaluation(reachable, side):
    result, skipped, _ = reachable
    assert not skipped
    measured = result[side]
    assert measured["reached"] and measured["evaluations"] == 1
    assert measured["steps"] == measured["steps_run"] == result["eval_every"] == 2
    assert measured["tokens"] > 0 and measured["wall_seconds"] >= measured["seconds"] > 0
    assert measured["eval_rows"] == 8 and measured["schedule"]["total_steps"] == 4
    assert result["time_ratio"] > 0 and result["speedup_vs_peft"] == pytest.approx(1 / result["time_ratio"])


def test_the_report_and_plot_of_a_reached_threshold(reachable):
    from adapterhub.bench.plots import write_plots

    result, _, out = reachable
    markdown = render_markdown({"results": {"accuracy": result}})
    assert "## 10. Time to accuracy" in markdown and "reached 0%" in markdown and "as fast" in markdown
    assert "Time counts training only" in markdown and "not a claim" in markdown
    assert [path.name for path in write_plots({"results": {"accuracy": result}}, out)] == ["accuracy.png"]


def _side(reached, seconds=None):
    return {"reached": reached, "seconds": seconds}


@pytest.mark.parametrize(("accuracy", "status", "value"), [
    ({"threshold": 0.85, "ours": _side(True, 8.0), "peft": _side(True, 10.0), "time_ratio": 0.8}, MET, 0.8),
    ({"threshold": 0.85, "ours": _side(True, 12.0), "peft": _side(True, 10.0), "time_ratio": 1.2}, MISSED, 1.2),
    ({"threshold": 0.85, "ours": _side(True, 12.0), "peft": _side(False)}, MET, None),
    ({"threshold": 0.85, "ours": _side(False), "peft": _side(True, 10.0)}, MISSED, None),
    ({"threshold": 0.85, "ours": _side(False), "peft": _side(False)}, MISSED, None),
    ({"threshold": 0.5, "ours": _side(True, 1.0), "peft": _side(True, 2.0), "time_ratio": 0.5}, NOT_MEASURED, None),
    ({"threshold": 0.85, "ours": _side(True, 1.0)}, NOT_MEASURED, None),
])
def test_time_to_accuracy_target(accuracy, status, value):
    check = next(check for check in check_targets({"results": {"accuracy": accuracy}})
                 if check["id"] == "time_to_accuracy")
    assert (check["status"], check["value"]) == (status, value)
