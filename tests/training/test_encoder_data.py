"""Encoder data: entity spans to BIO tags on word pieces, CoNLL rows, and the data errors."""

from __future__ import annotations

import pytest

from adapterhub.base.tiny import make_tiny_wordpiece_tokenizer
from adapterhub.entities import IGNORE, spans_from_tags, word_tags, words_of
from adapterhub.errors import DataError
from adapterhub.prompts import TaskSpec
from adapterhub.training.data import map_fields
from adapterhub.training.encoder_data import encode_rows

TASK = TaskSpec(type="token_classification", labels=("DISEASE", "DRUG", "SYMPTOM"))


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_wordpiece_tokenizer()


def test_tags_sit_on_each_words_first_piece(tokenizer):
    text = "Parkinson's disease foundation gave metformin-sitagliptin; denies chest pain."
    spans = [("Parkinson's disease", "DISEASE"), ("metformin-sitagliptin", "DRUG"), ("chest pain", "SYMPTOM")]
    row = {"text": text, "entities": [{"start": text.index(s), "end": text.index(s) + len(s), "label": l}
                                      for s, l in spans]}
    [example] = encode_rows([row], tokenizer=tokenizer, task=TASK, max_length=128, origin="t")
    encoding = tokenizer(text, return_offsets_mapping=True)
    words, firsts = words_of(encoding)
    tags = [TASK.head_labels[example.labels[i]] for i in firsts]
    assert all(label == IGNORE for i, label in enumerate(example.labels) if i not in firsts)
    decoded = spans_from_tags(words, tags)
    assert [(text[e["start"]:e["end"]], e["label"]) for e in decoded] == spans


def test_conll_rows_become_text_and_offsets():
    rows = map_fields([{"words": ["Apple", "rose", "8", "%"], "ner": ["B-ORG", "O", "B-PERCENT", "I-PERCENT"]}],
                      fmt="token_classification", fields={"tokens": "words", "tags": "ner"}, origin="t")
    assert rows == [{"text": "Apple rose 8 %", "entities": [{"start": 0, "end": 5, "label": "ORG"},
                                                            {"start": 11, "end": 14, "label": "PERCENT"}]}]


def test_overlapping_entities_and_long_texts_are_errors(tokenizer):
    row = {"text": "chest pain", "entities": [{"start": 0, "end": 10, "label": "SYMPTOM"},
                                                {"start": 6, "end": 10, "label": "SYMPTOM"}]}
    with pytest.raises(DataError, match="overlap"):
        encode_rows([row], tokenizer=tokenizer, task=TASK, max_length=128, origin="t")
    with pytest.raises(DataError, match="raise data.max_length"):
        encode_rows([{"text": "pain " * 40, "entities": []}], tokenizer=tokenizer, task=TASK, max_length=16, origin="t")


def test_word_tags_mark_every_word_inside_a_span():
    assert word_tags([(0, 3), (4, 8), (9, 12)], [{"start": 4, "end": 12, "label": "DRUG"}]) == ["O", "B-DRUG", "I-DRUG"]
