"""Merge registered LoRA adapters into a new registry version that records its lineage.

PEFT's ``add_weighted_adapter`` builds the merged adapter (``linear``, ``cat``,
``svd``, ``ties``, ``dare_linear``, ``dare_ties``); this module adds what a
registry needs around it: the parents must be LoRA adapters of one base (same
fingerprint), the new version's manifest records the parents' exact refs and
weight checksums, the weights and the method (``source.kind = "merged"``), and
each classification parent's validation rows are scored with the parent and
with the merge, so the report says how much of its accuracy the merge keeps.

It lives in ``training/`` because it needs the base, the registry and the
recipe's data (the registry itself never imports training or the runtime).

>>> result = merge_adapters(["finance", "medical"], weights=[1, 1], how="cat", name="fin-med")  # doctest: +SKIP
>>> result.record.manifest["source"]["parents"][0]["ref"], result.report[0]["kept"]  # doctest: +SKIP
('finance@1', 0.98)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import methods
from ..errors import ConfigError
from ..registry.compat import check_one_base

HOWS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
"""The ``--how`` values: PEFT's combination types."""
NEEDS_DENSITY = ("ties", "dare_linear", "dare_ties")
DEFAULT_DENSITY = 0.5


@dataclass(frozen=True)
class MergeResult:
    """The registered merge and, per parent, its validation accuracy alone and merged."""

    record: Any  # AdapterRecord
    report: list[dict[str, Any]] = field(default_factory=list)  # ref, rows, parent_accuracy, merged_accuracy, kept

    @property
    def worst_kept(self) -> float | None:
        """The smallest share of a parent's accuracy the merge keeps (``None``: nothing evaluated)."""
        kept = [row["kept"] for row in self.report if row.get("kept") is not None]
        return min(kept) if kept else None


def merge_adapters(refs: Sequence[str], *, name: str, weights: Sequence[float] | None = None, how: str = "cat",
                   density: float | None = None, registry: Any = None, base: Any = None, domain: str | None = None,
                   description: str = "", tags: Sequence[str] = (), evaluate: bool = True,
                   batch_size: int = 32) -> MergeResult:
    """Merge LoRA adapters with PEFT's ``add_weighted_adapter`` and register the result with its lineage.

    Args:
        refs: two or more registry references (``"finance"``, ``"medical@2"``).
        name: the registry name of the merge.
        weights: one weight per parent (default 1.0 each).
        how: ``linear``, ``cat``, ``svd``, ``ties``, ``dare_linear`` or ``dare_ties``.
        density: the share of values TIES/DARE keep (default 0.5 for those; unused otherwise).
        registry: a :class:`~adapterhub.registry.Registry` (default: the default registry).
        base: a loaded base (default: the one the parents' manifests name); it is returned unchanged.
        domain, description, tags: for the new version (domain default: the first parent's).
        evaluate: score classification parents' validation rows with parent and merge.
        batch_size: label rows (texts × their labels) per chunk of forward passes when evaluating.

    Returns:
        A :class:`MergeResult`; the task recorded is the first parent's.

    Raises:
        ConfigError: fewer than two parents, weights that do not match, an unknown ``how``,
            a parent that is not LoRA, or options PEFT rejects (e.g. ``linear`` with different ranks).
        IncompatibleBaseError: parents made for different bases, or ``base`` is another base.
        AdapterNotFoundError, InvalidNameError: a bad reference or name.

    >>> merge_adapters(["finance", "medical"], how="svd", name="fin-med").record.ref  # doctest: +SKIP
    'fin-med@1'
    """
    from ..registry.refs import validate_name
    from ..registry.store import Registry

    validate_name(name)
    if len(refs) < 2:
        raise ConfigError(f"a merge needs two or more adapters, got {list(refs)}; e.g. adapterhub merge finance medical")
    weights = [1.0] * len(refs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(refs):
        raise ConfigError(f"got {len(refs)} adapters but {len(weights)} weights; give one weight per adapter")
    if how not in HOWS:
        raise ConfigError(f"unknown merge method {how!r}; use one of {', '.join(HOWS)}")
    if how in NEEDS_DENSITY:
        density = DEFAULT_DENSITY if density is None else float(density)
        if not 0 < density <= 1:
            raise ConfigError(f"density={density} must be in (0, 1]: the share of each delta that {how} keeps")
    else:
        density = None
    registry = registry if registry is not None else Registry()
    records = [registry.get(ref) for ref in refs]
    _check_parents(records, base)
    if base is None:
        from ..base.loading import load_base

        base = load_base((records[0].manifest.get("base") or {}).get("name") or "smollm2-135m-instruct")
    model, names = _peft_with_parents(registry, records, base)
    try:
        _add_merge(model, names, weights, how, density)
        report = _evaluate(model, names, records, base, batch_size=batch_size) if evaluate else []
        with tempfile.TemporaryDirectory() as folder:
            adapter_dir = _save_merged(model, Path(folder) / "merged")
            source = {"kind": "merged", "how": how, "weights": weights, "density": density,
                      "parents": [_parent(record) for record in records]}
            record = registry.add(adapter_dir, name, domain=domain or records[0].domain, task=records[0].task,
                                  tags=list(tags), base=base, metrics={"merge": report} if report else {},
                                  description=description or f"{how} merge of {', '.join(r.ref for r in records)}",
                                  source=source)
    finally:
        model.unload()  # the caller's base back as it was
    return MergeResult(record=record, report=report)


def _check_parents(records: Sequence[Any], base: Any) -> None:
    for record in records:
        if not methods.get(record.method).mergeable:
            mergeable = " or ".join(methods.get(name).title for name in methods.names() if methods.get(name).mergeable)
            raise ConfigError(f"{record.ref} is a {record.method} adapter; merges combine {mergeable} adapters "
                              "(PEFT's add_weighted_adapter). Use weighted mixes at run time, or retrain it as "
                              f"{mergeable}")
    check_one_base(records, base, purpose="merge only adapters trained on one base")


def _peft_with_parents(registry: Any, records: Sequence[Any], base: Any) -> tuple[Any, list[str]]:
    import peft

    names = [f"parent{i}" for i in range(len(records))]
    model = None
    for adapter_name, record in zip(names, records):
        loaded = registry.load(record.ref, base=base)
        config = peft.PeftConfig.from_peft_type(**loaded.config)
        if model is None:
            model = peft.get_peft_model(base.model, config, adapter_name=adapter_name)
        else:
            model.add_adapter(adapter_name, config)
        peft.set_peft_model_state_dict(model, loaded.tensors, adapter_name=adapter_name)
    return model.eval(), names


def _add_merge(model: Any, names: list[str], weights: list[float], how: str, density: float | None) -> None:
    try:
        model.add_weighted_adapter(names, weights, "merged", combination_type=how, density=density)
    except (ValueError, TypeError) as error:
        hint = " (use --how cat or svd for adapters of different ranks)" if "same r" in str(error) else ""
        raise ConfigError(f"PEFT refused the {how} merge: {error}{hint}") from error


def _save_merged(model: Any, folder: Path) -> Path:
    import copy

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    tensors = {key: value.detach().to("cpu", copy=True).contiguous()
               for key, value in get_peft_model_state_dict(model, adapter_name="merged").items()}
    config = copy.deepcopy(model.peft_config["merged"])
    config.inference_mode = True
    config.save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder


def _parent(record: Any) -> dict[str, Any]:
    return {"ref": record.ref, "weights_sha256": record.manifest["files"]["adapter_model.safetensors"]["sha256"],
            "base_fingerprint": record.base_fingerprint}


def _evaluate(model: Any, names: list[str], records: Sequence[Any], base: Any, *, batch_size: int) -> list[dict[str, Any]]:
    """Per classification parent: validation accuracy of the parent alone and of the merge."""
    from .evaluate import classify, label_metrics

    report = []
    for adapter_name, record in zip(names, records):
        row: dict[str, Any] = {"ref": record.ref}
        split = _validation_rows(record, base)
        if isinstance(split, str):
            report.append({**row, "skipped": split})
            continue
        task, texts = record.task, [str(r["text"]) for r in split.rows]
        labels = [str(r["label"]) for r in split.rows]
        scores = {}
        for which in (adapter_name, "merged"):
            model.set_adapter(which)
            predicted = classify(model, base.tokenizer, task, texts, batch_size=batch_size, device=base.model.device)
            scores[which] = label_metrics(predicted, labels, labels=task.labels)["accuracy"]
        parent, merged = scores[adapter_name], scores["merged"]
        report.append({**row, "rows": len(texts), "parent_accuracy": parent, "merged_accuracy": merged,
                       "kept": round(merged / parent, 4) if parent else None})
    model.set_adapter("merged")
    return report


def _validation_rows(record: Any, base: Any) -> Any:
    """The parent's validation split from its recorded recipe, or a reason why there is none."""
    from ..errors import AdapterHubError
    from .data import load_dataset
    from .recipe_files import load_recipe

    if not record.task.is_classification:
        return "not a classification adapter"
    recipe = record.manifest.get("recipe")
    if not recipe:
        return "no recipe recorded (imported or pulled), so no validation data"
    try:
        data = load_dataset(load_recipe(recipe), base.tokenizer)
    except AdapterHubError as error:
        return f"its validation data could not be read ({error})"
    return data.validation if data.validation is not None else "its recipe has no validation data"
