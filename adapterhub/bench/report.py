"""Writing a benchmark report: ``bench.json`` (everything), ``bench.md`` (for people) and the plots.

>>> files = write_report(report, "bench-out")  # doctest: +SKIP
>>> sorted(path.name for path in files)[:2]  # doctest: +SKIP
['bench.json', 'bench.md']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .markdown import format_value, stats_cell, table
from .targets import MISSED

SIDE_NAMES = {"bare": "bare base", "ours": "adapterhub", "peft": "plain PEFT"}


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and the PNG plots into ``out``; returns the paths written."""
    from .plots import write_plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out)
    report["files"] = ["bench.json", "bench.md", *(path.name for path in plots)]
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = out / "bench.md"
    md_path.write_text(render_markdown(report, plots=[path.name for path in plots]), encoding="utf-8")
    return [json_path, md_path, *plots]


def render_markdown(report: dict[str, Any], *, plots: Sequence[str] = ()) -> str:
    """The human report: machine, targets (met / MISSED), one table per area, notes, plots."""
    results = report.get("results", {})
    parts = ["# adapterhub bench", ""]
    if report.get("config", {}).get("quick"):
        parts += ["> **Quick smoke run on the tiny model**: it checks that the bench works; its numbers are not "
                  "claims about speed.", ""]
    parts += table(["", ""], _machine_rows(report))
    parts += ["## Targets", ""]
    parts += table(["target", "measured", "limit", "status"], [
        [check["target"], format_value(check["value"], check["unit"]), format_value(check["limit"], check["unit"]),
         f"**{check['status']}**" if check["status"] == MISSED else check["status"]]
        for check in report.get("targets", [])])
    for area, title, render in _SECTIONS:
        if area in results:
            parts += [f"## {title}", "", *render(results[area]), ""]
    parts += _notes(report)
    if plots:
        parts += ["## Plots", "", *(f"![{name}]({name})" for name in plots), ""]
    return "\n".join(parts)


def _mib(count: float | None) -> str:
    return "–" if count is None else f"{count / 2**20:,.1f} MiB"


def _machine_rows(report: dict[str, Any]) -> list[list[Any]]:
    env = report.get("environment", {})
    base = report.get("base", {})
    config = report.get("config", {})
    versions = ", ".join(f"{name} {version}" for name, version in env.get("versions", {}).items() if version)
    gpu = env.get("gpu")
    adapters = report.get("adapters", {})
    return [
        ["machine", f"{env.get('hostname')} ({env.get('platform')})"],
        ["CPU", f"{env.get('cpu_model')} ({env.get('cpu_count')} logical cores)"],
        ["threads", f"torch {env.get('torch_threads')} intra-op, {env.get('torch_interop_threads')} inter-op"],
        ["device", str(env.get("device")) + (f" — {gpu['name']} ({_mib(gpu['memory_bytes'])})" if gpu else "")],
        ["base", f"{base.get('name')} ({base.get('num_parameters', 0):,} parameters)"],
        ["dtype / quantize", f"{base.get('dtype')} / {base.get('quantize') or 'none'}"
                             + (f" ({base['kernel_4bit']} 4-bit kernel)" if base.get("kernel_4bit") else "")],
        ["versions", f"python {env.get('python')}, {versions}"],
        ["adapters", f"LoRA r={config.get('rank')} on {adapters.get('modules')} linear modules, "
                     f"{_mib(adapters.get('file_bytes'))} each"],
        ["statistics", f"median of {config.get('repeats')} timed runs after {config.get('warmup')} warm-up"],
        ["run", f"{report.get('created')}, {report.get('seconds', 0):.0f} s"],
    ]


def _speedup_line(result: dict[str, Any]) -> list[str]:
    speedup = result.get("speedup_vs_peft")
    if speedup is None:
        return []
    return [f"adapterhub is **{format_value(speedup, '×')}** as fast as plain PEFT here.", ""]


def _switch(result: dict[str, Any]) -> list[str]:
    rows = [[SIDE_NAMES[label], stats_cell(stats, "p50"), stats_cell(stats, "p99")]
            for label, stats in result["ms"].items()]
    return [f"{result['calls']} switches cycling over {result['resident']} resident adapters "
            "(`hub.switch` vs PEFT `set_adapter`).", "", *table(["", "p50 ms", "p99 ms"], rows),
            *_speedup_line(result)]


def _load(result: dict[str, Any]) -> list[str]:
    rows = [[SIDE_NAMES[label], stats_cell(stats["first"]), stats_cell(stats["last"])]
            for label, stats in result["ms"].items()]
    fresh = result["ms"].get("ours", {}).get("new_process")
    first_call = ([f"A new process's first `hub.load` (imports, the registry's first connection and first "
                   f"allocations included; the file in the page cache): {stats_cell(fresh)} ms "
                   f"({stats_cell(fresh, 'min')}–{stats_cell(fresh, 'max')}), median of {fresh['n']} processes.", ""] if fresh else [])
    return [f"Registry → resident (ours) vs `PeftModel.from_pretrained` / `load_adapter` (PEFT), "
            f"{_mib(result['file_bytes'])} per adapter, median of {result['repeats']} series after a warm-up, "
            "in one process.", "", *table(["", "1st ms", f"{result['count']}th ms"], rows), *first_call,
            *_speedup_line(result)]


def _forward(result: dict[str, Any]) -> list[str]:
    lines = []
    for shape in result["shapes"]:
        rows = [[name.replace("_", " "), stats_cell(stats), format_value(shape["ratio_to_bare"].get(name, 1.0), "×"),
                 format_value(shape["tokens_per_s"][name])] for name, stats in shape["ms"].items()]
        lines += [f"Batch {shape['batch']} × {shape['tokens']} tokens ({result['resident']} adapters resident).", "",
                  *table(["case", "ms", "× bare", "tokens/s"], rows)]
    return lines


def _methods(result: dict[str, Any]) -> list[str]:
    if not result:
        return ["Not measured."]
    rows = [[name.replace("_", " "), stats_cell(stats), format_value(result["ratio_to_bare"].get(name, 1.0), "×")]
            for name, stats in result["ms"].items()]
    return [f"Batch {result['batch']} × {result['tokens']} tokens; mixed rows: {', '.join(result['rows'])}.", "",
            *table(["case", "ms", "× bare"], rows)]


def _generation(result: dict[str, Any]) -> list[str]:
    from .decode import render

    rows = [[run["domains"], run["rows"], run["new_tokens"], format_value(run["tokens_per_s"].get("ours")),
             format_value(run["tokens_per_s"].get("peft")), format_value(run.get("speedup_vs_peft"), "×")]
            for run in result["runs"]]
    return ["Greedy, exactly `new tokens` per row, rows interleaved across domains.", "",
            *table(["domains", "rows", "new tokens", "ours tokens/s", "PEFT tokens/s", "speed-up"], rows),
            *render(result)]


def _training(result: dict[str, Any]) -> list[str]:
    rows = [[SIDE_NAMES[label], format_value(result[label].get("tokens_per_s")), _mib(result[label].get("peak_bytes")),
             format_value(result[label].get("seconds"), "s"), result[label].get("tokens")]
            for label in ("ours", "peft") if label in result]
    return [f"{result.get('steps')} timed optimizer steps after {result.get('warmup')} warm-up steps, batch "
            f"{result.get('batch_size')}, both following `{result.get('recipe')}`; tokens are non-padding input "
            "tokens; each trainer in its own process (peak: CUDA max allocated, or the process's peak RSS on CPU), "
            f"{result.get('repeats', 1)} runs each alternating, median run shown (peak: the highest).",
            "",
            *table(["", "tokens/s", "peak memory", "time", "tokens"], rows), *_speedup_line(result)]


def _accuracy(result: dict[str, Any]) -> list[str]:
    sides = [label for label in ("ours", "peft") if label in result]
    if not sides:
        return ["Not measured."]
    threshold = f"{result['threshold']:.0%}"
    plan = result[sides[0]]["schedule"]
    lines = [f"Both trainers follow `{result['recipe']}`'s own schedule ({plan['total_steps']} optimizer steps"
             f"{'' if result.get('max_steps') is None else ' (capped)'}, batch {plan['batch_size']}, lr {plan['lr']:g}, "
             f"{plan['scheduler']} with {plan['warmup_steps']} warm-up steps, seed {plan['seed']}), each in its own "
             f"process. Every {result['eval_every']} steps and after the last, validation accuracy on the same "
             f"{result[sides[0]]['eval_rows']} rows by label scoring; training stops at the first evaluation ≥ "
             f"{threshold}. **Time counts training only**: the clock runs from the first step and is paused while "
             "evaluating (the same on both sides; loading and set-up excluded); *wall* includes the evaluations. "
             "One run per trainer, so on a shared machine the times are noisy.", ""]
    if result.get("quick"):
        lines += [f"Quick run: a few steps on the tiny model, which cannot reach {threshold} — not a claim.", ""]
    rows = []
    for label in sides:
        side = result[label]
        rows.append([SIDE_NAMES[label], "yes" if side["reached"] else "**no**", format_value(side["seconds"], "s"),
                     format_value(side["wall_seconds"], "s"), side["steps"] or "–", side["tokens"] or "–",
                     f"{format_value(side['best_accuracy'])} (step {side['best_step']})", side["evaluations"]])
    lines += table(["", f"reached {threshold}", "training time", "wall (with eval)", "steps", "tokens",
                     "best accuracy", "evaluations"], rows)
    ours, peft = result.get("ours") or {}, result.get("peft") or {}
    if result.get("time_ratio") is not None:
        lines += [f"adapterhub reaches {threshold} in **{format_value(result['time_ratio'], '×')}** of PEFT + "
                  f"Trainer's training time ({format_value(result['speedup_vs_peft'], '×')} as fast).", ""]
    elif ours.get("reached") and peft:
        lines += [f"Only adapterhub reached {threshold} (PEFT + Trainer's best: {format_value(peft['best_accuracy'])}).",
                  ""]
    curves = {label: {point["step"]: point for point in result[label]["curve"]} for label in sides}
    steps = sorted({step for curve in curves.values() for step in curve})
    lines += ["Accuracy curve (training seconds at each evaluation):", "",
              *table(["step", *(f"{SIDE_NAMES[label]} {column}" for label in sides for column in ("accuracy", "s"))],
                      [[step, *(cell for label in sides for cell in _curve_cells(curves[label].get(step)))]
                       for step in steps])]
    return lines


def _curve_cells(point: dict[str, Any] | None) -> list[str]:
    return ["", ""] if point is None else [format_value(point["accuracy"]), format_value(point["seconds"])]


def _memory(result: dict[str, Any]) -> list[str]:
    measured = all("measured_bytes" in row for row in result["resident"])
    rows = []
    for row in result["resident"]:
        cells = [row["count"], _mib(row["file_bytes"])]
        for label in ("ours", "peft"):
            cells += [_mib(row["resident_bytes"].get(label)), format_value(row["ratio_to_files"].get(label), "×")]
            if measured:
                cells.append(_mib(row["measured_bytes"].get(label)))
        rows.append(cells)
    columns = ["resident", "÷ files", "CUDA allocated"] if measured else ["resident", "÷ files"]
    header = ["adapters", "files", *(f"{side} {column}" for side in ("ours", "PEFT") for column in columns)]
    lines = table(header, rows)
    footprint = result.get("base_footprint") or {}
    if footprint.get("fp32"):
        lines += [f"Base footprint: fp32 {_mib(footprint['fp32'])}, NF4 {_mib(footprint.get('nf4'))} "
                  f"({format_value(footprint.get('nf4_over_fp32'), '×')} of fp32; its unquantised embeddings and "
                  f"norms in {footprint.get('nf4_dtype')}).", ""]
    return lines


def _encoder(result: dict[str, Any]) -> list[str]:
    forward = result["forward"]
    rows = [[case.replace("_", " "), stats_cell(stats), format_value(forward["ratio_to_bare"].get(case, 1.0), "×")]
            for case, stats in forward["ms"].items()]
    lines = [f"Encoder `{result['base']}`, batch {forward['batch']} × {forward['tokens']} tokens; {result['adapters']} "
             f"LoRA r{result['rank']} adapters (4 sequence-, 4 token-classification), each row with its own head.", "",
             *table(["case", "ms", "× bare"], rows)]
    sides = [("encoder (`classify`, head)", result.get("encoder")), ("decoder (`predict`, label scoring)",
                                                                     result.get("decoder"))]
    side_rows = [[name, side["texts"], format_value(side["texts_per_second"]), _mib(side["base_bytes"]),
              _mib(side["adapter_bytes"]), _mib(side["total_bytes"])] for name, side in sides if side]
    lines += ["Finance sentiment texts, one adapter:", "",
              *table(["", "texts", "texts/s", "base", "adapter", "base + adapter"], side_rows)]
    versus = result.get("encoder_over_decoder")
    if versus:
        lines += [f"The encoder classifies **{format_value(versus['texts_per_second'], '×')}** the decoder's texts/s "
                  f"in **{format_value(versus['memory'], '×')}** its memory.", ""]
    return lines


def _concurrency(result: dict[str, Any]) -> list[str]:
    from .concurrency import render

    return render(result)


_SECTIONS = (
    ("switch", "1. Switch latency", _switch),
    ("load", "2. Load latency", _load),
    ("forward", "3. Forward throughput", _forward),
    ("generation", "4. Generation throughput", _generation),
    ("training", "5. Training throughput and memory", _training),
    ("memory", "6. Memory", _memory),
    ("serve", "7. Serving over HTTP", lambda result: __import__("adapterhub.bench.serving",
                                                                fromlist=["render"]).render(result)),
    ("encoder", "8. Encoder adapters", _encoder),
    ("methods", "9. Mixed methods in one batch", _methods),
    ("accuracy", "10. Time to accuracy", _accuracy),
    ("concurrency", "11. Concurrent trainings", _concurrency),
    ("many", "12. Many adapters", lambda result: __import__("adapterhub.bench.many_report",
                                                           fromlist=["render"]).render(result)),
)


def _notes(report: dict[str, Any]) -> list[str]:
    from .notes import MISSED_NOTES

    lines = []
    for check in report.get("targets", []):
        if check["status"] == MISSED and check["id"] in MISSED_NOTES:
            lines.append(f"- **{check['target']}** — {MISSED_NOTES[check['id']]}")
    for skip in report.get("skipped", []):
        lines.append(f"- not measured: {skip['area']} / {skip['case']}: {skip['reason']}")
    return ["## Notes", "", *lines, ""] if lines else []
