"""Which base to serve on: each registered adapter × the base in fp32, NF4 and int8.

For every serving base it loads the default base once (timed, its resident bytes),
then loads each adapter from the registry onto it (timed, resident bytes) and scores
the adapter's own held-out test file through the runtime's ``predict`` — the path a
server uses. Writes ``serving-bases.json`` and ``serving-bases.md`` (the README table)
to ``--out``.

    python recipes/serving_bases.py finance finance-qlora medical legal --out serving-bases
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASES = (None, "nf4", "int8")


def measure(adapters: list[str], *, registry: str | None = None, bases: tuple = BASES) -> list[dict]:
    from adapterhub import load_base
    from adapterhub.registry import Registry
    from adapterhub.runtime import AdapterHub

    store = Registry(registry) if registry else Registry()
    rows = []
    for quantize in bases:
        started = time.perf_counter()
        base = load_base(quantize=quantize, progress=False)
        base_seconds = time.perf_counter() - started
        hub = AdapterHub(base, registry=store)
        for name in adapters:
            record = store.get(name)
            domain = record.manifest.get("domain") or name
            test = HERE / "data" / domain / "test.jsonl"
            data = [json.loads(line) for line in test.read_text().splitlines() if line.strip()]
            started = time.perf_counter()
            info = hub.load(name)
            load_ms = (time.perf_counter() - started) * 1e3
            predicted = []
            for start in range(0, len(data), 8):
                predicted += hub.predict([row["text"] for row in data[start:start + 8]], domain=info.name)
            accuracy = sum(p == row["label"] for p, row in zip(predicted, data)) / len(data)
            trained_on = ((record.manifest.get("base") or {}).get("quantize")
                          or ((record.manifest.get("recipe") or {}).get("base") or {}).get("quantize"))
            rows.append({"adapter": record.ref, "trained_on": trained_on,
                         "served_on": quantize or "fp32", "test_accuracy": round(accuracy, 4), "test_rows": len(data),
                         "adapter_load_ms": round(load_ms, 1), "adapter_bytes": info.bytes,
                         "base_load_s": round(base_seconds, 2), "base_bytes": base.footprint_bytes})
            hub.unload(info.name)
            print(json.dumps(rows[-1]), flush=True)
        hub.close()
        del hub, base
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| adapter (trained on) | served on | test accuracy | adapter load | base load | resident: base + adapter |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['adapter']} ({row['trained_on'] or 'fp32'}) | {row['served_on']} | "
                     f"{row['test_accuracy']:.1%} of {row['test_rows']} | {row['adapter_load_ms']:.0f} ms | "
                     f"{row['base_load_s']:.1f} s | {row['base_bytes'] / 2**20:.0f} + "
                     f"{row['adapter_bytes'] / 2**20:.1f} MiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapters", nargs="+", help="registry names, e.g. finance finance-qlora medical legal")
    parser.add_argument("--registry", default=None, help="registry root (default: the default registry)")
    parser.add_argument("--out", default="serving-bases", help="folder for serving-bases.json and .md")
    args = parser.parse_args()
    rows = measure(args.adapters, registry=args.registry)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving-bases.json").write_text(json.dumps(rows, indent=2))
    (out / "serving-bases.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
