"""Entities as character spans, and their BIO tags over a fast tokenizer's words.

Training rows give entities as character offsets (``{"start", "end", "label"}``) or CoNLL-style
tokens and BIO tags; the model predicts one BIO tag per *word* (at the word's first word piece,
found through the fast tokenizer's ``word_ids`` and offset mapping); predictions go back to
character spans of the input text. Training (:mod:`adapterhub.training.encoder_data`),
evaluation and the runtime's ``tag`` all use these functions, so spans are cut the same way.

>>> words = [(0, 7), (8, 14), (15, 20), (21, 25)]          # "Patient denies chest pain"
>>> tags = word_tags(words, [{"start": 15, "end": 25, "label": "SYMPTOM"}])
>>> tags
['O', 'O', 'B-SYMPTOM', 'I-SYMPTOM']
>>> [(e["start"], e["end"], e["label"]) for e in spans_from_tags(words, tags)]
[(15, 25, 'SYMPTOM')]
>>> conll_to_text(["Pfizer", "rose", "3.5", "%"], ["B-ORG", "O", "B-PERCENT", "I-PERCENT"])
('Pfizer rose 3.5 %', [{'start': 0, 'end': 6, 'label': 'ORG'}, {'start': 12, 'end': 17, 'label': 'PERCENT'}])
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from .errors import DataError

IGNORE = -100
"""Label of a token without loss (special tokens, padding, a word's later word pieces)."""


def check_entities(text: str, entities: Any, labels: Sequence[str], *, where: str) -> list[dict[str, Any]]:
    """Validate a row's entities and return them sorted, as plain ``{"start", "end", "label"}`` dicts.

    Raises:
        DataError: not a list of objects, offsets outside the text or empty, a span with leading or
            trailing whitespace, overlapping spans, or a label not in ``labels``.
    """
    if not isinstance(entities, list):
        raise DataError(f"{where}: 'entities' must be a list of {{start, end, label}} objects")
    clean = []
    for entity in entities:
        try:
            start, end, label = int(entity["start"]), int(entity["end"]), str(entity["label"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: entity {entity!r} needs integer 'start', 'end' and a 'label'") from None
        if not 0 <= start < end <= len(text):
            raise DataError(f"{where}: entity {entity!r} lies outside the text (length {len(text)})")
        if text[start:end] != text[start:end].strip():
            raise DataError(f"{where}: entity {text[start:end]!r} starts or ends with whitespace; trim the span")
        if label not in labels:
            raise DataError(f"{where}: entity label {label!r} is not in data.labels {list(labels)}")
        clean.append({"start": start, "end": end, "label": label})
    clean.sort(key=lambda e: (e["start"], e["end"]))
    for before, after in zip(clean, clean[1:]):
        if after["start"] < before["end"]:
            raise DataError(f"{where}: entities {text[before['start']:before['end']]!r} and "
                            f"{text[after['start']:after['end']]!r} overlap; nested entities are not supported")
    return clean


def conll_to_text(tokens: Sequence[str], tags: Sequence[str], *, where: str = "row") -> tuple[str, list[dict[str, Any]]]:
    """Join CoNLL tokens with single spaces and turn their BIO tags into character spans.

    Raises:
        DataError: token and tag counts differ, or a tag is not ``O``, ``B-X`` or ``I-X``.
    """
    if len(tokens) != len(tags):
        raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag per token")
    words, position = [], 0
    for token in tokens:
        words.append((position, position + len(str(token))))
        position += len(str(token)) + 1
    for tag in tags:
        if tag != "O" and not (isinstance(tag, str) and tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise DataError(f"{where}: tag {tag!r} is not O, B-TYPE or I-TYPE")
    return " ".join(str(t) for t in tokens), spans_from_tags(words, list(tags))


def words_of(encoding: Any) -> tuple[list[tuple[int, int]], list[int]]:
    """``(word character spans, index of each word's first token)`` of one fast-tokenizer encoding.

    ``encoding`` is ``tokenizer(text, return_offsets_mapping=True)`` (a ``BatchEncoding`` of one text,
    or one item of a batch through ``encodings[i]``). Special tokens belong to no word.
    """
    word_ids = encoding.word_ids() if callable(getattr(encoding, "word_ids", None)) else encoding.word_ids
    offsets = encoding["offset_mapping"] if isinstance(encoding, dict) or hasattr(encoding, "keys") else encoding.offsets
    spans: dict[int, list[int]] = {}
    firsts: dict[int, int] = {}
    for index, word in enumerate(word_ids):
        if word is None:
            continue
        start, end = offsets[index]
        if word not in spans:
            spans[word], firsts[word] = [start, end], index
        else:
            spans[word][1] = max(spans[word][1], end)
    order = sorted(spans)
    return [tuple(spans[w]) for w in order], [firsts[w] for w in order]  # type: ignore[misc]


def word_tags(words: Sequence[tuple[int, int]], entities: Sequence[dict[str, Any]]) -> list[str]:
    """The BIO tag of every word: ``B-X`` for the first word inside an entity of type X, ``I-X`` after it.

    A word belongs to an entity when it starts inside the span.
    """
    tags = ["O"] * len(words)
    for entity in entities:
        inside = [i for i, (start, _) in enumerate(words) if entity["start"] <= start < entity["end"]]
        for position, index in enumerate(inside):
            tags[index] = ("B-" if position == 0 else "I-") + entity["label"]
    return tags


def spans_from_tags(words: Sequence[tuple[int, int]], tags: Sequence[str],
                    scores: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Character spans from per-word BIO tags (an ``I-X`` after another type starts a new entity).

    With ``scores`` (one per word) each entity gets ``"score"``: the mean over its words.
    """
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for index, ((start, end), tag) in enumerate(zip(words, tags)):
        kind, _, label = tag.partition("-")
        if tag == "O" or not label:
            current = None
            continue
        if kind == "B" or current is None or current["label"] != label:
            current = {"start": start, "end": end, "label": label, "_scores": []}
            entities.append(current)
        current["end"] = end
        current["_scores"].append(1.0 if scores is None else float(scores[index]))
    for entity in entities:
        values = entity.pop("_scores")
        if scores is not None:
            entity["score"] = round(sum(values) / len(values), 4)
    return entities


DECODES = ("constrained", "argmax")
"""``argmax``: each word's most probable tag (an ``I-X`` after ``O`` or another type opens an entity);
``constrained``: the most probable tag sequence in which ``I-X`` only follows ``B-X`` or ``I-X`` (Viterbi over
the words, no learned transitions: a CRF-free repair of illegal transitions)."""


def legal_after(before: str, tag: str) -> bool:
    """Whether ``tag`` may follow ``before`` (``"O"`` at the start): ``I-X`` continues only ``B-X`` or ``I-X``.

    >>> legal_after("O", "I-DRUG"), legal_after("B-DRUG", "I-DRUG"), legal_after("I-SYMPTOM", "I-DRUG")
    (False, True, False)
    """
    kind, _, label = tag.partition("-")
    return kind != "I" or before in (f"B-{label}", f"I-{label}")


@functools.lru_cache(maxsize=64)
def _transitions(tags: tuple[str, ...]) -> tuple[Any, Any]:
    """``(penalty [from, to], start [to])``: 0 where a transition is legal, -inf where :func:`legal_after` forbids it."""
    import torch

    blocked = torch.tensor([[not legal_after(a, b) for b in tags] for a in tags])
    start = torch.tensor([not legal_after("O", t) for t in tags])
    return (torch.zeros(blocked.shape).masked_fill(blocked, float("-inf")),
            torch.zeros(start.shape).masked_fill(start, float("-inf")))


def constrained_tags(log_probs: Any, tags: Sequence[str]) -> list[int]:
    """The most probable tag index of each word under :func:`legal_after` (Viterbi).

    When each word's own best tag already forms a legal sequence it is the answer (no search runs).

    Args:
        log_probs: ``[words, tags]`` log-probabilities.
        tags: the tag names in order.

    >>> import torch
    >>> tags = ["O", "B-DRUG", "I-DRUG"]
    >>> constrained_tags(torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]]).log(), tags)  # argmax: O, I-DRUG
    [1, 2]
    """
    best = log_probs.argmax(-1).tolist()
    if all(legal_after(before, tags[index]) for before, index in zip(["O"] + [tags[i] for i in best], best)):
        return best
    penalty, start = _transitions(tuple(tags))
    score = log_probs[0].float() + start
    back = []
    for row in log_probs[1:].float():
        step = (score[:, None] + penalty).max(0)
        back.append(step.indices)
        score = step.values + row
    path = [int(score.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return path[::-1]


def entities_from_logits(word_logits: Any, text: str, words: Sequence[tuple[int, int]],
                         tags: Sequence[str], *, decode: str = "constrained") -> list[dict[str, Any]]:
    """Entities ``{"start", "end", "label", "text", "score"}`` from the logits of each word's first piece.

    Args:
        word_logits: ``[words, tags]`` tensor (one row per word, at its first word piece).
        text: the input text (offsets index into it).
        words: each word's character span.
        tags: the head's BIO tags in order (``TaskSpec.head_labels``).
        decode: one of :data:`DECODES`; an entity's score is the mean probability of its words' tags.
    """
    if not len(words):
        return []
    probabilities = word_logits.float().softmax(-1)
    if decode == "constrained":
        best = constrained_tags(probabilities.clamp_min(1e-12).log(), tags)
    elif decode == "argmax":
        best = probabilities.argmax(-1).tolist()
    else:
        raise ValueError(f"decode={decode!r} is not one of {DECODES}")
    scores = [float(probabilities[i, t]) for i, t in enumerate(best)]
    entities = spans_from_tags(words, [tags[i] for i in best], scores)
    return [{"start": e["start"], "end": e["end"], "label": e["label"], "text": text[e["start"]:e["end"]],
             "score": e["score"]} for e in entities]
