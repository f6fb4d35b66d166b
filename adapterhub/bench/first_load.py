"""The 1st load as a user sees it: the first ``hub.load`` of a new Python process.

The in-process load series (``areas.measure_load``) warms up first, so its "1st"
is the first adapter made resident, with imports, the registry's first index
connection and first-call allocations already paid. Here each sample is a new
process (:func:`run_isolated`) that loads the base, opens the registry and a hub,
and times its very first ``hub.load`` of an adapter the series already loaded
(so the file is in the page cache, as after an add or an earlier run; a cold
disk cache, after a reboot, adds the disk read, which needs root to reproduce).

>>> measure_first_loads(config, base_name="smollm2-135m-instruct", registry_root=root, ref="bench-00@1")  # doctest: +SKIP
[41.2, 39.8, 40.5]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import BenchConfig
from .harness import Timer
from .isolated import run_isolated


def first_load(*, base_name: str, device: str | None, dtype: str | None, quantize: str | None, threads: int | None,
               registry_root: str, ref: str) -> dict[str, Any]:
    """In the child: open the base, the registry and a hub; milliseconds of the first ``hub.load(ref)``."""
    import torch

    from ..base.loading import load_base
    from ..registry.store import Registry
    from ..runtime import AdapterHub

    if threads:
        torch.set_num_threads(threads)
    base = load_base(base_name, device=device, quantize=quantize, dtype=dtype)
    hub = AdapterHub(base=base, registry=Registry(registry_root))
    milliseconds = Timer(base.spec.device).call(lambda: hub.load(ref)) * 1e3
    hub.close()
    return {"ms": milliseconds}


def measure_first_loads(config: BenchConfig, *, base_name: str, registry_root: Path, ref: str) -> list[float]:
    """``config.load_repeats`` new processes' first ``hub.load(ref)``, in milliseconds."""
    kwargs = {"base_name": base_name, "device": config.device, "dtype": config.dtype, "quantize": config.quantize,
              "threads": config.threads, "registry_root": str(registry_root), "ref": ref}
    return [run_isolated(f"{__name__}:first_load", kwargs)["ms"] for _ in range(config.load_repeats)]
