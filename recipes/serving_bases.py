"""Which base to serve on: each registered adapter × the base in fp32, NF4 (both CPU kernels) and int8.

``nf4`` is the default base: on CPUs with AVX512-BF16 bitsandbytes packs its 4-bit layers for its bf16 kernel
(the ``kernel`` column says ``packed-bf16``); ``nf4-unpacked`` dequantises every layer at every forward
(``load_base(..., packed_4bit=False)``, the only kernel on other CPUs). For every serving base it loads the
default base once (timed, its resident bytes), then loads each adapter from the registry onto it (timed,
resident bytes) and scores the adapter's own held-out test file (``--validation``: its validation file too)
through the runtime's ``predict`` — the path a server uses. Writes ``serving-bases.json`` (predictions
included) and ``serving-bases.md`` (the README table) to ``--out``.

    python recipes/serving_bases.py finance finance-qlora medical legal --out serving-bases
    python recipes/serving_bases.py finance medical --bases nf4 nf4-unpacked --validation --registry /tmp/reg
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASES = {"fp32": {}, "nf4": {"quantize": "nf4"}, "nf4-unpacked": {"quantize": "nf4", "packed_4bit": False},
         "int8": {"quantize": "int8"}}
"""Serving bases by name: ``load_base`` options."""


def score(hub, name: str, path: Path, split: str) -> dict:
    """``{split}_accuracy``, ``{split}_rows`` and ``{split}_predictions`` of adapter ``name`` on a JSONL file."""
    data = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    predicted = []
    for start in range(0, len(data), 8):
        predicted += hub.predict([row["text"] for row in data[start:start + 8]], domain=name)
    hits = sum(p == row["label"] for p, row in zip(predicted, data))
    return {f"{split}_accuracy": round(hits / len(data), 4), f"{split}_rows": len(data),
            f"{split}_predictions": predicted}


def measure(adapters: list[str], *, registry: str | None = None, bases: tuple = tuple(BASES),
            also_validation: bool = False) -> list[dict]:
    from adapterhub import load_base
    from adapterhub.registry import Registry
    from adapterhub.runtime import AdapterHub

    store = Registry(registry) if registry else Registry()
    rows = []
    for served_on in bases:
        started = time.perf_counter()
        base = load_base(**BASES[served_on], progress=False)
        base_seconds = time.perf_counter() - started
        hub = AdapterHub(base, registry=store)
        for name in adapters:
            record = store.get(name)
            domain = record.manifest.get("domain") or name
            started = time.perf_counter()
            info = hub.load(name)
            load_ms = (time.perf_counter() - started) * 1e3
            scores = {}
            for split in ("test", "validation") if also_validation else ("test",):
                scores.update(score(hub, info.name, HERE / "data" / domain / f"{split}.jsonl", split))
            trained_on = ((record.manifest.get("base") or {}).get("quantize")
                          or ((record.manifest.get("recipe") or {}).get("base") or {}).get("quantize"))
            rows.append({"adapter": record.ref, "trained_on": trained_on,
                         "served_on": served_on, "kernel": base.kernel_4bit, **scores,
                         "adapter_load_ms": round(load_ms, 1), "adapter_bytes": info.bytes,
                         "base_load_s": round(base_seconds, 2), "base_bytes": base.footprint_bytes})
            hub.unload(info.name)
            print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("predictions")}), flush=True)
        hub.close()
        del hub, base
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| adapter (trained on) | served on (4-bit kernel) | test accuracy | adapter load | base load | "
             "resident: base + adapter |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['adapter']} ({row['trained_on'] or 'fp32'}) | {row['served_on']}"
                     f"{' (' + row['kernel'] + ')' if row.get('kernel') else ''} | "
                     f"{row['test_accuracy']:.1%} of {row['test_rows']} | {row['adapter_load_ms']:.0f} ms | "
                     f"{row['base_load_s']:.1f} s | {row['base_bytes'] / 2**20:.0f} + "
                     f"{row['adapter_bytes'] / 2**20:.1f} MiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapters", nargs="+", help="registry names, e.g. finance finance-qlora medical legal")
    parser.add_argument("--registry", default=None, help="registry root (default: the default registry)")
    parser.add_argument("--bases", nargs="+", choices=list(BASES), default=list(BASES), help="serving bases to measure")
    parser.add_argument("--validation", action="store_true", help="also score the validation file (more rows)")
    parser.add_argument("--out", default="serving-bases", help="folder for serving-bases.json and .md")
    args = parser.parse_args()
    rows = measure(args.adapters, registry=args.registry, bases=tuple(args.bases), also_validation=args.validation)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving-bases.json").write_text(json.dumps(rows, indent=2))
    (out / "serving-bases.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
