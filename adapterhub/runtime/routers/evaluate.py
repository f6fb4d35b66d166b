"""``evaluate_router``: how well a router chooses, and what choosing costs, on labelled files per adapter.

Figures (one dict, written as ``router-eval.json`` with a ``confusion.png`` beside it when ``out`` is given):

* ``routing_accuracy``: share of in-domain texts sent to their own adapter (a fallback counts as a miss);
  ``top1_accuracy``: share whose most probable adapter is their own (whatever the thresholds say);
* ``confusion``: rows = the file's adapter, columns = what served the text (each adapter, ``mix``, ``base``);
* ``ood_base_share``: share of out-of-domain texts the router leaves to the bare base (``fallback="base"``);
* ``end_to_end``: per adapter, task accuracy with ``domain="auto"`` beside naming the adapter (a text the
  router leaves to the base or a mix of adapters with other labels counts as wrong); ``end_to_end_mixed``:
  the same over all those files mixed together (rows weighted alike);
* ``timing``: seconds of ``predict(texts, domain="auto")``, ``predict`` with the adapters named and ``route``
  alone, alternated ``repeats`` times over the same texts (the ratio's median and spread, and the routing
  pass's share of a named call).

>>> report = evaluate_router(hub, "domains", data={"finance": ["test.jsonl"]}, ood=["ood.txt"])  # doctest: +SKIP
>>> report["routing_accuracy"]  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from ...errors import RoutingError
from .build import read_texts
from .loading import open_router
from .model import Router


def read_labelled(path: str | Path, *, text_field: str = "text", label_field: str = "label") -> list[tuple[str, Any]]:
    """``(text, label or None)`` rows of a ``.jsonl`` file (or texts of a ``.txt`` file, without labels)."""
    path = Path(path).expanduser()
    if path.suffix != ".jsonl":
        return [(text, None) for text in read_texts(path)]
    texts = read_texts(path, text_field=text_field)
    labels = [json.loads(line).get(label_field) for line in path.read_text(encoding="utf-8").splitlines()
              if line.strip()]
    return list(zip(texts, labels))


def evaluate_router(hub: Any, router: Any, *, data: Mapping[str, Sequence[str]], ood: Sequence[str] = (),
                    end_to_end: bool = True, repeats: int = 3, timing_rows: int = 60, batch_size: int = 32,
                    out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Score ``router`` on ``data`` (``{adapter name: [labelled jsonl files]}``) and ``ood`` (text files).

    Args:
        hub: an :class:`~adapterhub.runtime.AdapterHub` on the router's base, with the router's registry.
        router: a router ref or :class:`~adapterhub.runtime.routers.Router`.
        end_to_end: also run ``predict`` with ``auto`` and with the adapter named (classification adapters).
        repeats / timing_rows: alternated timing rounds over ``timing_rows`` routed texts spread evenly over the
            files (0: none).
        out: a folder for ``router-eval.json`` and ``confusion.png``.

    Raises:
        RoutingError: an adapter name the router does not choose, or a file without texts.
    """
    chosen = router if isinstance(router, Router) else open_router(hub.registry, router, base=hub.base)
    names, refs = chosen.names, chosen.refs
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RoutingError(f"router {chosen.ref} does not choose {', '.join(unknown)} (it chooses {', '.join(names)})",
                           fix="pass --data NAME=FILE with NAME one of those")
    rows = {name: [row for path in files for row in read_labelled(path)] for name, files in data.items()}
    texts = [text for name in rows for text, _ in rows[name]]
    truth = [name for name in rows for _ in rows[name]]
    if not texts:
        raise RoutingError("no in-domain texts to evaluate the router on", fix="pass --data NAME=FILE")
    decisions = _timed_route(hub, chosen, texts, progress)
    columns = [*names, "mix", "base"]
    confusion = {name: dict.fromkeys(columns, 0) for name in rows}
    for decision, name in zip(decisions, truth):
        served = decision.adapter if decision.decision == "adapter" else decision.decision
        confusion[name][served] += 1
    report: dict[str, Any] = {
        "router": chosen.ref, "head": chosen.config["head"], "layer": chosen.layer, "texts": len(texts),
        "routing_accuracy": _share([d.decision == "adapter" and d.adapter == n for d, n in zip(decisions, truth)]),
        "top1_accuracy": _share([d.adapter == n for d, n in zip(decisions, truth)]),
        "fallback_share_in_domain": _share([d.decision != "adapter" for d in decisions]),
        "confusion": {"rows": list(rows), "columns": columns, "counts": confusion},
    }
    if ood:
        outside = [text for path in ood for text in read_texts(path)]
        ood_decisions = hub.route(outside, router=chosen, fallback="base")
        report["ood_texts"] = len(outside)
        report["ood_base_share"] = _share([d.decision == "base" for d in ood_decisions])
        report["ood_served"] = {label: sum(d.label == label for d in ood_decisions)
                                for label in sorted({d.label for d in ood_decisions})}
    if end_to_end:
        report["end_to_end"] = _end_to_end(hub, rows, decisions, refs, batch_size)
        if report["end_to_end"]:
            report["end_to_end_mixed"] = _mixed(report["end_to_end"].values())
    if repeats and timing_rows:
        routed = [i for i, d in enumerate(decisions) if d.decision == "adapter"]
        routed = routed[::max(1, len(routed) // timing_rows)][:timing_rows]  # spread over every file
        previous = hub.router
        hub.use_router(chosen, fallback="base")  # predict(domain="auto") routes with this router
        try:
            report["timing"] = _timing(hub, [texts[i] for i in routed], [decisions[i].choice for i in routed],
                                       repeats=repeats, batch_size=batch_size)
        finally:
            hub.use_router(previous)
    if out is not None:
        folder = Path(out).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "router-eval.json").write_text(json.dumps(report, indent=2) + "\n")
        write_confusion_png(report, folder / "confusion.png")
    return report


def _timed_route(hub: Any, router: Any, texts: list[str], progress: bool) -> list[Any]:
    from tqdm.auto import tqdm

    decisions = []
    with tqdm(total=len(texts), desc="routing", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), 32):
            decisions += hub.route(texts[start:start + 32], router=router, fallback="base")
            bar.update(len(texts[start:start + 32]))
    return decisions


def _end_to_end(hub: Any, rows: Mapping[str, list[tuple[str, Any]]], decisions: Sequence[Any],
                refs: Mapping[str, str], batch_size: int) -> dict[str, Any]:
    """Per adapter: task accuracy naming it, and with what the router chose (base / foreign mix rows: wrong)."""
    result, offset = {}, 0
    for name, labelled in rows.items():
        mine = decisions[offset:offset + len(labelled)]
        offset += len(labelled)
        texts = [text for text, _ in labelled]
        labels = [label for _, label in labelled]
        if any(label is None for label in labels):
            continue
        named = hub.predict(texts, domain=refs[name], batch_size=batch_size)
        answers: list[Any] = [None] * len(texts)
        served = [i for i, d in enumerate(mine) if d.decision != "base"]
        if served:
            predicted = _predict_rows(hub, [texts[i] for i in served], [mine[i].choice for i in served], batch_size)
            for i, answer in zip(served, predicted):
                answers[i] = answer
        named_accuracy = _share([a == b for a, b in zip(named, labels)])
        auto_accuracy = _share([a == b for a, b in zip(answers, labels)])
        result[name] = {"rows": len(texts), "named": named_accuracy, "auto": auto_accuracy,
                        "points": round(100 * (auto_accuracy - named_accuracy), 2)}
    return result


def _mixed(parts: Any) -> dict[str, Any]:
    """:func:`_end_to_end`'s figures over all its files together."""
    parts = list(parts)
    rows = sum(part["rows"] for part in parts)
    named = round(sum(part["named"] * part["rows"] for part in parts) / rows, 4)
    auto = round(sum(part["auto"] * part["rows"] for part in parts) / rows, 4)
    return {"rows": rows, "named": named, "auto": auto, "points": round(100 * (auto - named), 2)}


def _predict_rows(hub: Any, texts: list[str], choices: list[Any], batch_size: int) -> list[Any]:
    """Answers for routed rows; a row whose choice cannot classify (a mix of unlike tasks) answers ``None``."""
    from ...errors import AdapterHubError

    try:
        return hub.predict(texts, domains=choices, batch_size=batch_size)
    except AdapterHubError:
        answers = []
        for text, choice in zip(texts, choices):
            try:
                answers.append(hub.predict([text], domains=[choice], batch_size=batch_size)[0])
            except AdapterHubError:
                answers.append(None)
        return answers


def _timing(hub: Any, texts: list[str], choices: list[Any], *, repeats: int, batch_size: int) -> dict[str, Any]:
    """``predict(domain="auto")`` vs ``predict(domains=named)``, and ``route`` alone, after one small warm-up call
    of each; each round runs the three in turn, the next round in the reverse order (machine drift hits them
    alike). ``route_share``: the median routing pass over the median named call."""
    if not texts:
        return {}
    hub.predict(texts[:4], domains=choices[:4], batch_size=batch_size)  # warm: adapters resident, kernels built
    hub.predict(texts[:4], domain="auto", batch_size=batch_size)
    calls = {"named": lambda: hub.predict(texts, domains=choices, batch_size=batch_size),
             "auto": lambda: hub.predict(texts, domain="auto", batch_size=batch_size),
             "route": lambda: hub.route(texts)}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats):
        for name in (list(calls) if round_ % 2 == 0 else list(reversed(calls))):
            started = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - started)
    ratios = [a / n for a, n in zip(seconds["auto"], seconds["named"])]
    return {"rows": len(texts), "repeats": repeats, **{f"{name}_s": [round(x, 3) for x in values]
                                                      for name, values in seconds.items()},
            "ratio_median": round(statistics.median(ratios), 4), "ratio_min": round(min(ratios), 4),
            "ratio_max": round(max(ratios), 4),
            "route_share": round(statistics.median(seconds["route"]) / statistics.median(seconds["named"]), 4)}


def _share(flags: Sequence[bool]) -> float:
    return round(sum(map(bool, flags)) / len(flags), 4) if flags else 0.0


def write_confusion_png(report: Mapping[str, Any], path: str | Path) -> Path:
    """Draw the report's confusion matrix (counts, rows = the texts' adapter) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = report["confusion"]
    counts = [[table["counts"][row][column] for column in table["columns"]] for row in table["rows"]]
    figure, axes = plt.subplots(figsize=(1.2 * len(table["columns"]) + 1.5, 0.8 * len(table["rows"]) + 1.5))
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(table["columns"])), table["columns"])
    axes.set_yticks(range(len(table["rows"])), table["rows"])
    axes.set_xlabel("served by")
    axes.set_ylabel("text from")
    for r, row in enumerate(counts):
        for c, count in enumerate(row):
            axes.text(c, r, str(count), ha="center", va="center", color="black")
    axes.set_title(f"{report['router']}: routing accuracy {100 * report['routing_accuracy']:.1f}%")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
