"""Encoder recipes on a tiny BERT: sequence and token classification train, evaluate, register and load in PEFT."""

from __future__ import annotations

import json

import pytest
import torch

from adapterhub import load_base
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.errors import DataError, RecipeError
from adapterhub.registry import Registry
from adapterhub.runtime import AdapterHub
from adapterhub.training import load_recipe, train
from tests.helpers.recipes import write_jsonl

SEQ_ROWS = [{"text": "Revenue rose and margins widened.", "label": "positive"},
            {"text": "The bank cut jobs after a loss.", "label": "negative"},
            {"text": "The board meets on Tuesday.", "label": "neutral"}] * 4
NER_TEXTS = [("Aspirin helps the patient with COPD.", [("Aspirin", "DRUG"), ("COPD", "DISEASE")]),
             ("She denies chest pain and takes metformin.", [("metformin", "DRUG")]),
             ("No findings today.", []),
             ("Type 2 diabetes was treated with metformin.", [("Type 2 diabetes", "DISEASE"), ("metformin", "DRUG")])]


def ner_rows():
    rows = []
    for text, found in NER_TEXTS:
        entities = [{"start": text.index(span), "end": text.index(span) + len(span), "label": label}
                    for span, label in found]
        rows.append({"text": text, "entities": entities})
    return rows * 3


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def encoder_recipe(folder, bert_dir, fmt, rows, labels, **training):
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "validation.jsonl", rows[:6])
    return {"name": f"tiny-{fmt.split('_')[0]}", "base": {"model": str(bert_dir), "device": "cpu"},
            "adapter": {"method": "lora", "r": 4, "alpha": 8},
            "data": {"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl"),
                     "test": str(folder / "validation.jsonl"), "format": fmt, "labels": labels, "max_length": 64},
            "training": {"epochs": 2, "batch_size": 4, "lr": 5e-3, "eval_batch_size": 8, **training},
            "output": {"registry": str(folder / "registry"), "run_dir": str(folder / "run"), "register_anyway": True}}


def test_sequence_classification_trains_registers_and_loads_in_plain_peft(tmp_path, bert_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    labels = ["positive", "negative", "neutral"]
    recipe = encoder_recipe(tmp_path, bert_dir, "sequence_classification", SEQ_ROWS, labels,
                            early_stopping={"metric": "macro_f1", "patience": 3})
    result = train(recipe, progress=False)
    validation = result.metrics["validation"]
    assert set(validation["per_label"]) == set(labels) and "macro" in validation and "micro" in validation
    assert sum(row["support"] for row in validation["per_label"].values()) == 6
    assert (result.run_dir / "confusion_matrix.png").is_file()
    assert (result.run_dir / "confusion_matrix_test.png").is_file()
    record = result.record
    assert record.task.type == "sequence_classification" and record.task.labels == tuple(labels)
    config = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "classifier" in config["modules_to_save"]
    base = load_base(str(bert_dir), device="cpu")
    reference = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
        bert_dir, num_labels=3, id2label=dict(enumerate(labels))), str(result.run_dir / "adapter")).eval()
    texts = [row["text"] for row in SEQ_ROWS[:3]]
    with torch.no_grad():
        expected = reference(**base.tokenizer(texts, padding=True, return_tensors="pt")).logits
    with AdapterHub(base, registry=Registry(tmp_path / "registry")) as hub:
        ours = hub.head_logits(texts, domain=record.name)
        assert hub.classify(texts[0], domain=record.name)["label"] in labels
    for row in range(3):
        torch.testing.assert_close(ours[row], expected[row], atol=1e-4, rtol=0)


@pytest.mark.parametrize("conll", [False, True], ids=["char-offsets", "conll"])
def test_token_classification_trains_with_entity_metrics(tmp_path, bert_dir, conll, capsys):
    from peft import PeftModel
    from transformers import AutoModelForTokenClassification

    rows = ner_rows()
    if conll:  # the same sentences as CoNLL tokens and tags
        rows = [{"tokens": ["Aspirin", "helps", "COPD", "."], "tags": ["B-DRUG", "O", "B-DISEASE", "O"]},
                {"tokens": ["type", "2", "diabetes", "again"], "tags": ["B-DISEASE", "I-DISEASE", "I-DISEASE", "O"]}] * 4
    recipe = encoder_recipe(tmp_path, bert_dir, "token_classification", rows, ["DRUG", "DISEASE"],
                            early_stopping={"metric": "f1", "patience": 5})
    result = train(recipe, progress=False)
    validation = result.metrics["validation"]
    assert set(validation["per_type"]) == {"DRUG", "DISEASE"}
    assert {"precision", "recall", "f1", "macro_f1", "support"} <= set(validation)
    assert validation["support"] == sum(row["support"] for row in validation["per_type"].values()) > 0
    assert set(validation["overlap"]["per_type"]) == {"DRUG", "DISEASE"} and "argmax_decode" in validation
    assert set(validation["errors"]["counts"]) == {"boundary", "spurious", "wrong_type", "missed"}
    saved = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]["validation"]
    assert saved["errors"]["counts"] == validation["errors"]["counts"]
    assert (result.run_dir / "entity_errors.png").read_bytes()[:4] == b"\x89PNG"  # F1 and error kinds per type
    record = result.record
    assert record.task.head_labels == ("O", "B-DRUG", "I-DRUG", "B-DISEASE", "I-DISEASE")
    reference = PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(
        bert_dir, num_labels=5, id2label=dict(enumerate(record.task.head_labels))), str(result.run_dir / "adapter"))
    assert reference.eval() is not None
    with AdapterHub(str(bert_dir), device="cpu", registry=Registry(tmp_path / "registry")) as hub:
        for entity in hub.tag("Aspirin helps the patient with COPD.", domain=record.name):
            assert entity["label"] in ("DRUG", "DISEASE")
    if not conll:  # adapterhub evaluate prints exact and overlap F1 per type and the error kinds
        from adapterhub.cli import main

        assert main(["evaluate", record.ref, "--data", str(tmp_path / "validation.jsonl"),
                     "--registry", str(tmp_path / "registry")]) == 0
        printed = capsys.readouterr().out
        assert "overlap F1" in printed and "boundary / spurious / wrong_type / missed" in printed
        assert "without the BIO repair" in printed and "all (micro)" in printed


@pytest.mark.parametrize("entities, message", [
    ([{"start": 0, "end": 4, "label": "DRUG"}], "word boundaries"),
    ([{"start": 0, "end": 7, "label": "VIRUS"}], "not in data.labels"),
    ([{"start": 0, "end": 8, "label": "DRUG"}], "whitespace"),
    ([{"start": 30, "end": 99, "label": "DRUG"}], "outside the text"),
])
def test_bad_entities_are_clear_data_errors(tmp_path, bert_dir, entities, message):
    rows = [{"text": "Aspirin helps the patient with COPD.", "entities": entities}]
    recipe = encoder_recipe(tmp_path, bert_dir, "token_classification", rows, ["DRUG", "DISEASE"])
    with pytest.raises(DataError, match=message):
        train(recipe, progress=False)


def test_encoder_recipe_on_a_decoder_base_is_refused(tmp_path, tiny_llama_dir):
    recipe = encoder_recipe(tmp_path, tiny_llama_dir, "sequence_classification", SEQ_ROWS, ["positive", "negative",
                                                                                          "neutral"])
    with pytest.raises(RecipeError, match="needs an encoder base"):
        train(recipe, progress=False)


def test_recipe_rules_for_encoder_formats(tmp_path, bert_dir):
    recipe = encoder_recipe(tmp_path, bert_dir, "token_classification", ner_rows(), ["DRUG"])
    with pytest.raises(RecipeError, match="metric 'accuracy' needs data.format"):
        load_recipe({**recipe, "training": {"early_stopping": {"metric": "accuracy"}}})
    with pytest.raises(RecipeError, match="adapter.method 'lora' only"):
        load_recipe({**recipe, "adapter": {"method": "prefix"}})
    with pytest.raises(RecipeError, match="data.labels is required"):
        load_recipe({**recipe, "data": {**recipe["data"], "labels": None}})
    assert load_recipe(recipe).task.head_labels == ("O", "B-DRUG", "I-DRUG")
