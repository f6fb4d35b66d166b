"""PNG plots of a benchmark report (matplotlib, Agg backend: no display needed).

One figure per question: forward cost relative to the bare base, switch and
load latency, memory, throughput (generation and training), validation
accuracy against training time and concurrent trainings before and after CPU
seats. A figure whose data is absent is not drawn.

>>> paths = write_plots(report, "bench-out")  # doctest: +SKIP
>>> [path.name for path in paths]  # doctest: +SKIP
['forward.png', 'latency.png', 'memory.png', 'throughput.png', 'accuracy.png', 'concurrency.png']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"bare": "#7f7f7f", "ours": "#1f77b4", "peft": "#ff7f0e", "files": "#2ca02c"}
LABELS = {"bare": "bare base", "ours": "adapterhub", "peft": "plain PEFT", "files": "adapter files"}


def write_plots(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Draw every plot the report has data for into ``out``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report.get("results", {})
    out = Path(out)
    written = []
    for name, draw in (("forward.png", _forward), ("latency.png", _latency), ("memory.png", _memory),
                       ("throughput.png", _throughput), ("accuracy.png", _accuracy),
                       ("concurrency.png", _concurrency), ("many.png", _many)):
        figure = draw(plt, results)
        if figure is not None:
            figure.tight_layout()
            figure.savefig(out / name, dpi=110)
            plt.close(figure)
            written.append(out / name)
    return written


def _side_of(case: str) -> str:
    return case.split("_", 1)[0]


def _forward(plt: Any, results: dict[str, Any]) -> Any:
    shapes = results.get("forward", {}).get("shapes")
    if not shapes:
        return None
    figure, axes = plt.subplots(1, len(shapes), figsize=(6 * len(shapes), 4), squeeze=False)
    for axis, shape in zip(axes[0], shapes):
        cases = list(shape["ratio_to_bare"])
        axis.bar(range(len(cases)), [shape["ratio_to_bare"][case] for case in cases],
                 color=[COLORS.get(_side_of(case), "#999999") for case in cases])
        axis.set_xticks(range(len(cases)), [case.replace("_", "\n") for case in cases], fontsize=8)
        for level, style in ((1.0, "-"), (1.05, ":"), (1.15, "--")):
            axis.axhline(level, color="black", linestyle=style, linewidth=0.8)
        axis.set_ylabel("forward time ÷ bare base")
        axis.set_title(f"forward, batch {shape['batch']} × {shape['tokens']} (targets 1.05 / 1.15)")
    return figure


def _latency(plt: Any, results: dict[str, Any]) -> Any:
    switch, load = results.get("switch"), results.get("load")
    if not switch and not load:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if switch:
        labels = list(switch["ms"])
        for offset, key in ((-0.2, "p50"), (0.2, "p99")):
            left.bar([i + offset for i in range(len(labels))], [switch["ms"][label][key] for label in labels],
                     width=0.4, label=key, color=[COLORS[label] for label in labels],
                     alpha=1.0 if key == "p50" else 0.5)
        left.set_xticks(range(len(labels)), [LABELS[label] for label in labels])
        left.set_yscale("log")
        left.axhline(0.1, color="black", linestyle="--", linewidth=0.8)
        left.set_ylabel("ms per switch (p50 solid, p99 light; log)")
        left.set_title(f"switch with {switch['resident']} resident (target 0.1 ms)")
    if load:
        for label, stats in load["ms"].items():
            counts = range(1, len(stats["by_index"]) + 1)
            right.plot(counts, stats["by_index"], marker="o", color=COLORS[label], label=LABELS[label])
        right.set_xlabel("adapters resident after the load")
        right.set_ylabel("ms per load (median)")
        right.set_yscale("log")
        right.set_title(f"load, {load['file_bytes'] / 2**20:.1f} MiB adapters")
        right.legend()
    return figure


def _memory(plt: Any, results: dict[str, Any]) -> Any:
    memory = results.get("memory")
    if not memory or not memory.get("resident"):
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    rows = memory["resident"]
    series = {"files": [row["file_bytes"] for row in rows]}
    for label in ("ours", "peft"):
        if all(label in row["resident_bytes"] for row in rows):
            series[label] = [row["resident_bytes"][label] for row in rows]
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series.items()):
        left.bar([i + (index - (len(series) - 1) / 2) * width for i in range(len(rows))],
                 [value / 2**20 for value in values], width=width, color=COLORS[label], label=LABELS[label])
    left.set_xticks(range(len(rows)), [f"{row['count']} adapter{'s' if row['count'] != 1 else ''}" for row in rows])
    left.set_ylabel("MiB")
    left.set_title("resident adapter memory vs file bytes (target ≤ 1.1×)")
    left.legend()
    footprint = memory.get("base_footprint") or {}
    kinds = [kind for kind in ("fp32", "nf4") if footprint.get(kind)]
    right.bar(kinds, [footprint[kind] / 2**20 for kind in kinds], color=["#7f7f7f", "#9467bd"][:len(kinds)])
    right.set_ylabel("MiB")
    right.set_title("base footprint (NF4 ≤ 0.4× fp32)")
    return figure


def _throughput(plt: Any, results: dict[str, Any]) -> Any:
    groups = [(f"generation\n{run['domains']} domains", run["tokens_per_s"])
              for run in results.get("generation", {}).get("runs", [])]
    training = results.get("training", {})
    if any(label in training for label in ("ours", "peft")):
        groups.append(("training", {label: training[label]["tokens_per_s"] for label in ("ours", "peft")
                                    if label in training}))
    if not groups:
        return None
    figure, axes = plt.subplots(1, len(groups), figsize=(3.5 * len(groups), 4), squeeze=False)
    for axis, (title, values) in zip(axes[0], groups):
        labels = list(values)
        axis.bar([LABELS[label] for label in labels], [values[label] for label in labels],
                 color=[COLORS[label] for label in labels])
        axis.set_title(title)
        axis.set_ylabel("tokens/s")
    return figure


def _accuracy(plt: Any, results: dict[str, Any]) -> Any:
    result = results.get("accuracy") or {}
    sides = [label for label in ("ours", "peft") if result.get(label, {}).get("curve")]
    if not sides:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for label in sides:
        side = result[label]
        curve = side["curve"]
        axis.plot([point["seconds"] for point in curve], [point["accuracy"] for point in curve], marker="o",
                  color=COLORS[label], label=LABELS[label] + ("" if side["reached"] else " (not reached)"))
        reached = next((point for point in curve if point["step"] == side["steps"]), None)
        if reached is not None:
            axis.plot([reached["seconds"]], [reached["accuracy"]], marker="*", markersize=16, color=COLORS[label])
    axis.axhline(result["threshold"], color="black", linestyle="--", linewidth=0.8)
    axis.set_ylim(0, 1.02)
    axis.set_xlim(left=0)
    axis.set_xlabel("training seconds (evaluation excluded)")
    axis.set_ylabel(f"validation accuracy ({result[sides[0]]['eval_rows']} rows)")
    axis.set_title(f"time to {result['threshold']:.0%} validation accuracy (star: first evaluation at or above)")
    axis.legend(loc="lower right")
    return figure


def _concurrency(plt: Any, results: dict[str, Any]) -> Any:
    """Per leg: each process's tokens/s and, where several ran, the aggregate."""
    result = results.get("concurrency") or {}
    legs = result.get("legs") or {}
    if not legs:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    groups = []
    for data in legs.values():
        bars = [("each process", process["tokens_per_s"]) for process in data["processes"]]
        groups.append(bars + [("aggregate", data["tokens_per_s"])] if len(bars) > 1 else bars)
    width = 0.8 / max(len(bars) for bars in groups)
    labelled = set()
    for index, bars in enumerate(groups):
        for slot, (label, value) in enumerate(bars):
            axis.bar(index + (slot - (len(bars) - 1) / 2) * width, value, width=width,
                     color=COLORS["ours"] if label == "aggregate" else "#aec7e8",
                     label=None if label in labelled else label)
            labelled.add(label)
    axis.set_xticks(range(len(legs)), [f"{leg}\n{data['policy']}\nthreads "
                                       f"{' + '.join(str(p['threads']) for p in data['processes'])}"
                                       for leg, data in legs.items()], fontsize=8)
    axis.set_ylabel("tokens/s")
    ratio = result.get("after_over_before")
    axis.set_title("concurrent trainings on the CPU" + ("" if ratio is None else f": after ÷ before = {ratio:.2f}×"))
    axis.legend()
    return figure


def _many(plt: Any, results: dict[str, Any]) -> Any:
    from .many_report import plot

    return plot(plt, results, colors=COLORS)
