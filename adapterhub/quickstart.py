"""The main job: three domain adapters on one resident base, end to end.

``run()`` fetches the base the recipes train on (the embedded default for the
shipped ones), trains the medical, finance and legal recipes into the registry
when they are not there yet, loads all three
onto one :class:`~adapterhub.runtime.AdapterHub`, lets each domain answer fresh
inputs, runs one mixed-domain batch, and reports validation accuracy and the
measured load and switch times. A second run reuses the registered adapters.

>>> from adapterhub.quickstart import run
>>> report = run()  # doctest: +SKIP
>>> sorted(report["accuracy"])  # doctest: +SKIP
['finance', 'legal', 'medical']
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .paths import project_root

DOMAINS = ("medical", "finance", "legal")

# Inputs written for this demo only: none of them is in the training, validation or test data.
FRESH_INPUTS = {
    "medical": [
        "For two weeks my heart suddenly races and flutters when I lie down at night, and I feel lightheaded.",
        "Itchy silver-white scaly patches have spread over both elbows and my scalp since the winter.",
        "Triage: 61F, progressive difficulty swallowing solids over 3 months, 5 kg weight loss.",
    ],
    "finance": [
        "The regional lender lifted its full-year profit outlook after loan growth beat every analyst estimate.",
        "Shares of the shipping group slumped after it suspended its dividend and warned of a first-half loss.",
        "The utility will publish its third-quarter results on 14 November before the market opens.",
    ],
    "legal": [
        "Either party may end this Agreement on ninety (90) days' written notice to the other for any reason.",
        "All invoices are payable in euros within thirty (30) days of receipt; overdue sums bear interest at 4% a year.",
        "This Agreement and any dispute arising from it are governed by the laws of Ireland, and the courts of Dublin have exclusive jurisdiction.",
    ],
}


def recipes_dir() -> Path:
    """The shipped ``recipes/`` folder of the checkout you are in."""
    root = project_root() or project_root(Path(__file__).resolve().parent)
    if root is None or not (root / "recipes").is_dir():
        raise ConfigError("the shipped recipes live in the adapterhub checkout: run `adapterhub quickstart` from "
                          "inside it, or pass recipes_dir= / --recipes DIR")
    return root / "recipes"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(*, recipes: str | Path | None = None, registry: Any = None, say: Callable[[str], None] = print,
        progress: bool = True, live_rows: int = 12) -> dict[str, Any]:
    """Run the quickstart and return its report (what it printed, as data).

    Args:
        recipes: folder holding ``medical.yaml``, ``finance.yaml``, ``legal.yaml`` and ``data/``
            (default: the checkout's ``recipes/``).
        registry: a :class:`~adapterhub.registry.Registry` or root (default registry when ``None``).
        say: where progress lines go.
        progress: show training progress bars.
        live_rows: validation rows per domain re-scored through the runtime (the full-set
            accuracy comes from the manifest, measured when the adapter was trained).

    Returns:
        ``{"trained": [...], "load_ms": {...}, "switch_us": {...}, "answers": {...},
        "mixed": [...], "accuracy": {...}, "live_accuracy": {...}, "base_accuracy": {...}, "live_rows": int}``.
    """
    from .base.loading import load_base
    from .training import load_recipe
    from .registry.store import Registry
    from .runtime import AdapterHub
    from .training.trainer import train

    folder = Path(recipes) if recipes is not None else recipes_dir()
    registry = registry if isinstance(registry, Registry) else Registry(registry)
    report: dict[str, Any] = {"trained": [], "registry": str(registry.root), "live_rows": live_rows}

    served = load_recipe(folder / f"{DOMAINS[0]}.yaml").base  # the base the recipes train on (the default one)
    say(f"1/5 base: fetching and loading {served.model} (once) ...")
    base = load_base(served.model, dtype=served.dtype, device=served.device, progress=progress)
    for domain in DOMAINS:
        if any(record.name == domain for record in registry.list()):
            say(f"2/5 {domain}: already registered as {registry.get(domain).ref}")
            continue
        say(f"2/5 {domain}: training recipes/{domain}.yaml (first run only) ...")
        record = train(folder / f"{domain}.yaml", registry=registry, progress=progress).record
        report["trained"].append(record.ref)

    say("3/5 loading all three adapters onto one resident base ...")
    hub = AdapterHub(base, registry=registry)
    report["load_ms"] = {}
    for domain in DOMAINS:
        start = time.perf_counter()
        hub.load(domain)
        report["load_ms"][domain] = round((time.perf_counter() - start) * 1e3, 2)
    report["switch_us"] = _switch_times(hub)

    say("4/5 each domain answers fresh inputs; then one mixed batch ...")
    report["answers"] = {domain: list(zip(texts, hub.predict(texts, domain=domain)))
                         for domain, texts in FRESH_INPUTS.items()}
    mixed_texts = [texts[0] for texts in FRESH_INPUTS.values()]
    mixed_domains = list(FRESH_INPUTS)
    report["mixed"] = list(zip(mixed_domains, mixed_texts, hub.predict(mixed_texts, domains=mixed_domains)))

    say(f"5/5 validation accuracy per domain (recorded at training; live re-check on {live_rows} rows each) ...")
    report["accuracy"], report["live_accuracy"], report["base_accuracy"] = {}, {}, {}
    for domain in DOMAINS:
        metrics = registry.get(domain).manifest.get("metrics") or {}
        report["accuracy"][domain] = (metrics.get("validation") or {}).get("accuracy")
        report["base_accuracy"][domain] = ((metrics.get("base") or {}).get("validation") or {}).get("accuracy")
        rows = _read_jsonl(folder / "data" / domain / "validation.jsonl")[:live_rows]
        predicted = hub.predict([row["text"] for row in rows], domain=domain)
        report["live_accuracy"][domain] = sum(p == row["label"] for p, row in zip(predicted, rows)) / len(rows)
    return report


def _switch_times(hub: Any, rounds: int = 2000) -> dict[str, float]:
    """Median and p99 of one ``hub.switch`` in microseconds, cycling through the domains."""
    samples = []
    cycle = [*DOMAINS, None]
    for index in range(rounds):
        start = time.perf_counter_ns()
        hub.switch(cycle[index % len(cycle)])
        samples.append((time.perf_counter_ns() - start) / 1e3)
    hub.switch(None)
    samples.sort()
    return {"p50": round(statistics.median(samples), 2), "p99": round(samples[int(len(samples) * 0.99)], 2)}
