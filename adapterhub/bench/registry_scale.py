"""A registry of many entries, timed: bulk add, one more add, get, and filtered pages of 50.

The entries are small real adapters for the bench's base (rank 1 on ``v_proj``), one folder
registered under many names (``add_many`` reads it once per batch; every entry still gets its own
verified copy), spread over 5 domains, every 100th tagged ``prod``. Each figure is the median of
repeated calls on the full registry.

>>> result = measure_registry_scale(base, work / "scale", entries=10_000)  # doctest: +SKIP
>>> result["get_ms"]["median"] < 10  # doctest: +SKIP
True
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .harness import Stats

DOMAINS = ("legal", "finance", "medical", "retail", "support")
PROD_EVERY = 100


def measure_registry_scale(base: Any, work: str | Path, *, entries: int, repeats: int = 25,
                           progress: bool = False) -> dict[str, Any]:
    """Build a fresh registry of ``entries`` entries under ``work`` and time its operations.

    Returns:
        ``entries``, ``bulk_add_s`` and ``bulk_add_per_s``, and ``add_ms`` / ``get_ms`` / ``list_50_ms`` /
        ``count_ms`` (:class:`Stats` dicts over ``repeats`` calls each; a list page uses a filter
        and an offset drawn per call).
    """
    from ..registry import Registry
    from ..registry.entries import NewEntry
    from .adapters import write_lora_adapter

    work = Path(work)
    if work.exists():
        shutil.rmtree(work)
    folder = write_lora_adapter(base, work / "small", rank=1, modules=("v_proj",))
    registry = Registry(work / "registry")
    names = [f"{DOMAINS[i % len(DOMAINS)]}-{i:05d}" for i in range(entries)]
    start = time.perf_counter()
    registry.add_many([NewEntry(folder, name, domain=DOMAINS[i % len(DOMAINS)],
                                tags=("prod",) if i % PROD_EVERY == 0 else ()) for i, name in enumerate(names)],
                      base=base, batch=500, progress=progress)
    bulk = time.perf_counter() - start
    draw = random.Random(0)
    added = iter(range(repeats))
    filters = ({"domain": "legal"}, {"tag": "prod"}, {"method": "lora", "domain": "finance"},
               {"name_prefix": "medical-0"}, {"base": base.fingerprint[:12], "domain": "support"})

    totals = [registry.count(**chosen) for chosen in filters]

    def a_page() -> Any:
        which = draw.randrange(len(filters))
        return registry.list(**filters[which], limit=50, offset=draw.randrange(max(1, totals[which] - 50)))

    result: dict[str, Any] = {"entries": entries, "bulk_add_s": bulk, "bulk_add_per_s": entries / bulk,
                              "file_bytes": (folder / "adapter_model.safetensors").stat().st_size}
    for key, call in (("get_ms", lambda: registry.get(draw.choice(names))),
                      ("list_50_ms", a_page),
                      ("count_ms", lambda: registry.count(domain=draw.choice(DOMAINS))),
                      ("add_ms", lambda: registry.add(folder, f"late-{next(added):03d}", domain="legal", base=base))):
        result[key] = _timed(call, repeats)
    result["pages_checked"] = len(registry.list(domain="legal", limit=50)) == 50
    shutil.rmtree(work)
    return result


def _timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return Stats.of(samples).scaled(1e3).to_dict()
