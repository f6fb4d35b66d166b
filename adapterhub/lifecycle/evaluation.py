"""Scoring a registered adapter on a data file through the serving path (an :class:`AdapterHub`), for gates.

The adapter is pinned exactly as a server pins a request's version (``finance@4`` stays resident under
that string beside any other version), and scored with the calls a server answers with:

* classification adapters (decoder label scoring, or an encoder's classification head) — ``accuracy``, ``macro_f1``, ``micro_f1`` (single-label: equal to accuracy),
  per-label ``f1`` and ``loss`` (mean negative log of the true label's share among the labels), by the
  same label scoring as ``/v1/classify``;
* every decoder adapter — ``loss`` and ``perplexity`` on the supervised tokens of the recipe's format,
  from the routed forward pass the stepper runs;
* instruction adapters whose answers are JSON objects (the education recipe) — also ``json_valid``,
  ``exact_match`` and per-field ``field_accuracy`` of greedy answers generated as a server generates them
  (:func:`adapterhub.training.json_metrics.json_answer_metrics`).

>>> ServingEvaluator(hub)("finance@4", None)["accuracy"]  # doctest: +SKIP
0.9167
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..training.data import encode_split, map_fields, output_text, read_rows
from ..training.evaluate import label_metrics
from ..training.examples import IGNORE
from ..training.json_metrics import json_answer_metrics
from ..training.recipe import Source

MAX_ANSWER_TOKENS = 256  # a JSON answer longer than the longest reference plus 8 tokens is cut here


class ServingEvaluator:
    """``evaluator(ref, data) -> metrics`` over one hub (what :meth:`Registry.promote` calls).

    Args:
        hub: the :class:`~adapterhub.AdapterHub` whose registry holds the adapters (a server's own hub
            evaluates on the very base it serves).
        batch_size: rows per forward pass.
    """

    def __init__(self, hub: Any, *, batch_size: int = 16) -> None:
        self.hub = hub
        self.batch_size = batch_size

    def __call__(self, ref: str, data: Any = None) -> dict[str, Any]:
        record = self.hub.registry.get(ref)
        recipe = record.manifest.get("recipe") or {}
        spec = recipe.get("data") or {}
        path = Path(data).expanduser() if data is not None else _recipe_test_file(record.ref, spec)
        if not path.is_file():
            raise DataError(f"evaluation data {path} for {record.ref} does not exist",
                            fix="pass data= an existing .jsonl/.csv file", cli_fix="pass --data FILE")
        fmt = spec.get("format") or ("classification" if record.task.is_classification else "completion")
        rows = map_fields(read_rows(Source(path=str(path))), fmt=fmt, fields=spec.get("fields") or {},
                          origin=str(path))
        entry = self.hub.residency.pin(record.ref, exact=True)
        try:
            metrics: dict[str, Any] = {"ref": record.ref, "data": str(path), "rows": len(rows)}
            if record.task.is_encoder_task and record.task.type != "sequence_classification":
                raise DataError(f"{record.ref} is a {record.task.type} adapter; promotion gates evaluate "
                                "classifiers and generation adapters only", fix="promote it without a gate",
                                cli_fix="promote it without --gate")
            if record.task.is_classification or record.task.is_encoder_task:
                metrics.update(self._labels(entry, record.task, rows))
            else:
                metrics.update(self._loss(entry, record.task, rows, fmt, int(spec.get("max_length") or 512)))
                if fmt == "instruction" and rows and all(isinstance(row["output"], dict) for row in rows):
                    metrics.update(self._json_answers(entry, rows))
            return metrics
        finally:
            self.hub.residency.unpin(entry)

    def _labels(self, entry: Any, task: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
        texts, truth = [str(row["text"]) for row in rows], [str(row["label"]) for row in rows]
        if task.is_encoder_task:  # the encoder's head answers probabilities per label, as /v1/classify does
            shares = [answer["scores"] for answer in self.hub.classify(texts, domain=entry)]
        else:
            shares = self.hub.label_scores(texts, domain=entry, batch_size=self.batch_size, normalize=True)
        predicted = [max(row, key=row.get) for row in shares]
        found = label_metrics(predicted, truth, labels=task.labels)
        loss = -sum(math.log(max(row.get(label, 0.0), 1e-12)) for row, label in zip(shares, truth)) / max(len(rows), 1)
        return {**found, "micro_f1": found["accuracy"], "loss": round(loss, 4)}

    def _loss(self, entry: Any, task: Any, rows: list[dict[str, Any]], fmt: str, max_length: int) -> dict[str, Any]:
        import torch

        examples = encode_split(rows, fmt=fmt, tokenizer=self.hub.tokenizer, task=task, max_length=max_length,
                                origin="evaluation")
        total, count = 0.0, 0
        for example in examples:
            logits = self.hub.logits(torch.tensor([example.input_ids]), domain=entry)[0].float()
            labels = torch.tensor(example.labels[1:])
            mask = labels != IGNORE
            if mask.any():
                picked = torch.log_softmax(logits[:-1][mask], dim=-1).gather(1, labels[mask][:, None])
                total, count = total - float(picked.sum()), count + int(mask.sum())
        loss = total / max(count, 1)
        return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50)), 4), "tokens": count}

    def _json_answers(self, entry: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [str(row["instruction"]) + (f"\n\n{row['input']}" if row.get("input") else "") for row in rows]
        longest = max(len(self.hub.tokenizer(output_text(row["output"]))["input_ids"]) for row in rows)
        answers: list[str] = []
        for start in range(0, len(prompts), self.batch_size):  # the adapter's own prompt rendering, greedy
            answers += self.hub.generate(prompts[start:start + self.batch_size], domain=entry,
                                         max_new_tokens=min(longest + 8, MAX_ANSWER_TOKENS))
        return json_answer_metrics(answers, [row["output"] for row in rows])


def _recipe_test_file(ref: str, spec: dict[str, Any]) -> Path:
    test = spec.get("test")
    if isinstance(test, dict):
        test = test.get("path")
    if not test:
        raise DataError(f"{ref} was registered without a recipe test file, so there is nothing to evaluate it on",
                        fix="pass data= a .jsonl file", cli_fix="pass --data FILE")
    return Path(str(test)).expanduser()
