"""The ``methods`` area: one batch whose rows use adapters of every method, against the bare base.

Eight adapters — two LoRA (the bench's own), two AdaLoRA (a random budget
below ``init_r = rank``), one IA³, one Houlsby and one Pfeiffer bottleneck
(reduction factor 16) and one prefix of 20 virtual tokens — each get one row of
a ``batch × tokens`` forward (the first forward shape); every method is also
timed alone on the whole batch. PEFT cannot mix methods in one batch, so only
our side runs; the figures are ratios to the bare base, timed round-robin.

>>> result = measure_methods(ctx)  # doctest: +SKIP
>>> result["ratio_to_bare"]["mixed_8"]  # doctest: +SKIP
1.09
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .harness import ratio, time_interleaved
from .workload import forward_batch, mixed_names

EXTRA = {  # name -> make_random_adapters options (rank / sizes filled in from the bench config)
    "adalora-a": {"method": "adalora", "seed": 101},
    "adalora-b": {"method": "adalora", "seed": 102},
    "ia3": {"method": "ia3", "seed": 103},
    "bottleneck-houlsby": {"method": "bottleneck", "placement": "houlsby", "reduction_factor": 16, "seed": 104},
    "bottleneck-pfeiffer": {"method": "bottleneck", "placement": "pfeiffer", "reduction_factor": 16, "seed": 105},
    "prefix-20": {"method": "prefix", "num_virtual_tokens": 20, "seed": 106},
}


def measure_methods(ctx: Any) -> dict[str, Any]:
    """Forward time of a batch mixing 8 adapters of 5 methods (and of each method alone), ÷ the bare base."""
    from ..runtime.testing import make_random_adapters

    side = ctx.sides.get("ours")
    if side is None or len(ctx.adapters) < 2:
        ctx.skipped.append({"area": "methods", "case": "all", "reason": "needs our side and two LoRA adapters"})
        return {}
    config, hub = ctx.config, side.hub
    side.ensure(ctx.adapters[:2], exact=False)
    names = [adapter.name for adapter in ctx.adapters[:2]]
    root = config.work_dir / "methods"
    for name, options in EXTRA.items():
        path = root / f"{name}-0"
        if not (path / "adapter_config.json").is_file():
            make_random_adapters(hub.base, root, prefix=name, r=config.rank, **options)
        hub.load(path, name=name)
        names.append(name)
    methods = {info.name: info.method for info in hub.resident()}
    batch_size, tokens = config.forward_shapes[0]
    batch = forward_batch(ctx.vocab_size, batch=batch_size, tokens=tokens, device=ctx.device)
    rows = mixed_names(names, rows=batch_size)
    cases = {"bare": partial(ctx.sides["bare"].forward, batch, [None] * batch_size),
             "mixed_8": partial(side.forward, batch, rows)}
    for name in names[1:]:
        cases[f"{methods[name]}:{name}"] = partial(side.forward, batch, [name] * batch_size)
    bar = ctx.progress(f"methods {batch_size}x{tokens}", config.repeats)
    stats = time_interleaved(cases, warmup=config.warmup, repeats=config.repeats, timer=ctx.timer,
                             progress=bar.update)
    bar.close()
    for name in EXTRA:
        hub.unload(name)
    bare = stats["bare"]
    return {"batch": batch_size, "tokens": tokens, "rows": [f"{methods[n]}:{n}" for n in rows],
            "ms": {name: value.scaled(1e3).to_dict() for name, value in stats.items()},
            "ratio_to_bare": {name: ratio(value, bare) for name, value in stats.items() if name != "bare"}}
