"""Checking a recipe and measuring its training speed, without training or registering anything."""

from __future__ import annotations

from adapterhub.training.dry_run import check_recipe, measure_throughput
from adapterhub.registry import Registry
from tests.helpers.recipes import tiny_recipe


def test_check_and_throughput_do_not_train_or_register(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, train_rows=12)
    summary = check_recipe(raw)
    assert summary["train"]["rows"] == 12 and summary["train"]["labels"] == {"positive": 6, "negative": 6}
    assert summary["steps_per_epoch"] == 3 and summary["validation"]["rows"] == 6
    speed = measure_throughput(raw, steps=2, warmup=1)
    assert speed["steps"] == 2 and speed["tokens"] > 0 and speed["tokens_per_second"] > 0
    assert speed["peak_memory_bytes"] > 0 and not (tmp_path / "run").exists() and Registry(raw["output"]["registry"]).list() == []
