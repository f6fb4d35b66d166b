"""Scoring an adapter that answers in JSON: generate each held-out answer under the response schema, then
:func:`~adapterhub.training.json_metrics.json_answer_metrics` (validity, exact match, each field's accuracy).

An instruction recipe whose ``serve:`` section (or a stored adapter whose contract) has a response schema,
and whose rows' answers are objects (the education recipe's ``{"subject": …, "level": …}``), is judged by
what a caller gets: greedy answers, each constrained to the schema by its own grammar state
(:mod:`adapterhub.grammar`, the engine the server uses), ended by end-of-text or the closed JSON value.
Training scores its final splits this way and ``adapterhub evaluate`` scores the file it is given.

>>> answer_metrics(peft_model, tokenizer, task, rows, schema=EDUCATION)  # doctest: +SKIP
{'rows': 96, 'json_valid': 1.0, 'exact_match': 0.81, 'subject_accuracy': 0.9, 'level_accuracy': 0.86}
"""

from __future__ import annotations

from typing import Any, Sequence

from ..prompts import TaskSpec, prompt_ids, render_prompt
from ..tokens import left_pad, pad_id_of
from .data import instruction_text
from .json_metrics import json_answer_metrics
from .progress import row_bar

ANSWER_TOKENS = 64
"""New tokens an answer may take (one that has not closed its JSON by then counts as invalid)."""


def scores_answers(fmt: str | None, rows: Sequence[dict[str, Any]], schema: Any) -> bool:
    """Whether a split is scored by :func:`answer_metrics`: a response schema, instruction rows, object answers."""
    return (schema is not None and fmt == "instruction" and bool(rows)
            and all(isinstance(row.get("output"), dict) for row in rows))


def answer_metrics(model: Any, tokenizer: Any, task: TaskSpec, rows: Sequence[dict[str, Any]], *, schema: Any,
                   batch_size: int = 16, device: Any = "cpu", max_new_tokens: int = ANSWER_TOKENS,
                   progress: str | None = None) -> dict[str, Any]:
    """Generate every row's answer under ``schema`` and score it against the row's ``output`` object.

    Args:
        model: a causal LM with the adapter active (a ``PeftModel``, or the bare base).
        tokenizer: the base tokenizer.
        task: the adapter's task (its prompt template renders each row's ``instruction`` as training did).
        rows: canonical instruction rows (``instruction``, ``input``?, ``output``).
        schema: the response JSON schema the answers are constrained to (and validated against).
        batch_size: rows generated together.
        max_new_tokens: tokens an answer may take.
        progress: a progress bar's label on stderr (``None``: no bar).

    Returns:
        ``{"rows", "json_valid", "exact_match", "<field>_accuracy" for each answer field}``.
    """
    from ..grammar import Grammars, schema_dict

    schema = schema_dict(schema)
    grammars = Grammars(tokenizer, vocab_size=int(model.config.vocab_size))
    compiled = grammars.compile(schema)
    texts: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with row_bar(progress, len(rows)) as bar:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                prompts = [prompt_ids(tokenizer, render_prompt(tokenizer, task, instruction_text(row))) for row in chunk]
                states = [grammars.state(compiled) for _ in chunk]
                texts.extend(constrained_greedy(model, tokenizer, prompts, states, max_new_tokens=max_new_tokens,
                                                device=device))
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    scores = json_answer_metrics(texts, [row["output"] for row in rows], schema=schema)
    fields = scores.pop("field_accuracy")
    return {**scores, **{f"{field}_accuracy": value for field, value in fields.items()}}


def constrained_greedy(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], states: Sequence[Any], *,
                       max_new_tokens: int, device: Any = "cpu") -> list[str]:
    """Greedy answers to token ``prompts`` (left-padded into one batch), row ``i`` kept inside ``states[i]``'s
    grammar; a row ends at end-of-text or where its JSON value closes. Returns the decoded answers."""
    import torch
    from transformers import LogitsProcessorList

    input_ids, attention_mask = left_pad(prompts, pad_id=pad_id_of(tokenizer), device=device)
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=pad_id_of(tokenizer), eos_token_id=eos,
                                logits_processor=LogitsProcessorList([_RowGrammars(states, eos)]))
    answers = output[:, input_ids.shape[1]:].tolist()
    return [tokenizer.decode([t for t in answer if t != eos], skip_special_tokens=True) for answer in answers]


class _RowGrammars:
    """A transformers logits processor: each row's logits masked by its own grammar state, which advances on
    the token the row chose last; a row whose value has closed may only end."""

    def __init__(self, states: Sequence[Any], eos: int) -> None:
        self.states, self.eos, self.started = list(states), eos, False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for row, state in enumerate(self.states):
            if self.started and not state.complete:
                state.accept(int(input_ids[row, -1]))
            if state.complete:
                scores[row].fill_(float("-inf"))
                scores[row, self.eos] = 0.0
            else:
                state.mask(scores[row])
        self.started = True
        return scores
