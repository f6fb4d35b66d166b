"""The bench's encoder area on the tiny models: mixed-adapter forward vs bare, encoder vs decoder classification."""

from __future__ import annotations

from adapterhub.bench import BenchConfig, run_bench


def test_encoder_area_reports_ratios_throughput_and_memory(tiny_llama_dir, tmp_path):
    config = BenchConfig.preset(quick=True, base=str(tiny_llama_dir), out=tmp_path / "out", work=tmp_path / "work",
                                areas=("encoder",))
    report = run_bench(config, progress=False)
    encoder = report["results"]["encoder"]
    assert set(encoder["forward"]["ratio_to_bare"]) == {"single", "mixed_8"}
    assert all(value > 0 for value in encoder["forward"]["ratio_to_bare"].values())
    for side in ("encoder", "decoder"):
        assert encoder[side]["texts_per_second"] > 0 and encoder[side]["total_bytes"] > encoder[side]["adapter_bytes"] > 0
    check = next(check for check in report["targets"] if check["id"] == "encoder_mixed_8")
    assert check["status"] == "not a claim (tiny model)" and check["verdict"] in ("met", "MISSED") and check["limit"] == 1.15
    assert "## 8. Encoder adapters" in (tmp_path / "out" / "bench.md").read_text()
