"""The many-adapters area in the report: its tables and its plot (tokens/s against N for both servers).

>>> render({"headline": {"n": 4, "legs": [], "ratios": {}}, "sweep": []})[0][:10]
'Adapters: '
"""

from __future__ import annotations

from typing import Any

NAMES = {"ours": "adapterhub", "peft": "plain PEFT (LRU)"}


def render(result: dict[str, Any]) -> list[str]:
    """The report section: adapters, registry timings, headline legs, ratios (median, min–max) and the sweep."""
    from .markdown import format_value, table

    described = result.get("adapters") or {}
    shapes = ", ".join(f"{count['count']} × {shape} ({_size(count['file_bytes'])} each)"
                       for shape, count in (described.get("shapes") or {}).items())
    lines = [f"Adapters: {described.get('count')} synthetic LoRA ({shapes}); {result.get('clients')} concurrent "
             f"clients, {result.get('resident')} device-resident adapters on both servers, "
             f"{result.get('prompt_tokens')}-token prompts, exactly {result.get('new_tokens')} new tokens, greedy; "
             f"each leg sends {result.get('warmup_requests')} untimed then {result.get('requests')} timed requests. "
             "Zipf α = " f"{result.get('alpha')}. The PEFT server serves one request at a time and does not stream "
             "(its TTFT is its latency).", ""]
    registry = result.get("registry") or {}
    if registry:
        lines += [f"Registry of {registry['entries']:,} entries (bulk `add_many`: "
                  f"{format_value(registry['bulk_add_per_s'])} entries/s), median over repeated calls:", "",
                  *table(["add one more", "get", "filtered page of 50", "count"],
                         [[_ms(registry.get(key)) for key in ("add_ms", "get_ms", "list_50_ms", "count_ms")]]), ""]
    headline = result.get("headline") or {}
    rows = []
    for leg in headline.get("legs", []):
        latency, ttft = leg.get("latency_ms") or {}, leg.get("ttft_ms") or {}
        counters = leg.get("counters") or {}
        rows.append([NAMES.get(leg["side"], leg["side"]), leg["traffic"], leg["repeat"], leg["distinct"],
                     format_value(leg["tokens_per_s"]), format_value(leg["requests_per_s"]),
                     format_value(latency.get("p50")), format_value(latency.get("p99")),
                     format_value(ttft.get("p50")), format_value(ttft.get("p99")),
                     format_value(leg.get("device_hit_ratio")), int(counters.get("loads", 0)),
                     int(counters.get("evictions", 0)), _peak_bytes(leg.get("peaks") or {}),
                     _tiers(leg.get("tiers") or {}), leg["errors"]])
    if rows:
        lines += [f"N = {headline['n']}:", "",
                  *table(["server", "traffic", "repeat", "distinct", "tokens/s", "req/s", "p50 ms", "p99 ms",
                          "TTFT p50", "TTFT p99", "device hits", "loads", "evictions", "peak resident", "tiers: hits, peak / budget", "errors"],
                         rows), ""]
    lines += _ratio_lines(headline.get("ratios") or {}, format_value)
    sweep = result.get("sweep") or []
    if sweep:
        counts = sorted({point["n"] for point in sweep})
        series = sorted({(point["side"], point["traffic"]) for point in sweep})
        by = {(point["side"], point["traffic"], point["n"]): point["tokens_per_s"] for point in sweep}
        lines += ["Tokens/s against N (one pass each):", "",
                  *table(["server", "traffic", *(f"N={n}" for n in counts)],
                         [[NAMES.get(side, side), traffic, *(format_value(by.get((side, traffic, n))) for n in counts)]
                          for side, traffic in series]), ""]
    return lines


def _ms(stats: dict[str, float] | None) -> str:
    if not stats:
        return "—"
    return f"{stats['median']:.2f} ms (p99 {stats['p99']:.2f})"


def _peak_bytes(peaks: dict[str, float]) -> str:
    found = {key: value for key, value in peaks.items() if "bytes" in key}
    if not found:
        return "—"
    return ", ".join(f"{key.replace('adapterhub_', '')} {_size(value)}" for key, value in sorted(found.items()))


def _tiers(tiers: dict[str, Any]) -> str:
    """``device 0.91, 30.1 MiB / 64.0 MiB; host ...`` (``—`` where the server reports no tiers)."""
    cells = []
    for tier, figures in tiers.items():
        hit = "—" if figures.get("hit_ratio") is None else f"{figures['hit_ratio']:.2f}"
        peak = "—" if figures.get("peak_bytes") is None else _size(figures["peak_bytes"])
        budget = "" if not figures.get("budget_bytes") else f" / {_size(figures['budget_bytes'])}"
        cells.append(f"{tier} {hit}, {peak}{budget}")
    return "; ".join(cells) or "—"


def _size(count: float) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


def _ratio_lines(ratios: dict[str, Any], format_value: Any) -> list[str]:
    def cell(spread: dict[str, Any] | None) -> str:
        if not spread or spread.get("median") is None:
            return "—"
        return (f"**{format_value(spread['median'], '×')}** ({format_value(spread['min'], '×')}–"
                f"{format_value(spread['max'], '×')}, n={spread['n']})")

    if not ratios:
        return []
    ours, peft, versus = ratios.get("ours") or {}, ratios.get("peft") or {}, ratios.get("ours_over_peft") or {}
    return ["Ratios (median over repeats, min–max):", "",
            f"- adapterhub, Zipf ÷ one adapter: {cell(ours.get('zipf_over_one'))}; uniform ÷ one: "
            f"{cell(ours.get('uniform_over_one'))}; p99 TTFT Zipf ÷ one: {cell(ours.get('ttft_p99_zipf_over_one'))}",
            f"- plain PEFT, Zipf ÷ one adapter: {cell(peft.get('zipf_over_one'))}; uniform ÷ one: "
            f"{cell(peft.get('uniform_over_one'))}",
            f"- adapterhub ÷ plain PEFT tokens/s: one {cell(versus.get('one'))}, Zipf {cell(versus.get('zipf'))}, "
            f"uniform {cell(versus.get('uniform'))}", ""]


def plot(plt: Any, results: dict[str, Any], *, colors: dict[str, str]) -> Any:
    """Tokens/s against N (log scale) for each server (``colors[side]``) and traffic; ``None`` without a sweep."""
    sweep = (results.get("many") or {}).get("sweep") or []
    if not sweep:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    ones = {point["side"]: point["tokens_per_s"] for point in sweep if point["traffic"] == "one"}
    for side in ("ours", "peft"):
        for traffic, style in (("zipf", "-o"), ("uniform", "--s")):
            points = sorted((point["n"], point["tokens_per_s"]) for point in sweep
                            if point["side"] == side and point["traffic"] in (traffic, "one"))
            if points:
                axis.plot([n for n, _ in points], [value for _, value in points], style, color=colors[side],
                          label=f"{NAMES[side]}, {traffic}")
        if side in ones:
            axis.axhline(ones[side], color=colors[side], linestyle=":", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("registered adapters N (log)")
    axis.set_ylabel("generated tokens/s")
    axis.set_title("Serving throughput over many adapters (dotted: one adapter)")
    axis.legend(fontsize=8)
    return figure
