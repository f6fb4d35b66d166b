"""One benchmark run from start to finish: load, generate adapters, measure every area, report.

>>> report = run_bench(BenchConfig.preset(quick=True, out="bench-out/quick"))  # doctest: +SKIP
>>> [check["status"] for check in report["targets"]][:1]  # doctest: +SKIP
['met']
"""

from __future__ import annotations

import datetime
import gc
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from .adapters import lora_targets, make_adapters
from .areas import BenchContext, measure_forward, measure_generation, measure_load, measure_memory, measure_switch
from .config import BenchConfig, default_base
from .environment import describe_machine
from .harness import Timer
from .methods import measure_methods
from .ours import open_ours
from .report import write_report
from .sides import BareSide, PeftSide
from .targets import check_targets
from .training import measure_training

IN_PROCESS_AREAS = {"switch": measure_switch, "forward": measure_forward, "generation": measure_generation,
                    "load": measure_load, "methods": measure_methods}  # in this order: each leaves the adapters the next needs resident
SIDE_AREAS = {*IN_PROCESS_AREAS, "memory", "serve"}  # areas that use the generated adapters or the in-process sides


def run_bench(config: BenchConfig | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Measure adapterhub against plain PEFT and write the report.

    Args:
        config: what to measure (default: the full CPU preset, output in ``bench-out/``).
        progress: show progress bars on stderr.

    Returns:
        The report as written to ``bench.json`` (``results``, ``targets``, ``environment``, ...).

    Raises:
        adapterhub.errors.BaseModelError: the base cannot be loaded.
        adapterhub.errors.ConfigError: an invalid configuration.

    >>> report = run_bench(BenchConfig.preset(quick=True))  # doctest: +SKIP
    >>> sorted(report["results"])  # doctest: +SKIP
    ['accuracy', 'concurrency', 'encoder', 'forward', 'generation', 'load', 'memory', 'methods', 'serve', 'switch',
     'training']
    """
    started = time.perf_counter()
    config = config or BenchConfig.preset()
    _quiet_and_threads(config)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    base_name = config.base or default_base(config, config.work_dir)
    ctx, report = _open(config, base_name, progress=progress)
    for area, measure in IN_PROCESS_AREAS.items():
        if area in config.areas:
            _timed(report, area, partial(measure, ctx))
    if "memory" in config.areas:
        _timed(report, "memory", lambda: measure_memory(ctx, base_footprints=_base_footprints(
            base_name, config, ctx.sides["bare"].base, report["skipped"])))
    _close(ctx)
    # the areas below start their own processes or models, after the sides above are freed
    if "serve" in config.areas:
        from .serving import measure_serve

        _timed(report, "serve", lambda: measure_serve(config, base_name=base_name, adapters=ctx.adapters))
    if "encoder" in config.areas:
        from .encoder import measure_encoder

        _timed(report, "encoder", lambda: measure_encoder(config, skipped=report["skipped"]))
    if "training" in config.areas:
        _timed(report, "training", lambda: measure_training(config, base_name=base_name, device=ctx.device,
                                                            skipped=report["skipped"]))
    if "accuracy" in config.areas:
        from .accuracy import measure_time_to_accuracy  # imports the recipe trainer: only when this area runs

        _timed(report, "accuracy", lambda: measure_time_to_accuracy(config, base_name=base_name, device=ctx.device,
                                                                    skipped=report["skipped"]))
    if "concurrency" in config.areas:
        from .concurrency import measure_concurrency

        _timed(report, "concurrency", lambda: measure_concurrency(config, base_name=base_name,
                                                                  skipped=report["skipped"]))
    if "many" in config.areas:
        from .many import measure_many

        _timed(report, "many", lambda: measure_many(config, base_name=base_name, progress=progress))
    report["targets"] = check_targets(report)
    report["seconds"] = time.perf_counter() - started
    write_report(report, config.out)
    return report


def _timed(report: dict[str, Any], area: str, measure: Callable[[], dict[str, Any]]) -> None:
    """``report["results"][area] = measure()``, its seconds in ``report["area_seconds"]``."""
    start = time.perf_counter()
    report["results"][area] = measure()
    report["area_seconds"][area] = time.perf_counter() - start


def _quiet_and_threads(config: BenchConfig) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    if config.threads:
        torch.set_num_threads(config.threads)
    hf_logging.disable_progress_bar()


def _open(config: BenchConfig, base_name: str, *, progress: bool) -> tuple[BenchContext, dict[str, Any]]:
    """Load the bare base, write the adapters, open the PEFT side and ours; the report's header."""
    start = time.perf_counter()
    bare = _load(base_name, config, progress=progress)
    device = bare.spec.device
    report: dict[str, Any] = {
        "format": 1, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": describe_machine(device), "config": config.to_dict(),
        "base": {**bare.spec.to_dict(), "kernel_4bit": bare.kernel_4bit, "fingerprint": bare.fingerprint},
        "results": {}, "skipped": [],
        "area_seconds": {},
    }
    sides: dict[str, Any] = {"bare": BareSide(bare)}
    adapters: list[Any] = []
    if set(config.areas) & SIDE_AREAS:
        adapters = make_adapters(bare, config.work_dir / "adapters", count=config.adapters_needed, rank=config.rank)
        report["adapters"] = {"count": len(adapters), "rank": config.rank, "modules": len(lora_targets(bare)),
                              "file_bytes": adapters[0].file_bytes}
        sides["peft"] = PeftSide(_load(base_name, config))
        ours, adapters = open_ours(adapters, load_hub_base=lambda: _load(base_name, config),
                                   registry_root=_fresh(config.work_dir / "registry"), skipped=report["skipped"])
        if ours is not None:
            sides["ours"] = ours
    report["area_seconds"]["setup"] = time.perf_counter() - start
    ctx = BenchContext(config=config, adapters=adapters, sides=sides, vocab_size=bare.spec.vocab_size, device=device,
                       timer=Timer(device), progress=_progress_factory(progress), skipped=report["skipped"],
                       base_name=base_name)
    return ctx, report


def _close(ctx: BenchContext) -> None:
    """Free every side's model before training starts its own processes."""
    for side in ctx.sides.values():
        side.close()
    ctx.sides.clear()
    gc.collect()
    if str(ctx.device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _load(base_name: str, config: BenchConfig, *, progress: bool = False, **changes: Any) -> Any:
    """The base as the run's config asks (``changes`` replace its ``quantize`` / ``dtype``)."""
    from ..base.loading import load_base

    options = {"quantize": config.quantize, "dtype": config.dtype, **changes}
    return load_base(base_name, device=config.device, progress=progress, **options)


def _base_footprints(base_name: str, config: BenchConfig, bare: Any, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """Footprint of the base in fp32 and in NF4 (reusing the loaded base where it already is one of them)."""
    from ..errors import AdapterHubError

    footprints: dict[str, Any] = {}
    for kind, quantize, dtype in (("fp32", None, "float32"), ("nf4", "nf4", config.dtype)):
        if bare.spec.quantize == quantize and (quantize or bare.spec.dtype == "float32"):
            footprints[kind], footprints[f"{kind}_dtype"] = bare.footprint_bytes, bare.spec.dtype
            continue
        try:
            loaded = _load(base_name, config, quantize=quantize, dtype=dtype)
        except (AdapterHubError, RuntimeError, ImportError) as error:
            skipped.append({"area": "memory", "case": f"{kind} base footprint", "reason": str(error)})
            continue
        footprints[kind] = loaded.footprint_bytes
        footprints[f"{kind}_dtype"] = loaded.spec.dtype  # unquantised parts (embeddings, norms) stay in this
        del loaded
        gc.collect()
    if footprints.get("fp32") and footprints.get("nf4"):
        footprints["nf4_over_fp32"] = footprints["nf4"] / footprints["fp32"]
    return footprints


def _fresh(path: Path) -> Path:
    """An empty folder at ``path`` (a previous run's registry is discarded)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _progress_factory(enabled: bool) -> Any:
    from tqdm.auto import tqdm

    def bar(description: str, total: int) -> Any:
        return tqdm(total=total, desc=f"bench {description}", disable=not enabled, leave=False)

    return bar
