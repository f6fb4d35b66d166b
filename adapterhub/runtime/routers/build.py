"""``build_router``: a router over registered adapters, from each adapter's own recipe data, as a registry entry.

Texts come from each adapter's recorded recipe (``recipe.data.train`` / ``validation`` jsonl files;
their sha256 is recorded in the router's lineage), or from ``data={"finance": [files]}`` where no
recipe is recorded. Features are the bare base's pooled hidden states (:mod:`.features`) after each
candidate layer, all from one truncated pass; :func:`~.fit.choose` keeps the best (layer, head) on the
validation rows and sets the thresholds there. The entry records the exact refs and weight checksums of
its adapters (``source.kind = "router"``), so it refuses to route once they change (:mod:`.loading`).

>>> build_router("domains", adapters=["finance", "medical", "legal"]).record.ref  # doctest: +SKIP
'domains@1'
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError, RoutingError
from ...registry.compat import check_one_base
from ...registry.routers import ROUTER_FORMAT, ROUTER_METHOD
from .features import EMBEDDING, decoder_layers, layer_features
from .fit import choose

VALIDATION_SHARE = 0.2  # held out of the training rows when an adapter has no validation file


@dataclass(frozen=True)
class RouterBuild:
    """The registered router and how its method was chosen (one row per layer and head tried)."""

    record: Any
    table: list[dict[str, Any]] = field(default_factory=list)


def candidate_layers(count: int) -> list[int]:
    """Blocks tried: about every eighth of the first half of the base, plus its middle.

    >>> candidate_layers(30)
    [1, 3, 5, 7, 9, 11, 13, 15]
    """
    step = max(1, count // 15)
    return sorted({*range(1, max(2, count // 2), step), count // 2})


def read_texts(path: str | Path, *, text_field: str = "text") -> list[str]:
    """Texts of a ``.jsonl`` file (its ``text_field``) or a ``.txt`` file (one per non-empty line).

    Raises:
        RoutingError: the file is missing, unreadable, or a row has no text.
    """
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise RoutingError(f"cannot read router data {str(path)!r}: {error.strerror or error}",
                           fix="pass data={'NAME': ['file.jsonl']} (CLI: --data NAME=FILE)") from None
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line).get(text_field)
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str) or not text.strip():
            raise RoutingError(f"{path}:{number} has no {text_field!r} text; each line must be a JSON object with it")
        texts.append(text)
    return texts


def _recipe_files(record: Any) -> tuple[list[str], list[str], str]:
    """The train and validation files a record's recipe names, and its text field."""
    data = ((record.manifest.get("recipe") or {}).get("data")) or {}
    files = {split: (data.get(split) or {}).get("path") for split in ("train", "validation")}
    if not files["train"]:
        raise RoutingError(f"{record.ref} records no recipe data (imported or pulled), so the router has no texts "
                           f"for it", fix=f"pass data={{'{record.name}': ['texts.jsonl']}}",
                           cli_fix=f"pass --data {record.name}=FILE")
    return [files["train"]], [files["validation"]] if files["validation"] else [], \
        (data.get("fields") or {}).get("text", "text")


def _texts(records: Sequence[Any], data: Mapping[str, Sequence[str]] | None) -> tuple[dict, dict, list]:
    train, validation, lineage = {}, {}, []
    for record in records:
        given = (data or {}).get(record.name)
        if given:
            train_files, validation_files, text_field = list(given), [], "text"
        else:
            train_files, validation_files, text_field = _recipe_files(record)
        rows = {split: [t for f in files for t in read_texts(f, text_field=text_field)]
                for split, files in (("train", train_files), ("validation", validation_files))}
        if not rows["validation"]:  # hold out every fifth row, deterministically
            every = round(1 / VALIDATION_SHARE)
            rows = {"validation": rows["train"][::every],
                    "train": [t for i, t in enumerate(rows["train"]) if i % every]}
        if len(rows["train"]) < 2:
            raise RoutingError(f"{record.ref} has {len(rows['train'])} training texts; a router needs a few "
                               "per adapter")
        train[record.name], validation[record.name] = rows["train"], rows["validation"]
        lineage.append({"name": record.name, "files": [{"path": str(Path(f).expanduser().resolve()),
                                                        "sha256": _sha256(f)} for f in [*train_files,
                                                                                        *validation_files]]})
    return train, validation, lineage


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def _check(records: Sequence[Any], base: Any) -> None:
    if len(records) < 2:
        raise RoutingError(f"a router chooses between two or more adapters, got {[r.ref for r in records]}",
                           fix="name at least two adapters, e.g. adapters=['finance', 'medical']")
    names = [record.name for record in records]
    if len(set(names)) != len(names):
        raise RoutingError(f"adapters {names} name one adapter twice; give each once")
    routers = [record.ref for record in records if record.method == ROUTER_METHOD]
    if routers:
        raise RoutingError(f"{', '.join(routers)} is a router, not an adapter; a router chooses between adapters")
    check_one_base(records, base, purpose="a router serves adapters of one base")


def build_router(name: str, *, adapters: Sequence[str], registry: Any = None, base: Any = None,
                 data: Mapping[str, Sequence[str]] | None = None, ood: Sequence[str] | None = None,
                 layers: Sequence[int] | None = None, heads: Sequence[str] = ("prototype", "linear"),
                 keep: float = 0.99, description: str = "", tags: Sequence[str] = (),
                 progress: bool = False) -> RouterBuild:
    """Build a router over ``adapters`` and register it as the next version of ``name``.

    Args:
        name: the router's registry name.
        adapters: two or more adapter refs of one base; the router pins the exact versions they resolve to.
        registry: a :class:`~adapterhub.registry.Registry` (default: the default registry).
        base: the loaded base (default: the one the adapters record).
        data: ``{adapter name: [jsonl or txt files]}`` for adapters without recorded recipe data.
        ood: out-of-domain validation texts: reported per candidate (the share the fallback takes), not fitted.
        layers: blocks to try (default :func:`candidate_layers`); heads: ``prototype`` and/or ``linear``.
        keep: share of in-domain validation rows the distance threshold keeps.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`RouterBuild` (the record, and the table of candidates tried).

    Raises:
        RoutingError: fewer than two adapters, one given twice, a router among them, no texts for one.
        IncompatibleBaseError: adapters of different bases, or another ``base``.
    """
    import torch
    from safetensors.torch import save_file

    from ...registry.refs import validate_name
    from ...registry.store import Registry

    validate_name(name)
    if not 0 < keep <= 1:
        raise ConfigError(f"keep={keep} must be in (0, 1]: the share of validation rows the threshold keeps")
    registry = registry if registry is not None else Registry()
    records = [registry.get(ref) for ref in adapters]
    _check(records, base)
    if base is None:
        from ...base.loading import load_base

        base = load_base((records[0].manifest.get("base") or {}).get("name") or "smollm2-135m-instruct")
    train, validation, data_lineage = _texts(records, data)
    layers = list(layers) if layers else candidate_layers(len(decoder_layers(base.model)))
    every = [t for n in train for t in train[n]] + [t for n in validation for t in validation[n]] + list(ood or [])
    bar = _bar(len(every), progress)
    found = layer_features(base.model, base.tokenizer, every, layers=[EMBEDDING, *layers], progress=bar.update)
    bar.close()
    counts = [len(train[r.name]) for r in records] + [len(validation[r.name]) for r in records]
    splits = {layer: torch.split(found[layer], [*counts, len(ood or [])]) for layer in [EMBEDDING, *layers]}
    k = len(records)
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts[:k])])
    val_labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts[k:])])
    chosen, table = choose({l: torch.cat(s[:k]) for l, s in splits.items()}, labels,
                           {l: torch.cat(s[k:2 * k]) for l, s in splits.items()}, val_labels, classes=k,
                           heads=heads, keep=keep, outside={l: s[2 * k] for l, s in splits.items()} if ood else None)
    adapters_config = [{"name": r.name, "ref": r.ref, "method": r.method,
                        "weights_sha256": r.manifest["files"]["adapter_model.safetensors"]["sha256"]} for r in records]
    config = {"adapterhub_router": ROUTER_FORMAT, "adapters": adapters_config, "features": "mean_hidden_state",
              **chosen.config}
    base_info = {"fingerprint": base.fingerprint, "name": getattr(base.spec, "name", None)}
    metrics = {"router": {"chosen": chosen.scores, "candidates": table,
                          "train_rows": dict(zip([r.name for r in records], counts[:k])),
                          "validation_rows": dict(zip([r.name for r in records], counts[k:]))}}
    with tempfile.TemporaryDirectory() as folder:
        entry = Path(folder) / name
        entry.mkdir()
        (entry / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file({key: value.contiguous() for key, value in chosen.tensors.items()},
                  str(entry / "adapter_model.safetensors"), metadata={"format": "pt"})
        (entry / "adapterhub.json").write_text(json.dumps({"base": base_info}))
        record = registry.add(entry, name, task=None, tags=list(tags), metrics=metrics,
                              description=description or f"router over {', '.join(r.ref for r in records)}",
                              source={"kind": "router", "adapters": adapters_config, "data": data_lineage})
    return RouterBuild(record=record, table=table)


def _bar(total: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="router features", unit="text", disable=not show)
