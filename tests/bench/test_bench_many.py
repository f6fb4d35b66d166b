"""``adapterhub bench --only many``: the mixed shapes, the traffic, and a quick run against both real servers
on the tiny llama (the report's shape and the servers' bounds; never a speed)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from adapterhub.bench import BenchConfig, run_bench
from adapterhub.bench.many_adapters import SHAPES, choices, shape_of
from adapterhub.bench.many_servers import parse_metrics
from adapterhub.cli import main
from adapterhub.errors import ConfigError

NAMES = [f"a{i}" for i in range(100)]


def test_shapes_follow_their_shares():
    drawn = Counter(shape_of(index).name for index in range(4000))
    for shape in SHAPES:
        assert abs(drawn[shape.name] / 4000 - shape.share) < 0.02
    assert [shape_of(index) for index in range(50)] == [shape_of(index) for index in range(50)]  # seeded


def test_zipf_is_skewed_uniform_is_not_and_both_are_seeded():
    zipf = Counter(choices(NAMES, "zipf", count=5000, seed=3))
    uniform = Counter(choices(NAMES, "uniform", count=5000, seed=3))
    top = zipf.most_common(1)[0][1] / 5000
    assert 0.15 < top < 0.25  # 1 / H(100) = 0.193 for alpha 1
    assert uniform.most_common(1)[0][1] / 5000 < 0.03 and len(uniform) == 100
    assert choices(NAMES, "zipf", count=50, seed=3) == choices(NAMES, "zipf", count=50, seed=3)
    assert choices(NAMES, "zipf", count=50, seed=3) != choices(NAMES, "zipf", count=50, seed=4)
    assert Counter(choices(NAMES, "zipf", count=5000, seed=3, alpha=2.0)).most_common(1)[0][1] / 5000 > 0.5


@pytest.mark.parametrize("traffic, names, alpha", [("bursty", NAMES, 1.0), ("zipf", [], 1.0), ("zipf", NAMES, 0)])
def test_bad_traffic_is_one_clear_error(traffic, names, alpha):
    with pytest.raises(ConfigError, match="traffic"):
        choices(names, traffic, count=3, alpha=alpha)


def test_metrics_are_summed_over_adapters_and_kept_per_tier():
    text = ('adapterhub_adapter_loads_total{adapter="a"} 2.0\nadapterhub_adapter_loads_total{adapter="b"} 3.0\n'
            'adapterhub_adapter_evictions_total{adapter="a"} 1.0\n'
            '# TYPE adapterhub_tier_bytes gauge\nadapterhub_tier_bytes{tier="host"} 512.0\n'
            'adapterhub_resident_adapters 4.0\n')
    counters, gauges = parse_metrics(text)
    assert counters == {"loads": 5.0, "evictions": 1.0}
    assert gauges == {"resident": 4.0, "adapterhub_tier_bytes[host]": 512.0}


@pytest.mark.parametrize("overrides", [{"many_counts": (0, 4)}, {"many_alpha": 0.0}, {"many_warmup_requests": -1}])
def test_bad_many_options_are_one_clear_error(overrides):
    with pytest.raises(ConfigError, match="many-adapters"):
        BenchConfig.preset(quick=True, **overrides)


@pytest.fixture(scope="module")
def many_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("many")
    config = BenchConfig.preset(quick=True, base=str(tiny_llama_dir), out=out / "out", work=out / "work",
                                areas=("many",), many_counts=(1, 4, 8), many_resident=3)
    return run_bench(config, progress=False), out / "out"


def test_quick_run_writes_the_report_and_the_plot(many_run):
    report, out = many_run
    assert sorted(report["files"]) == ["bench.json", "bench.md", "many.png"]
    assert json.loads((out / "bench.json").read_text())["results"].keys() == {"many"}
    markdown = (out / "bench.md").read_text()
    assert "## 12. Many adapters" in markdown and "Tokens/s against N" in markdown


def test_every_request_is_answered_by_both_servers(many_run):
    result = many_run[0]["results"]["many"]
    legs = result["headline"]["legs"] + result["sweep"]
    assert {(leg["side"], leg["traffic"]) for leg in legs} == {(side, traffic) for side in ("ours", "peft")
                                                                for traffic in ("one", "zipf", "uniform")}
    for leg in legs:
        assert leg["errors"] == 0 and leg["ok"] == leg["requests"] == 8
        assert leg["generated_tokens"] == 8 * 4 and leg["tokens_per_s"] > 0


def test_churn_loads_and_evicts_within_the_resident_bound(many_run):
    result = many_run[0]["results"]["many"]
    for leg in result["headline"]["legs"]:
        counters = leg["counters"]
        assert counters["evictions"] <= counters["loads"] + 3  # a warm-up's residents may leave
        assert leg["peaks"].get("resident", 0) <= 3  # never more than the device slots, on either server
        if leg["traffic"] == "one":
            assert counters["loads"] == 0 and leg["device_hit_ratio"] == 1.0
    uniform = [leg for leg in result["headline"]["legs"] if leg["traffic"] == "uniform"]
    assert all(leg["counters"]["loads"] > 0 for leg in uniform)  # 8 adapters over 3 slots: misses happen
    peft = [leg for leg in result["headline"]["legs"] if leg["side"] == "peft"]
    assert all(leg["counters"]["hits"] + leg["counters"]["loads"] == leg["ok"] for leg in peft)


def test_the_registry_part_times_every_operation(many_run):
    registry = many_run[0]["results"]["many"]["registry"]
    assert registry["entries"] == 200 and registry["pages_checked"]
    for key in ("add_ms", "get_ms", "list_50_ms", "count_ms"):
        assert registry[key]["n"] == 25 and registry[key]["median"] > 0
    assert many_run[0]["results"]["many"]["adapters"]["count"] == 8


def test_quick_many_targets_are_no_claim(many_run):
    checks = {check["id"]: check for check in many_run[0]["targets"]}
    for target in ("many_zipf", "many_uniform", "many_vs_peft", "many_ttft", "registry_add", "registry_get",
                   "registry_list"):
        assert checks[target]["status"] == "not a claim (tiny model)" and checks[target]["value"] > 0


def test_cli_accepts_only_many(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path), "--only", "many", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
