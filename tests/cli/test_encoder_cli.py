"""``adapterhub classify`` and ``adapterhub tag`` on a tiny BERT with plain PEFT encoder adapters."""

from __future__ import annotations

import json

import pytest

from adapterhub import load_base
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.cli import main
from adapterhub.runtime.testing import make_random_encoder_adapters

TEXTS = ["Apple sold $4.2 billion of bonds, up 8%.", "No entities here."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    bert_dir = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    base = load_base(str(bert_dir), device="cpu")
    root = tmp_path_factory.mktemp("encoder-cli")
    seq = make_random_encoder_adapters(base, root, prefix="sentiment", std=0.5)[0]
    tok = make_random_encoder_adapters(base, root, task_type="TOKEN_CLS", labels=("ORG", "MONEY"), prefix="ner",
                                       std=0.5)[0]
    return bert_dir, seq, tok


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_prints_labels_and_json(capsys, setup, registry_root):
    bert_dir, seq, _ = setup
    code, out, _ = run(capsys, "classify", "--base", bert_dir, "--domain", seq, "--scores", *TEXTS)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert all(line.split("\t")[0] in ("positive", "negative", "neutral") for line in lines)
    code, out, _ = run(capsys, "classify", "--base", bert_dir, "--domain", seq, "--json", *TEXTS)
    rows = json.loads(out)
    assert [row["text"] for row in rows] == TEXTS
    assert all(list(row["scores"]) == ["positive", "negative", "neutral"] for row in rows)


def test_tag_prints_spans_and_json(capsys, setup, registry_root):
    bert_dir, _, tok = setup
    code, out, _ = run(capsys, "tag", "--base", bert_dir, "--domain", tok, "--json", *TEXTS)
    rows = json.loads(out)
    assert code == 0 and [row["text"] for row in rows] == TEXTS
    for row in rows:
        for entity in row["entities"]:
            assert row["text"][entity["start"]:entity["end"]] == entity["text"]
            assert entity["label"] in ("ORG", "MONEY")
    code, out, _ = run(capsys, "tag", "--base", bert_dir, "--domain", tok, TEXTS[0])
    assert code == 0 and out.startswith(TEXTS[0])


def test_wrong_adapter_kind_is_one_error_line(capsys, setup, registry_root):
    bert_dir, seq, _ = setup
    code, _, err = run(capsys, "tag", "--base", bert_dir, "--domain", seq, "text")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
