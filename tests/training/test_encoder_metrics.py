"""Encoder metrics: the classification report and entity-level scores, checked against seqeval and by hand."""

from __future__ import annotations

import random

import pytest

from adapterhub.entities import spans_from_tags
from adapterhub.training.encoder_metrics import classification_report, entity_report, plot_confusion


def test_classification_report_by_hand(tmp_path):
    report = classification_report(["a", "a", "b", "c"], ["a", "b", "b", "b"], labels=("a", "b", "c"))
    assert report["per_label"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    assert report["per_label"]["b"] == {"precision": 1.0, "recall": 0.3333, "f1": 0.5, "support": 3}
    assert report["accuracy"] == 0.5 and report["micro"]["f1"] == 0.5
    assert report["macro"]["f1"] == round((0.6667 + 0.5 + 0) / 3, 4)
    assert report["confusion"]["matrix"] == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert plot_confusion(tmp_path / "c.png", report["confusion"], title="t").stat().st_size > 1000


@pytest.mark.parametrize("seed", range(5))
def test_entity_report_equals_seqeval(seed):
    """Random BIO sequences: exact-span scores per type and micro-averaged equal seqeval's entity-level ones."""
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(seed)
    tags = ["O", "B-ORG", "I-ORG", "B-MONEY", "I-MONEY", "B-PERCENT"]
    gold, predicted = [], []
    for _ in range(40):
        length = rng.randint(1, 12)
        truth = [rng.choice(tags) for _ in range(length)]
        guess = [t if rng.random() < 0.7 else rng.choice(tags) for t in truth]
        gold.append(truth), predicted.append(guess)
    words = lambda n: [(2 * i, 2 * i + 1) for i in range(n)]  # noqa: E731
    ours = entity_report([spans_from_tags(words(len(p)), p) for p in predicted],
                         [spans_from_tags(words(len(g)), g) for g in gold], types=("ORG", "MONEY", "PERCENT"))
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, predicted), abs=1e-4)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, predicted), abs=1e-4)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, predicted), abs=1e-4)
    report = seqeval.classification_report(gold, predicted, output_dict=True, zero_division=0)
    for kind in ("ORG", "MONEY", "PERCENT"):
        if kind in report:
            assert ours["per_type"][kind]["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-4)
            assert ours["per_type"][kind]["support"] == report[kind]["support"]
