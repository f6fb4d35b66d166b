"""``recipe check`` warnings, the missing-field hint, and ``train`` checking the data before the base loads."""

from __future__ import annotations

import pytest
import yaml

from adapterhub.cli import main
from adapterhub.errors import DataError
from adapterhub.training import train
from adapterhub.training.dry_run import check_recipe
from tests.helpers.recipes import classification_rows, tiny_recipe, write_jsonl


def test_a_label_without_rows_and_evaluation_without_validation_are_warned(tmp_path, tiny_llama_dir, capsys):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, validation_rows=0,
                      data={"labels": ["positive", "negative", "neutral"]},
                      training={"eval_every": 2, "early_stopping": {"metric": "accuracy"}})
    warnings = check_recipe(raw)["warnings"]
    assert any("['neutral'] has no train rows" in w for w in warnings)
    assert any(w.startswith("training.eval_every is set but there are no validation rows") for w in warnings)
    assert any("early_stopping.metric 'accuracy'" in w for w in warnings)
    assert any("nothing shows the adapter beats chance" in w for w in warnings)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["recipe", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok (with warnings below)" in out and "warning: data.labels ['neutral']" in out
    assert check_recipe(tiny_recipe(tmp_path / "fine", tiny_llama_dir))["warnings"] == []


def test_one_row_missing_its_text_is_named_without_renaming_the_field(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir)
    rows = classification_rows(16)
    del rows[6]["text"]
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as caught:
        check_recipe(raw)
    message = str(caught.value)
    assert "row 7" in message and "the other 15 row(s) have it" in message and "data.fields" not in message


def test_train_finds_bad_data_before_it_loads_the_base(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, base={"model": str(tmp_path / "no-such-base")})
    write_jsonl(tmp_path / "train.jsonl", [*classification_rows(15), {"text": "Neutral news.", "label": "neutral"}])
    with pytest.raises(DataError, match="not in data.labels"):  # not the missing base
        train(raw, progress=False)
