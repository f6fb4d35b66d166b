"""``adapterhub bench``: a quick smoke run on the tiny llama checks the report's shape (never a speed)."""

from __future__ import annotations

import json

import pytest

from adapterhub.bench import AREAS, BenchConfig, run_bench
from adapterhub.bench.harness import Stats, percentile
from adapterhub.bench.targets import MET, MISSED, NOT_MEASURED, TARGETS, check_targets
from adapterhub.errors import ConfigError

PLOTS = ("forward.png", "latency.png", "memory.png", "throughput.png", "accuracy.png")
QUICK_AREAS = tuple(area for area in AREAS if area not in ("concurrency", "many"))  # own files: test_concurrency.py,
# test_bench_many.py
OWN_FILE_TARGETS = ("concurrency", "many_", "registry_")  # targets of those areas: not measured in this run


@pytest.fixture(scope="module")
def quick_report(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig.preset(quick=True, base=str(tiny_llama_dir), out=out, work=out / "work", areas=QUICK_AREAS)
    report = run_bench(config, progress=False)
    return report, out


def _positive_numbers(data):
    """Every number anywhere in ``data`` (ints that are counts included)."""
    if isinstance(data, bool):
        return
    if isinstance(data, (int, float)):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _positive_numbers(value)
    elif isinstance(data, list):
        for value in data:
            yield from _positive_numbers(value)


@pytest.mark.parametrize("name", ["bench.json", "bench.md", *PLOTS])
def test_quick_run_writes_every_file(quick_report, name):
    report, out = quick_report
    assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert name in report["files"]


def test_bench_json_is_the_returned_report(quick_report):
    report, out = quick_report
    written = json.loads((out / "bench.json").read_text())
    assert written["results"].keys() == set(QUICK_AREAS)
    assert [check["id"] for check in written["targets"]] == [target.id for target in TARGETS]
    assert written["environment"]["torch_threads"] >= 1
    assert written["environment"]["versions"]["peft"]
    assert written["base"]["dtype"] == "float32"


@pytest.mark.parametrize("area", QUICK_AREAS)
def test_every_measured_number_is_positive(quick_report, area):
    report, _ = quick_report
    numbers = list(_positive_numbers(report["results"][area]))
    assert numbers, f"{area} measured nothing"
    assert all(number >= 0 for number in numbers)


@pytest.mark.parametrize("side", ["ours", "peft"])
def test_both_sides_are_measured(quick_report, side):
    results = quick_report[0]["results"]
    assert results["switch"]["ms"][side]["p99"] >= results["switch"]["ms"][side]["p50"] > 0
    assert results["load"]["ms"][side]["first"]["median"] > 0
    assert len(results["load"]["ms"][side]["by_index"]) == 4
    shape = results["forward"]["shapes"][0]
    for case in ("single", "mixed_2", "mixed_8"):
        assert shape["ratio_to_bare"][f"{side}_{case}"] > 0
    assert results["generation"]["runs"][0]["tokens_per_s"][side] > 0
    if side == "ours":  # decode and prefill per case: our side only (PEFT has no step API)
        assert set(results["generation"]["decode"]["ratio_to_single"]) == {"bare", "single", "mixed_3", "mixed_8"}
        assert set(results["generation"]["prefill"]["ratio_to_bare"]) == {"bare", "single", "mixed_8"}
    assert results["training"][side]["tokens_per_s"] > 0
    assert results["training"][side]["peak_bytes"] > 0
    assert all(row["ratio_to_files"][side] > 0 for row in results["memory"]["resident"])


@pytest.mark.parametrize("side", ["ours", "peft"])
def test_quick_time_to_accuracy_runs_a_few_steps_on_a_few_rows(quick_report, side):
    report, out = quick_report
    result = report["results"]["accuracy"]
    measured = result[side]
    assert result["quick"] and result["threshold"] == 0.85 and "time_ratio" not in result
    assert not measured["reached"] and measured["seconds"] is None and 0 <= measured["best_accuracy"] < 0.85
    assert measured["steps_run"] == measured["total_steps"] == 4 and measured["eval_rows"] == 8
    assert [point["step"] for point in measured["curve"]] == [2, 4]
    assert all(point["wall_seconds"] >= point["seconds"] > 0 for point in measured["curve"])
    assert "Quick run: a few steps on the tiny model, which cannot reach 85% — not a claim." in (
        out / "bench.md").read_text()


def test_every_target_is_checked(quick_report):
    report, out = quick_report
    markdown = (out / "bench.md").read_text()
    for check in report["targets"]:
        if check["id"].startswith(OWN_FILE_TARGETS):  # not in this run (their own test files check them)
            assert check["status"] == NOT_MEASURED
            continue
        assert check["status"] == "not a claim (tiny model)" and check["verdict"] in (MET, MISSED)
        if check["id"] == "time_to_accuracy":  # the tiny model reaches 85% on neither side: no ratio
            assert check["value"] is None and check["verdict"] == MISSED
        else:
            assert check["value"] > 0
        assert check["limit"] > 0
        assert check["target"] in markdown
    for row in ("CPU", "threads", "device", "dtype / quantize", "versions"):
        assert f"| {row} |" in markdown
    assert MISSED not in markdown.split("## Targets")[1].split("##")[0]  # no target applies to the tiny model


@pytest.mark.parametrize(("samples", "median", "p99"), [
    ([5.0], 5.0, 5.0),
    ([3.0, 1.0, 2.0], 2.0, 2.98),
    ([float(i) for i in range(1, 101)], 50.5, 99.01),
])
def test_stats(samples, median, p99):
    stats = Stats.of(samples)
    assert stats.median == stats.p50 == pytest.approx(median)
    assert stats.p99 == pytest.approx(p99)
    assert stats.scaled(1000).median == pytest.approx(median * 1000)


def test_stats_needs_samples():
    with pytest.raises(ValueError):
        Stats.of([])


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (50, 2.5), (100, 4.0)])
def test_percentile(q, expected):
    assert percentile([1.0, 2.0, 3.0, 4.0], q) == pytest.approx(expected)


def _check(results, target_id):
    return next(check for check in check_targets({"results": results}) if check["id"] == target_id)


@pytest.mark.parametrize(("results", "target_id", "status"), [
    ({}, "switch", NOT_MEASURED),
    ({"switch": {"ms": {"ours": {"p50": 0.02}}}}, "switch", MET),
    ({"switch": {"ms": {"ours": {"p50": 0.5}}}}, "switch", MISSED),
    ({"load": {"file_bytes": 20_000_000, "ms": {"ours": {"first": {"median": 49.0}}}}}, "load_first", MET),
    ({"load": {"file_bytes": 40_000_000, "ms": {"ours": {"first": {"median": 90.0}}}}}, "load_first", MET),
    ({"load": {"file_bytes": 20_000_000, "ms": {"ours": {"first": {"median": 51.0}}}}}, "load_first", MISSED),
    ({"load": {"file_bytes": 20_000_000, "ms": {"ours": {"first": {"median": 30.0}, "new_process": {"median": 51.0}}}}},
     "load_first", MISSED),  # a new process's first load is the figure, when measured
    ({"load": {"file_bytes": 20_000_000, "ms": {"ours": {"first": {"median": 60.0}, "new_process": {"median": 49.0}}}}},
     "load_first", MET),
    ({"load": {"ms": {"ours": {"first": {"median": 10.0}, "last": {"median": 30.0}}}}}, "load_flat", MISSED),
    ({"forward": {"shapes": [{"ratio_to_bare": {"ours_single": 1.04}}]}}, "forward_single", MET),
    ({"forward": {"shapes": [{"ratio_to_bare": {"ours_mixed_8": 1.2}}]}}, "forward_mixed_8", MISSED),
    ({"generation": {"runs": [{"speedup_vs_peft": 1.0}]}}, "generation", MISSED),
    ({"generation": {"runs": [{"speedup_vs_peft": 1.3}]}}, "generation", MET),
    ({"generation": {"decode": {"ratio_to_single": {"mixed_3": 1.08}}}}, "decode_mixed_3", MET),
    ({"generation": {"decode": {"ratio_to_single": {"mixed_8": 1.2}}}}, "decode_mixed_8", MISSED),
    ({"generation": {"prefill": {"ratio_to_bare": {"mixed_8": 1.1}}}}, "prefill_mixed_8", MET),
    ({"training": {"speedup_vs_peft": 1.6}}, "training_speed", MISSED),
    ({"training": {"speedup_vs_peft": 2.1}}, "training_speed", MET),
    ({"training": {"ours": {"peak_bytes": 2}, "peft": {"peak_bytes": 1}}}, "training_memory", MISSED),
    ({"memory": {"resident": [{"ratio_to_files": {"ours": 1.0}}, {"ratio_to_files": {"ours": 1.2}}]}},
     "memory_resident", MISSED),
    ({"memory": {"base_footprint": {"nf4_over_fp32": 0.3}}}, "nf4_footprint", MET),
])
def test_target_checks(results, target_id, status):
    assert _check(results, target_id)["status"] == status


@pytest.mark.parametrize("overrides", [{"areas": ("switch", "speed")}, {"repeats": 0}, {"threads": 0},
                                       {"no_such_option": 1},
                                       {"concurrency_settle_s": -1}])
def test_bad_config_is_one_clear_error(overrides):
    with pytest.raises(ConfigError):
        BenchConfig.preset(quick=True, **overrides)


def test_cli_runs_selected_areas(tiny_llama_dir, tmp_path, capsys):
    from adapterhub.cli import main

    code = main(["bench", "--quick", "--base", str(tiny_llama_dir), "--out", str(tmp_path / "out"), "--work",
                 str(tmp_path / "work"), "--only", "switch", "memory", "--no-progress"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert set(report["results"]) == {"switch", "memory"}
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md", "latency.png",
                                                                         "memory.png"]
    out = capsys.readouterr().out
    assert "bench.md" in out and "not a claim (tiny model)" in out and MISSED not in out


def test_the_1st_load_is_timed_in_new_processes(tiny_llama_dir, tmp_path):
    from adapterhub.cli import main

    code = main(["bench", "--quick", "--base", str(tiny_llama_dir), "--out", str(tmp_path / "out"), "--work",
                 str(tmp_path / "work"), "--only", "load", "--no-progress"])
    assert code == 0
    load = json.loads((tmp_path / "out" / "bench.json").read_text())["results"]["load"]
    assert load["ms"]["ours"]["new_process"]["n"] == load["repeats"] and load["ms"]["ours"]["new_process"]["median"] > 0
    assert "new_process" not in load["ms"]["peft"]
    assert "A new process's first `hub.load`" in (tmp_path / "out" / "bench.md").read_text()


@pytest.mark.parametrize(("parameters", "status"), [(1_000, "not a claim (tiny model)"),
                                                    (134_000_000, "not a claim (quick run)")])
def test_a_quick_run_makes_no_claim(parameters, status):
    report = {"config": {"quick": True}, "base": {"num_parameters": parameters},
              "results": {"switch": {"ms": {"ours": {"p50": 0.5}}}}}
    check = next(check for check in check_targets(report) if check["id"] == "switch")
    assert (check["status"], check["verdict"]) == (status, MISSED)


def test_cli_rejects_unknown_area(tmp_path, capsys):
    from adapterhub.cli import main

    assert main(["bench", "--quick", "--out", str(tmp_path), "--only", "speed"]) == 2
    assert "speed" in capsys.readouterr().err


def test_isolated_run_returns_the_childs_result():
    from adapterhub.bench.environment import cpu_model
    from adapterhub.bench.isolated import run_isolated

    assert run_isolated("adapterhub.bench.environment:cpu_model", {}) == cpu_model()


def test_isolated_run_failure_names_the_target_and_the_error():
    from adapterhub.bench.isolated import IsolatedRunError, run_isolated

    with pytest.raises(IsolatedRunError, match=r"(?s)environment:cpu_model.*unexpected keyword"):
        run_isolated("adapterhub.bench.environment:cpu_model", {"bogus": 1})


def test_child_peak_memory_is_its_own():
    from adapterhub.bench.isolated import run_isolated
    from adapterhub.memory import peak_rss_bytes

    ballast = b"\x01" * 300_000_000  # touched pages: the parent's peak is now above 300 MB
    child_peak = run_isolated("adapterhub.memory:peak_rss_bytes", {})
    assert child_peak < 200_000_000 < len(ballast) < peak_rss_bytes()


def test_training_reports_the_median_run_and_the_highest_peak():
    from adapterhub.bench.training import _median_run

    runs = [{"tokens_per_s": 100.0, "peak_bytes": 5, "seconds": 3.0}, {"tokens_per_s": 300.0, "peak_bytes": 9,
            "seconds": 1.0}, {"tokens_per_s": 200.0, "peak_bytes": 7, "seconds": 2.0}]
    median = _median_run(runs)
    assert median["tokens_per_s"] == 200.0 and median["seconds"] == 2.0 and median["peak_bytes"] == 9
    assert median["tokens_per_s_runs"] == [100.0, 300.0, 200.0]


def test_methods_area_mixes_five_methods_in_one_batch(tiny_llama_dir, tmp_path):
    from adapterhub.cli import main

    code = main(["bench", "--quick", "--base", str(tiny_llama_dir), "--out", str(tmp_path / "out"), "--work",
                 str(tmp_path / "work"), "--only", "methods", "--no-progress"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    result = report["results"]["methods"]
    assert {row.split(":")[0] for row in result["rows"]} == {"lora", "adalora", "ia3", "bottleneck", "prefix"}
    assert result["ratio_to_bare"]["mixed_8"] > 0
    check = next(c for c in report["targets"] if c["id"] == "forward_mixed_methods_8")
    assert check["status"] == "not a claim (tiny model)" and check["verdict"] in ("met", "MISSED")
    assert "Mixed methods" in (tmp_path / "out" / "bench.md").read_text()
