"""Checks of a recipe's data that need no model: run by ``recipe check`` and by ``train`` before the base loads.

Errors (a missing field, a label outside ``data.labels``) raise :class:`~adapterhub.errors.DataError` as
reading the data for training would, only sooner. Warnings are settings that are accepted but cannot do what
they say: a label with no rows, evaluation settings with no validation rows to evaluate on.

>>> settings_warnings(load_recipe({"name": "x", "data": {"train": "t.jsonl", "labels": ["a", "b"]},
...                                "training": {"eval_every": 8}}))  # doctest: +SKIP
['training.eval_every is set but there are no validation rows ...']
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from .data import check_labels, map_fields, read_rows


def settings_warnings(recipe: Any) -> list[str]:
    """Evaluation settings with nothing to evaluate on (no ``data.validation``, no ``validation_split``)."""
    data, training = recipe.data, recipe.training
    if data.validation is not None or data.validation_split > 0:
        return []
    fix = "set data.validation (a file) or data.validation_split (e.g. 0.2)"
    found = []
    if training.eval_every is not None:
        found.append(f"training.eval_every is set but there are no validation rows to evaluate; {fix}")
    if training.early_stopping.metric != "loss":
        found.append(f"training.early_stopping.metric {training.early_stopping.metric!r} picks the best checkpoint "
                     f"on validation rows, but there are none; {fix}")
    if recipe.task.labels and recipe.task.type != "token_classification" and data.test is None:
        found.append(f"nothing shows the adapter beats chance before it is registered (no validation or test rows); "
                     f"{fix}")
    return found


def label_warnings(recipe: Any, counts: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Labels of ``data.labels`` with no rows in a split (``counts``: rows per label per split)."""
    labels = recipe.task.labels
    if not labels:
        return []
    found = []
    for split, per_label in counts.items():
        empty = [label for label in labels if not per_label.get(label)]
        if empty:
            what = "entities" if recipe.task.type == "token_classification" else "rows"
            found.append(f"data.labels {empty} ha{'s' if len(empty) == 1 else 've'} no {split} {what}: "
                         f"{'the adapter cannot learn ' + ('it' if len(empty) == 1 else 'them') if split == 'train' else 'they are not evaluated'}"
                         f"; add rows or remove the label")
    return found


def precheck(recipe: Any) -> list[str]:
    """Read every split's rows (no tokenizer, no model) and check fields and labels; returns the warnings.

    Raises:
        DataError: a file is missing or malformed, a row lacks a field, or a label is not in ``data.labels``.
    """
    data, task = recipe.data, recipe.task
    counts: dict[str, Counter] = {}
    for name in ("train", "validation", "test"):
        source = getattr(data, name)
        if source is None:
            continue
        origin = str(recipe.resolve_path(source.path)) if source.path else source.describe()
        rows = map_fields(read_rows(source, root=recipe.root), fmt=data.format, fields=data.fields, origin=origin)
        if task.labels and task.type != "token_classification":
            check_labels(rows, task.labels, origin=origin)
            counts[name] = Counter(str(row["label"]) for row in rows)
    if data.validation is None and "train" in counts and data.validation_split > 0:
        counts = {"train": counts["train"], **({"test": counts["test"]} if "test" in counts else {})}
    return [*settings_warnings(recipe), *label_warnings(recipe, counts)]
