"""``python -m adapterhub.bench.rollout`` runs end to end on the tiny model (its figures are the real base's)."""

from __future__ import annotations

import json


def test_the_rollout_bench_moves_a_channel_under_load_and_reports(tiny_llama_dir, tmp_path):
    from adapterhub.bench.rollout import main

    assert main(["--base", str(tiny_llama_dir), "--clients", "4", "--repeats", "1", "--requests", "40",
                 "--poll", "0.2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "rollout.json").read_text())
    assert [(move["via"], move["op"]) for move in result["moves"]] == [
        ("http", "promote"), ("http", "rollback"), ("registry", "promote"), ("registry", "rollback")]
    assert all(move["old_after_switch"] == 0 for move in result["moves"])
    assert result["streaming"]["failures"] == 0 and result["streaming"]["mixed_or_foreign"] == 0
    assert result["canary"]["requests"] == 40 and result["canary"]["candidate"] == 4
