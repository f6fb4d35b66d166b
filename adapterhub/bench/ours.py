"""Our side of the benchmark: :class:`adapterhub.AdapterHub` fed from a registry.

The generated adapters are registered in a fresh registry (load latency is
measured registry → resident, checksums included), then a hub is opened on
its own copy of the base.

>>> side, adapters = open_ours(adapters, load_hub_base=load_base, registry_root=root, skipped=[])  # doctest: +SKIP
>>> side.switch(adapters[0].name)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

from .adapters import BenchAdapter, register_adapters
from .sides import Side


class HubSide(Side):
    """AdapterHub driven through its public API only."""

    label = "ours"

    def __init__(self, hub: Any) -> None:
        super().__init__()
        self.hub = hub

    def load(self, adapter: BenchAdapter) -> None:
        self.hub.load(adapter.ref)

    def unload(self, name: str) -> None:
        self.hub.unload(name)

    def switch(self, name: str) -> None:
        self.hub.switch(name)

    def forward(self, batch: dict[str, Any], names: Sequence[str | None]) -> Any:
        return self.hub.logits(batch["input_ids"], batch["attention_mask"], domains=list(names))

    def generate(self, prompts: Sequence[str], names: Sequence[str], *, new_tokens: int) -> Any:
        return self.hub.generate(list(prompts), domains=list(names), max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens)

    def resident_bytes(self) -> int:
        return sum(int(info.bytes) for info in self.hub.resident())

    def close(self) -> None:
        self.hub.close()
        self.hub = None


def _missing(module: str) -> str | None:
    """Why ``module`` cannot be used (``None`` when it imports)."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{module} is not available in this tree ({error})"
    return None


def open_ours(adapters: list[BenchAdapter], *, load_hub_base: Callable[[], Any], registry_root: Path,
              skipped: list[dict[str, str]]) -> tuple[HubSide | None, list[BenchAdapter]]:
    """Register ``adapters`` and open a hub on its own copy of the base.

    Args:
        adapters: the generated adapters.
        load_hub_base: loads the hub's copy of the base (the hub wraps its base's layers in place,
            so it must not share one with the other sides).
        registry_root: an empty folder for the registry.
        skipped: gets a record when our side cannot run.

    Returns:
        ``(side, adapters with registry refs)``; ``side`` is ``None`` (and ``skipped`` says why)
        when the registry or the runtime is not available.
    """
    for module in ("adapterhub.registry", "adapterhub.runtime"):
        reason = _missing(module)
        if reason:
            skipped.append({"area": "all", "case": "ours", "reason": reason})
            return None, adapters
    from ..registry.store import Registry
    from ..runtime import AdapterHub

    registry = Registry(registry_root)
    base = load_hub_base()
    adapters = register_adapters(adapters, registry, base=base)
    return HubSide(AdapterHub(base=base, registry=registry)), adapters
