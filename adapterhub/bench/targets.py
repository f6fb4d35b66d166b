"""The promised numbers, checked against a report: each one ``met``, ``MISSED`` or ``not measured``.

Targets come from the runtime, recipes and benchmark issues. Every check
reads only the report's ``results``; a target whose inputs are absent (an
area not run, a side unavailable) is ``not measured`` with the reason. In a
``--quick`` run no target applies: every measured row is ``not a claim (tiny
model)`` (or ``(quick run)`` on another base), its would-be verdict kept apart.

>>> [check["status"] for check in check_targets({"results": {}})][:1]
['not measured']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

MET, MISSED, NOT_MEASURED = "met", "MISSED", "not measured"
NOT_A_CLAIM = "not a claim"
TINY_PARAMETERS = 10_000_000  # below this a base is a test model, whatever its name
ADAPTER_REFERENCE_BYTES = 20_000_000  # "per 20 MB adapter"
LOAD_LIMIT_MS = 50.0
FLAT_LOAD_LIMIT = 1.25  # "flat in the number resident": the last load at most 25% slower than the first
ACCURACY_THRESHOLD = 0.85  # "time to 85% validation accuracy"


@dataclass(frozen=True)
class Target:
    """One promise. ``value(results)`` returns ``(measured, limit)`` or ``None`` when not measured; ``measured``
    is ``None`` when the area ran but left no figure, and ``kept_without_value(results)`` then decides (else MISSED)."""

    id: str
    text: str
    unit: str
    higher_is_better: bool
    value: Callable[[dict[str, Any]], tuple[float | None, float] | None]
    strict: bool = False  # the limit itself fails ("faster than", not "at least as fast")
    kept_without_value: Callable[[dict[str, Any]], bool] | None = None  # measured, but no figure: kept or not?

    def met(self, value: float, limit: float) -> bool:
        """Whether ``value`` keeps the promise."""
        if self.higher_is_better:
            return value > limit if self.strict else value >= limit
        return value < limit if self.strict else value <= limit


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _fixed(limit: float, *path: Any) -> Callable[[dict[str, Any]], tuple[float, float] | None]:
    def value(results: dict[str, Any]) -> tuple[float, float] | None:
        measured = _get(results, *path)
        return None if measured is None else (float(measured), limit)

    return value


def _load(*which: str) -> Callable[[dict[str, Any]], tuple[float, float] | None]:
    """The first of ``which`` that was measured (``"new_process"`` before the in-process ``"first"``)."""
    def value(results: dict[str, Any]) -> tuple[float, float] | None:
        found = [_get(results, "load", "ms", "ours", key, "median") for key in which]
        measured = next((median for median in found if median is not None), None)
        if measured is None:
            return None
        size = _get(results, "load", "file_bytes") or ADAPTER_REFERENCE_BYTES
        return float(measured), LOAD_LIMIT_MS * max(1.0, size / ADAPTER_REFERENCE_BYTES)

    return value


def _load_flatness(results: dict[str, Any]) -> tuple[float, float] | None:
    first = _get(results, "load", "ms", "ours", "first", "median")
    last = _get(results, "load", "ms", "ours", "last", "median")
    return None if first is None or last is None else (last / first, FLAT_LOAD_LIMIT)


def _forward(case: str, limit: float) -> Callable[[dict[str, Any]], tuple[float, float] | None]:
    return _fixed(limit, "forward", "shapes", 0, "ratio_to_bare", case)


def _worst_memory(results: dict[str, Any]) -> tuple[float, float] | None:
    ratios = [_get(row, "ratio_to_files", "ours") for row in _get(results, "memory", "resident") or []]
    ratios = [r for r in ratios if r is not None]
    return (max(ratios), 1.1) if ratios else None


def _training_memory(results: dict[str, Any]) -> tuple[float, float] | None:
    ours = _get(results, "training", "ours", "peak_bytes")
    peft = _get(results, "training", "peft", "peak_bytes")
    return None if not ours or not peft else (ours / peft, 1.0)


def _time_to_accuracy(results: dict[str, Any]) -> tuple[float | None, float] | None:
    """Ours ÷ PEFT's training seconds to the threshold; no figure when a side never reached it."""
    result = _get(results, "accuracy") or {}
    if result.get("threshold") != ACCURACY_THRESHOLD or not all(side in result for side in ("ours", "peft")):
        return None  # another threshold is reported in its table, but this promise is about 85%
    return result.get("time_ratio"), 1.0


def _reached_first(results: dict[str, Any]) -> bool:
    """Kept without a ratio only when ours reached the threshold and PEFT never did."""
    return bool(_get(results, "accuracy", "ours", "reached")) and not _get(results, "accuracy", "peft", "reached")


TARGETS: tuple[Target, ...] = (
    Target("switch", "switch p50 ≤ 0.1 ms (8 resident)", "ms", False, _fixed(0.1, "switch", "ms", "ours", "p50")),
    Target("load_first", "load 1st adapter ≤ 50 ms per 20 MB (a new process's first `hub.load`)", "ms", False,
           _load("new_process", "first")),
    Target("load_last", "load the last adapter of the series (16th in the full run) ≤ 50 ms per 20 MB", "ms", False,
           _load("last")),
    Target("load_flat", "load flat in the number resident (last ÷ first ≤ 1.25)", "×", False, _load_flatness),
    Target("forward_single", "single adapter ≤ 1.05× bare base (first batch shape)", "×", False,
           _forward("ours_single", 1.05)),
    Target("forward_mixed_8", "8-adapter mixed batch ≤ 1.15× bare base (first batch shape)", "×", False,
           _forward("ours_mixed_8", 1.15)),
    Target("forward_mixed_methods_8", "8 rows over 8 adapters of 5 methods (LoRA, AdaLoRA, IA³, bottleneck, prefix) "
           "≤ 1.2× bare base", "×", False, _fixed(1.2, "methods", "ratio_to_bare", "mixed_8")),
    Target("generation", "mixed generation faster than PEFT's (3 domains; speed-up > 1)", "×", True,
           _fixed(1.0, "generation", "runs", 0, "speedup_vs_peft"), strict=True),
    Target("decode_mixed_3", "decode, 8 rows over 3 adapters ≤ 1.10× single-adapter decode per token", "×", False,
           _fixed(1.10, "generation", "decode", "ratio_to_single", "mixed_3")),
    Target("decode_mixed_8", "decode, 8 rows over 8 adapters ≤ 1.10× single-adapter decode per token", "×", False,
           _fixed(1.10, "generation", "decode", "ratio_to_single", "mixed_8")),
    Target("prefill_mixed_8", "prefill 8 × 64, rows over 8 adapters ≤ 1.15× bare base", "×", False,
           _fixed(1.15, "generation", "prefill", "ratio_to_bare", "mixed_8")),
    Target("training_speed", "training ≥ 2× PEFT + Trainer tokens/s (finance recipe)", "×", True,
           _fixed(2.0, "training", "speedup_vs_peft")),
    Target("training_memory", "training peak memory ≤ PEFT + Trainer's", "×", False, _training_memory),
    Target("time_to_accuracy", "time to 85% validation accuracy (training seconds): ours ≤ PEFT + Trainer's "
           "(ours ÷ PEFT)", "×", False, _time_to_accuracy, kept_without_value=_reached_first),
    Target("concurrency", "two concurrent trainings: after (CPU seats) ≥ before (torch's default threads in both) "
           "aggregate tokens/s (after ÷ before)", "×", True, _fixed(1.0, "concurrency", "after_over_before")),
    Target("memory_resident", "resident adapter bytes ≤ 1.1× their files (worst count)", "×", False,
           _worst_memory),
    Target("serve_vs_peft", "serve: ≥ 4× a plain PEFT FastAPI server's tokens/s (concurrent clients, mixed adapters)",
           "×", True, _fixed(4.0, "serve", "speedup", "vs_peft")),
    Target("serve_vs_unbatched", "serve: ≥ 2.5× the same server's tokens/s with batching off", "×", True,
           _fixed(2.5, "serve", "speedup", "vs_unbatched")),
    Target("serve_answered", "serve: every request answered (answered ÷ sent = 1)", "×", True,
           _fixed(1.0, "serve", "answered_share")),
    Target("nf4_footprint", "NF4 base ≤ 0.4× fp32 footprint", "×", False,
           _fixed(0.4, "memory", "base_footprint", "nf4_over_fp32")),
    Target("many_zipf", "many adapters: Zipf α=1 tokens/s ÷ one adapter's ≥ 0.80 (largest N; median of repeats)", "×",
           True, _fixed(0.80, "many", "headline", "ratios", "ours", "zipf_over_one", "median")),
    Target("many_uniform", "many adapters: uniform tokens/s ÷ one adapter's ≥ 0.50 (largest N; median of repeats)",
           "×", True, _fixed(0.50, "many", "headline", "ratios", "ours", "uniform_over_one", "median")),
    Target("many_vs_peft", "many adapters: ≥ 4× the plain PEFT LRU server's tokens/s under Zipf α=1 (largest N)", "×",
           True, _fixed(4.0, "many", "headline", "ratios", "ours_over_peft", "zipf", "median")),
    Target("many_ttft", "many adapters: p99 TTFT under Zipf α=1 ÷ one adapter's ≤ 2 (largest N)", "×", False,
           _fixed(2.0, "many", "headline", "ratios", "ours", "ttft_p99_zipf_over_one", "median")),
    Target("registry_add", "registry of 10,000 entries: add one more ≤ 100 ms (median)", "ms", False,
           _fixed(100.0, "many", "registry", "add_ms", "median")),
    Target("registry_get", "registry of 10,000 entries: get ≤ 10 ms (median)", "ms", False,
           _fixed(10.0, "many", "registry", "get_ms", "median")),
    Target("registry_list", "registry of 10,000 entries: a filtered page of 50 ≤ 100 ms (median)", "ms", False,
           _fixed(100.0, "many", "registry", "list_50_ms", "median")),
    Target("encoder_mixed_8", "encoder: 8-adapter mixed batch (own heads) ≤ 1.15× bare encoder forward", "×", False,
           _fixed(1.15, "encoder", "forward", "ratio_to_bare", "mixed_8")),
)


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Check every target against ``report["results"]``.

    Returns:
        One dict per target: ``id``, ``target``, ``value``, ``limit``, ``unit`` and ``status``
        (``"met"``, ``"MISSED"`` or ``"not measured"``; in a quick run ``"not a claim (tiny model)"``
        with the comparison's outcome under ``verdict``).
    """
    results = report.get("results", {})
    no_claim = _no_claim(report)
    checks = []
    for target in TARGETS:
        measured = target.value(results)
        check = {"id": target.id, "target": target.text, "unit": target.unit, "value": None, "limit": None,
                 "status": NOT_MEASURED}
        if measured is not None:
            value, limit = measured
            if value is None:  # measured, but there is no figure (a side never got there)
                verdict = MET if target.kept_without_value and target.kept_without_value(results) else MISSED
            else:
                verdict = MET if target.met(value, limit) else MISSED
            check.update(value=value, limit=limit, status=no_claim or verdict)
            if no_claim:
                check["verdict"] = verdict
        checks.append(check)
    return checks


def _no_claim(report: dict[str, Any]) -> str | None:
    """The status every measured target gets in a quick run, else ``None``."""
    if not (report.get("config") or {}).get("quick"):
        return None
    parameters = (report.get("base") or {}).get("num_parameters")
    tiny = parameters is None or parameters < TINY_PARAMETERS
    return f"{NOT_A_CLAIM} ({'tiny model' if tiny else 'quick run'})"
