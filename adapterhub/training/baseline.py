"""Is a trained classifier worth registering? Its accuracy against the baseline, before the registry sees it.

The baseline is the better of *chance* — always answering the most common label of the evaluated split,
which is ``1/labels`` on a balanced split — and the *bare base* with the same prompt (``training.eval_base``).
An adapter whose validation accuracy (test accuracy when there is no validation) does not beat it by
``output.min_gain`` is kept in its run folder and not registered, unless ``output.register_anyway``
(``adapterhub train --register-anyway``). Generation adapters have no accuracy and are not checked.

>>> metrics = {"validation": {"accuracy": 0.28, "count": 32,
...                          "per_label": {l: {"support": 8} for l in "abcd"}}}
>>> verdict = judge(metrics, labels=("a", "b", "c", "d"), min_gain=0.05)
>>> verdict.passed, verdict.chance, verdict.split
(False, 0.25, 'validation')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import BelowBaselineError


@dataclass(frozen=True)
class Verdict:
    """The registration check of one classifier."""

    split: str  # the split judged: validation, else test
    accuracy: float
    chance: float  # share of the most common label in that split
    bare_base: float | None  # the bare base's accuracy with the same prompt (None: not evaluated)
    min_gain: float

    @property
    def baseline(self) -> float:
        return max(self.chance, self.bare_base if self.bare_base is not None else 0.0)

    @property
    def passed(self) -> bool:
        return self.accuracy >= self.baseline + self.min_gain - 1e-9

    def describe(self) -> str:
        bare = f", the bare base {self.bare_base:.1%}" if self.bare_base is not None else ""
        return (f"{self.split} accuracy {self.accuracy:.1%} vs chance {self.chance:.1%}{bare} "
                f"(needs {self.baseline + self.min_gain:.1%}: the baseline + output.min_gain {self.min_gain:g})")


def chance_accuracy(split_metrics: Mapping[str, Any], labels: Sequence[str]) -> float:
    """Accuracy of always answering the split's most common label (``1/len(labels)`` when unknown).

    >>> chance_accuracy({"count": 10, "per_label": {"a": {"support": 7}, "b": {"support": 3}}}, ("a", "b"))
    0.7
    """
    per_label, count = split_metrics.get("per_label"), split_metrics.get("count")
    if isinstance(per_label, dict) and per_label and count:
        return round(max(int(row.get("support", 0)) for row in per_label.values()) / count, 4)
    return round(1 / max(len(labels), 1), 4)


def judge(metrics: Mapping[str, Any], *, labels: Sequence[str], min_gain: float) -> Verdict | None:
    """The verdict on a run's final metrics (``None``: no validation or test accuracy to judge)."""
    for split in ("validation", "test"):
        values = metrics.get(split)
        if isinstance(values, dict) and isinstance(values.get("accuracy"), (int, float)):
            bare = ((metrics.get("base") or {}).get(split) or {}).get("accuracy")
            return Verdict(split=split, accuracy=float(values["accuracy"]), chance=chance_accuracy(values, labels),
                           bare_base=float(bare) if isinstance(bare, (int, float)) else None, min_gain=min_gain)
    return None


def check_before_registering(recipe: Any, metrics: Mapping[str, Any], adapter_dir: Any) -> str | None:
    """Raise :class:`BelowBaselineError` for a classifier that does not beat its baseline (unless
    ``output.register_anyway``); returns a warning line when a classifier had nothing to be judged on."""
    task = recipe.task
    if not task.labels or task.type == "token_classification":
        return None
    verdict = judge(metrics, labels=task.labels, min_gain=recipe.output.min_gain)
    if verdict is None:
        return (f"note: {recipe.name} was not evaluated (no validation or test rows), so nothing shows it beats "
                "chance; set data.validation or data.validation_split")
    if verdict.passed or recipe.output.register_anyway:
        return None
    raise BelowBaselineError(
        f"{recipe.name} was not registered: {verdict.describe()}. The adapter is kept in {adapter_dir}",
        fix=_fixes(recipe, python=True), cli_fix=_fixes(recipe, python=False))


def _fixes(recipe: Any, *, python: bool) -> str:
    training, data = recipe.training, recipe.data
    anyway = ("train(..., overrides=['output.register_anyway=true'])" if python else
              "`adapterhub train RECIPE --register-anyway`")
    lines = [
        "likely fixes:",
        f"  - learn more: training.epochs (now {training.epochs:g}) and training.lr (now {training.lr:g}); the "
        "shipped classifiers use 3 epochs at 2e-3 with adapter.last_layers: 10",
        "  - check the data: `adapterhub recipe check RECIPE` shows rows per label (aim for 25+ each, labelled "
        "consistently); `adapterhub evaluate REF --data FILE --errors` lists the rows it gets wrong",
        "  - a prompt that names the labels: data.prompt_template with {labels}" +
        (", data.chat: false" if data.chat else ""),
        "  - start from the tuned starter: `adapterhub recipe new NAME.yaml --task classification`",
        f"  - or register it as it is: {anyway}",
    ]
    return "\n".join(lines)
