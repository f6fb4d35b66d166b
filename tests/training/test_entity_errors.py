"""NER error analysis: overlap scores and error kinds on a small hand-made example; the BIO repair rule."""

from __future__ import annotations

import itertools

import pytest
import torch

from adapterhub.entities import constrained_tags, entities_from_logits, legal_after
from adapterhub.training.encoder_metrics import entity_report

TEXT = "Severe chest pain, took aspirin; denies nausea. Has COPD."
#       0         1         2         3         4         5
#       0123456789012345678901234567890123456789012345678901234567


def _e(start, end, label):
    return {"start": start, "end": end, "label": label}


GOLD = [_e(7, 17, "SYMPTOM"), _e(24, 31, "DRUG"), _e(40, 46, "SYMPTOM"), _e(52, 56, "DISEASE")]
PREDICTED = [
    _e(0, 17, "SYMPTOM"),   # boundary: took the severity word
    _e(24, 31, "DRUG"),     # exact
    _e(40, 46, "DRUG"),     # wrong type
    _e(33, 39, "SYMPTOM"),  # spurious: "denies"
]                           # COPD: missed


def test_error_kinds_and_overlap_on_a_hand_made_example():
    report = entity_report([PREDICTED], [GOLD], types=("DISEASE", "DRUG", "SYMPTOM"), texts=[TEXT], examples=5)
    assert (report["precision"], report["recall"]) == (0.25, 0.25)  # exact: only aspirin
    assert report["errors"]["counts"] == {"boundary": 1, "spurious": 1, "wrong_type": 1, "missed": 1}
    assert report["errors"]["per_type"]["SYMPTOM"] == {"boundary": 1, "spurious": 1, "wrong_type": 0, "missed": 0}
    assert report["errors"]["per_type"]["DISEASE"]["missed"] == 1
    assert report["errors"]["examples"]["boundary"] == [
        {"text": TEXT, "predicted": "Severe chest pain (SYMPTOM)", "gold": "chest pain (SYMPTOM)"}]
    assert report["errors"]["examples"]["wrong_type"][0]["gold"] == "nausea (SYMPTOM)"
    overlap = report["overlap"]
    # overlap: the boundary error now counts; the wrong type and the spurious span do not
    assert overlap["per_type"]["SYMPTOM"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert overlap["per_type"]["DRUG"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    assert (overlap["precision"], overlap["recall"]) == (0.5, 0.5)
    assert report["per_type"]["SYMPTOM"]["f1"] == 0.0 and report["per_type"]["DISEASE"]["recall"] == 0.0


TAGS = ["O", "B-DRUG", "I-DRUG", "B-SYMPTOM", "I-SYMPTOM"]


def test_the_bio_repair_never_leaves_an_illegal_transition():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        log_probs = torch.randn(7, len(TAGS), generator=generator).mul(3).log_softmax(-1)
        path = [TAGS[i] for i in constrained_tags(log_probs, TAGS)]
        assert all(legal_after(before, tag) for before, tag in zip(["O"] + path, path))


def test_the_bio_repair_is_the_best_legal_sequence():
    """Viterbi equals brute force over every legal tag sequence of a short sentence."""
    log_probs = torch.randn(4, len(TAGS), generator=torch.Generator().manual_seed(3)).log_softmax(-1)
    legal = [seq for seq in itertools.product(range(len(TAGS)), repeat=4)
             if all(legal_after(TAGS[a], TAGS[b]) for a, b in zip((0,) + seq, seq))]
    best = max(legal, key=lambda seq: sum(float(log_probs[i, t]) for i, t in enumerate(seq)))
    assert constrained_tags(log_probs, TAGS) == list(best)


def test_an_orphan_inside_tag_is_repaired_not_turned_into_an_entity():
    """Argmax tags "O I-SYMPTOM" open a spurious one-word entity; the repair weighs it against "B I" and "O O"."""
    text, words = "denies pain", [(0, 6), (7, 11)]
    logits = torch.tensor([[0.70, 0.0, 0.0, 0.30, 0.0], [0.45, 0.0, 0.0, 0.0, 0.55]]).clamp_min(1e-6).log()
    assert [e["text"] for e in entities_from_logits(logits, text, words, TAGS, decode="argmax")] == ["pain"]
    assert entities_from_logits(logits, text, words, TAGS) == []  # O O (0.315) beats B I (0.165)
    logits = torch.tensor([[0.45, 0.0, 0.0, 0.55, 0.0], [0.05, 0.0, 0.0, 0.0, 0.95]]).clamp_min(1e-6).log()
    assert [e["text"] for e in entities_from_logits(logits, text, words, TAGS)] == ["denies pain"]
    with pytest.raises(ValueError, match="decode"):
        entities_from_logits(logits, text, words, TAGS, decode="crf")
