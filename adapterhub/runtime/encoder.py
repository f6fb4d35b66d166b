"""Encoder calls: ``classify`` and ``tag`` — one routed encoder forward, then each row's own head.

Rows of different adapters (sequence and token classification alike) share one forward of the
encoder body: their LoRA deltas are routed per row like a decoder's, and each row's logits come
from its adapter's head (:class:`~adapterhub.runtime.heads.HeadBank`). ``AdapterHub`` gets these
methods from :class:`EncoderCalls`.

>>> hub = AdapterHub("minilm-l6")                                           # doctest: +SKIP
>>> hub.classify("Shares jumped 8% after earnings.", domain="finance-encoder")  # doctest: +SKIP
{'label': 'positive', 'scores': {'positive': 0.97, 'negative': 0.01, 'neutral': 0.02}}
>>> hub.tag("Pfizer rose 3.5%.", domain="finance-ner")                      # doctest: +SKIP
[{'start': 0, 'end': 6, 'label': 'ORG', 'text': 'Pfizer', 'score': 0.98}, ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..entities import entities_from_logits, words_of
from ..errors import TaskMismatchError
from . import mixing
from .batch import UNSET

MAX_TOKENS = 512


@dataclass
class EncodedTexts:
    """A right-padded batch of texts with each row's words (character spans, first token)."""

    input_ids: Any  # [B, T]
    attention_mask: Any  # [B, T]
    words: list[list[tuple[int, int]]]
    firsts: list[list[int]]


def encode_texts(tokenizer: Any, texts: Sequence[str], *, device: Any = "cpu", max_length: int = MAX_TOKENS) -> EncodedTexts:
    """Tokenize with offsets (fast tokenizer), truncating to ``max_length`` tokens."""
    limit = min(max_length, int(getattr(tokenizer, "model_max_length", max_length) or max_length))
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_offsets_mapping=True,
                      return_tensors="pt")
    words, firsts = zip(*(words_of(batch.encodings[i]) for i in range(len(texts)))) if texts else ((), ())
    return EncodedTexts(batch["input_ids"].to(device), batch["attention_mask"].to(device), list(words), list(firsts))


def body_forward(model: Any, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
    """``(last hidden states [B, T, H], pooled [B, H] or None)`` of an encoder body."""
    import torch

    output = model(input_ids=input_ids, attention_mask=attention_mask,
                   token_type_ids=torch.zeros_like(input_ids))
    return output.last_hidden_state, getattr(output, "pooler_output", None)


def classification_result(logits: Any, labels: Sequence[str]) -> dict[str, Any]:
    """``{"label", "scores": {label: probability}}`` (labels in the adapter's order)."""
    probabilities = logits.float().softmax(-1).tolist()
    best = max(range(len(labels)), key=lambda i: probabilities[i])
    return {"label": labels[best], "scores": {label: round(p, 6) for label, p in zip(labels, probabilities)}}


class EncoderCalls:
    """``classify`` / ``tag`` / ``analyze`` / ``head_logits`` for :class:`~adapterhub.runtime.AdapterHub`.

    Uses the hub's public ``base``, ``tokenizer``, ``domain`` and ``residency``.
    """

    def classify(self, texts: str | Sequence[str], *, domain: Any = None, domains: Sequence[str | None] | None = None,
                 batch_size: int = 32) -> Any:
        """Label and per-label probabilities from each row's sequence-classification adapter.

        Args:
            texts: one text or a list.
            domain: adapter for every text (default: the hub's current domain); ``domains``: one per text.
            batch_size: texts per encoder forward.

        Returns:
            ``{"label": str, "scores": {label: probability}}`` (labels in the adapter's order) for one
            text, a list for a list.

        Raises:
            TaskMismatchError: the base is no encoder, or a row's adapter is not a sequence classifier.

        >>> hub.classify(["Shares fell 9%.", "Sales rose."], domain="finance-encoder")[0]["label"]  # doctest: +SKIP
        'negative'
        """
        return self._encoder_call(texts, domain, domains, batch_size, only="sequence_classification")

    def tag(self, texts: str | Sequence[str], *, domain: Any = None, domains: Sequence[str | None] | None = None,
            batch_size: int = 32) -> Any:
        """Entities with character offsets from each row's token-classification (NER) adapter.

        Returns:
            For one text a list of ``{"start", "end", "label", "text", "score"}`` (``text[start:end]`` is
            the entity, ``score`` the mean tag probability over its words); a list of those for a list.

        Raises:
            TaskMismatchError: the base is no encoder, or a row's adapter is not a token classifier.

        >>> hub.tag("She takes metformin for type 2 diabetes.", domain="medical-ner")  # doctest: +SKIP
        [{'start': 10, 'end': 19, 'label': 'DRUG', 'text': 'metformin', 'score': 0.99}, ...]
        """
        return self._encoder_call(texts, domain, domains, batch_size, only="token_classification")

    def analyze(self, texts: Sequence[str], *, domains: Sequence[str | None], batch_size: int = 32) -> list[Any]:
        """A mixed batch: each text through its own adapter, classifiers and taggers in one forward.

        Returns:
            Per text what :meth:`classify` or :meth:`tag` returns for its adapter.

        >>> hub.analyze(["Pfizer rose 3%.", "Shares fell."], domains=["finance-ner", "finance-encoder"])  # doctest: +SKIP
        """
        return self._encoder_call(list(texts), None, domains, batch_size, only=None)

    def head_logits(self, texts: Sequence[str], *, domain: Any = None, domains: Sequence[str | None] | None = None,
                    batch_size: int = 32) -> list[Any]:
        """Each row's raw head logits (``[labels]`` or ``[tokens, tags]``; ``None`` for bare rows), one forward per batch.

        Token rows keep every token position of the padded batch, special tokens included.
        """
        return self._encoder_rows(list(texts), self._encoder_names(len(texts), domain, domains), batch_size,
                                  only=None, raw=True)

    # --- internals ---------------------------------------------------------------------------------
    def _encoder_names(self, count: int, domain: Any, domains: Any) -> list[mixing.RowDomain]:
        if getattr(self.base, "kind", "decoder") != "encoder":
            raise TaskMismatchError(f"classify/tag need an encoder base (e.g. AdapterHub('minilm-l6')); "
                                    f"{self.base.spec.name!r} is a decoder: use predict or generate")
        return mixing.call_rows(count, UNSET if domain is None else domain, domains, default=self.domain)

    def _encoder_call(self, texts: Any, domain: Any, domains: Any, batch_size: int, *, only: str | None) -> Any:
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        names = self.resolve_auto_rows(self._encoder_names(len(items), domain, domains), items,
                                       task="tag" if only == "token_classification" else "classify")
        results = self._encoder_rows(items, names, batch_size, only=only)
        return results[0] if single else results

    def _encoder_rows(self, texts: list[str], names: list[mixing.RowDomain], batch_size: int, *, only: str | None,
                      raw: bool = False) -> list[Any]:
        import torch

        results: list[Any] = []
        limit = min(MAX_TOKENS, int(getattr(self.base.model.config, "max_position_embeddings", MAX_TOKENS)))
        with self.residency.pinned(names) as rows:
            for entry, name in zip(rows, names):
                if raw and entry is None:
                    continue
                task = None if entry is None else entry.task
                if task is None or not task.is_encoder_task or (only and task.type != only):
                    wanted = only or "sequence or token classification"
                    have = "the bare base" if entry is None else f"a {task.type} adapter"
                    raise TaskMismatchError(f"row adapter {mixing.row_label(name)!r} is {have}; this call needs "
                                            f"{wanted} adapters "
                                            "(classify: sequence_classification, tag: token_classification)")
            for start in range(0, len(texts), batch_size):
                chunk, chunk_rows = texts[start:start + batch_size], rows[start:start + batch_size]
                encoded = encode_texts(self.tokenizer, chunk, device=self.residency.device, max_length=limit)
                routing = self.residency.routing(chunk_rows)
                with routing.applied(), torch.inference_mode():
                    hidden, pooled = body_forward(self.base.model, encoded.input_ids, encoded.attention_mask)
                    logits = self.residency.head_logits(hidden, pooled, chunk_rows)
                for row, (text, entry) in enumerate(zip(chunk, chunk_rows)):
                    if raw or entry is None:
                        results.append(None if logits[row] is None else logits[row].cpu())
                    elif entry.task.type == "sequence_classification":
                        results.append(classification_result(logits[row], entry.task.head_labels))
                    else:
                        firsts = encoded.firsts[row]
                        results.append(entities_from_logits(logits[row][firsts], text, encoded.words[row],
                                                            entry.task.head_labels))
        return results
