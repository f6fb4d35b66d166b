"""After a successful run: register the adapter under the recipe's name, and push it if the recipe asks.

>>> record = register_adapter(run_dir / "adapter", recipe, metrics=metrics, base=base)  # doctest: +SKIP
>>> push_adapter(record, "acme/finance-lora", registry=None, recipe=recipe)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import HubError
from ..registry.contract import trained_contract
from .recipe import Recipe


def register_adapter(adapter_dir: Path, recipe: Recipe, *, metrics: dict[str, Any], base: Any,
                     registry: Any = None) -> Any:
    """Register a trained adapter folder as a new version named after the recipe."""
    from ..registry import Registry

    registry = registry if registry is not None else Registry(recipe.output.registry)
    return registry.add(adapter_dir, recipe.name, domain=recipe.adapter_domain, task=recipe.task,
                        tags=[*recipe.tags, *recipe.output.tags], description=recipe.description, base=base,
                        metrics=metrics, recipe=recipe.to_dict(), source={"kind": "trained"},
                        contract=_contract(recipe, metrics))


def describe_adapter_dir(adapter_dir: Path, recipe: Recipe, *, metrics: dict[str, Any], base: Any) -> Path:
    """Write ``adapterhub.json`` into a run's adapter folder: the manifest the registry would record.

    So the folder keeps what it was trained for when loaded directly
    (``hub.load("runs/<run>/adapter")`` serves a classification adapter with its labels and prompt).
    """
    from ..registry.manifest import MANIFEST_FILE, new_manifest, read_adapter_dir

    manifest = new_manifest(read_adapter_dir(adapter_dir), recipe.name, domain=recipe.adapter_domain,
                            task=recipe.task, tags=[*recipe.tags, *recipe.output.tags],
                            description=recipe.description, base=base, metrics=metrics, recipe=recipe.to_dict(),
                            origin={"kind": "trained", "path": str(Path(adapter_dir).resolve())},
                            contract=_contract(recipe, metrics))
    path = Path(adapter_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return path


def _contract(recipe: Recipe, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe's ``serve:`` section and the held-out scores under the base quantisation trained on."""
    return trained_contract(recipe.serve, metrics, recipe.base.quantize)


def push_adapter(record: Any, repo_id: str, *, registry: Any, recipe: Recipe) -> None:
    """Push a registered adapter to the Hub (``output.push_to_hub``) through :mod:`adapterhub.hf.sync`."""
    from ..hf.sync import push
    from ..registry import Registry

    try:
        push(record.ref, repo_id, registry=registry if registry is not None else Registry(recipe.output.registry))
    except HubError as error:
        raise type(error)(f"{record.ref} was registered, but output.push_to_hub failed: {error}",
                          fix=f"push it later with adapterhub.hf.push({record.ref!r}, {repo_id!r})",
                          cli_fix=f"push it later with `adapterhub push {record.ref} {repo_id}`") from error
