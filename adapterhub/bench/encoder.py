"""The ``encoder`` area: one resident encoder serving classification and NER adapters, and encoder vs decoder.

1. Forward of a batch of 8 texts through the encoder: bare (no adapter), one adapter on every row,
   and 8 different adapters (4 sequence-classification, 4 token-classification, each row with its own
   LoRA deltas and head), timed round-robin; ratios to the bare forward.
2. Classification throughput (texts/s) and memory (base + adapter bytes) on the finance sentiment
   texts: the encoder (``hub.classify``, a head) vs the decoder (``hub.predict``, label scoring).

Adapters are random (LoRA r = ``config.rank`` on every linear layer of the body; the speed does not
depend on the weights) and written once under the bench work folder.

>>> result = measure_encoder(BenchConfig.preset(quick=True), skipped=[])  # doctest: +SKIP
>>> result["forward"]["ratio_to_bare"]["mixed_8"] <= 1.15  # doctest: +SKIP
True
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

from .config import BenchConfig, default_base
from .harness import Stats, Timer, ratio, time_interleaved

FINANCE_TASK = {"type": "classification", "labels": ["positive", "negative", "neutral"], "chat": False,
                "prompt_template": "Classify this financial news as positive, negative or neutral for the company's "
                                   "investors.\nNews: {text}\n"}
_TEXTS = Path(__file__).resolve().parents[2] / "recipes" / "data" / "finance" / "test.jsonl"
_FALLBACK = ["Revenue rose 8% and the company raised its outlook for the year.",
             "The bank cut 2,000 jobs after a quarterly loss of $1.2 billion.",
             "The annual general meeting is scheduled for 23 April in Birmingham."]


def finance_texts(count: int) -> list[str]:
    """``count`` finance news sentences (the shipped held-out set, repeated as needed)."""
    texts = ([json.loads(line)["text"] for line in _TEXTS.read_text().splitlines() if line.strip()]
             if _TEXTS.is_file() else _FALLBACK)
    return [texts[i % len(texts)] for i in range(count)]


def measure_encoder(config: BenchConfig, *, skipped: list[dict[str, str]], progress: Any = None) -> dict[str, Any]:
    """Run the encoder area (see the module docstring); times in ms, throughputs in texts/s, memory in bytes."""
    from ..base.loading import load_base
    from ..runtime import AdapterHub
    from ..runtime.testing import make_random_encoder_adapters

    work = config.work_dir / "encoder"
    encoder_name = _encoder_base(config, work)
    base = load_base(encoder_name, dtype=config.dtype, device=config.device, progress=False)
    timer = Timer(base.spec.device)
    linears = sorted({name.rsplit(".", 1)[-1] for name in base.linear_shapes})
    paths = []
    for kind, labels in (("SEQ_CLS", ("positive", "negative", "neutral")), ("TOKEN_CLS", ("ORG", "MONEY", "PERCENT"))):
        folder = work / f"adapters-r{config.rank}-{kind.lower()}"
        made = sorted(folder.glob("*/adapter_config.json"))
        paths += [p.parent for p in made[:4]] if len(made) >= 4 else make_random_encoder_adapters(
            base, folder, count=4, task_type=kind, labels=labels, r=config.rank, target_modules=linears)
    texts = [" ".join(pair) for pair in zip(finance_texts(8), finance_texts(9)[1:])]  # two sentences a row
    result: dict[str, Any] = {"base": base.spec.name, "rank": config.rank, "adapters": len(paths)}
    with AdapterHub(base) as hub:
        names = [hub.load(path, name=f"enc-{i}").name for i, path in enumerate(paths)]
        tokens = int(hub.tokenizer(texts, padding=True, return_tensors="pt")["input_ids"].shape[1])
        cases = {"bare": lambda: hub.head_logits(texts, domains=[None] * len(texts)),
                 "single": lambda: hub.head_logits(texts, domain=names[0]),
                 "mixed_8": lambda: hub.head_logits(texts, domains=[names[i % len(names)] for i in range(len(texts))])}
        stats = time_interleaved(cases, warmup=config.warmup, repeats=3 * config.repeats, timer=timer)  # cheap: more rounds
        result["forward"] = {"batch": len(texts), "tokens": tokens,
                             "ms": {case: s.scaled(1e3).to_dict() for case, s in stats.items()},
                             "ratio_to_bare": {case: ratio(stats[case], stats["bare"]) for case in ("single", "mixed_8")}}
        result["encoder"] = _classify_side(hub, names[0], timer, config, hub.classify, batch_size=32,
                                           count=64 if not config.quick else 16)
        result["encoder"]["base_bytes"] = base.footprint_bytes
    del base, hub
    gc.collect()
    result["decoder"] = _decoder_side(config, work, timer, skipped)
    enc, dec = result["encoder"], result["decoder"]
    if dec:
        result["encoder_over_decoder"] = {"texts_per_second": enc["texts_per_second"] / dec["texts_per_second"],
                                          "memory": enc["total_bytes"] / dec["total_bytes"]}
    return result


def _classify_side(hub: Any, name: str, timer: Timer, config: BenchConfig, call: Any, *, batch_size: int,
                   count: int) -> dict[str, Any]:
    texts = finance_texts(count)
    for _ in range(config.warmup):
        call(texts[:batch_size], domain=name)
    seconds = Stats.of([timer.call(lambda: call(texts, domain=name, batch_size=batch_size))
                        for _ in range(min(config.repeats, 3))])
    adapter_bytes = next(info.bytes for info in hub.resident() if info.name == name)
    return {"texts": count, "batch_size": batch_size, "seconds": seconds.to_dict(),
            "texts_per_second": count / seconds.median, "adapter_bytes": adapter_bytes,
            "total_bytes": hub.base.footprint_bytes + adapter_bytes}


def _decoder_side(config: BenchConfig, work: Path, timer: Timer, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The decoder finance adapter (label scoring, LoRA r = ``config.rank`` on all linears) on the same texts."""
    from ..base.loading import load_base
    from ..errors import AdapterHubError
    from ..runtime import AdapterHub
    from ..runtime.testing import make_random_adapters, write_manifest

    try:
        base = load_base(config.base or default_base(config, config.work_dir), dtype=config.dtype,
                         device=config.device, quantize=config.quantize, progress=False)
    except (AdapterHubError, RuntimeError) as error:
        skipped.append({"area": "encoder", "case": "decoder comparison", "reason": str(error)})
        return {}
    path = work / f"decoder-finance-r{config.rank}" / "finance-0"
    if not (path / "adapter_config.json").is_file():
        [path] = make_random_adapters(base, path.parent, r=config.rank, prefix="finance")
    write_manifest(path, name="finance", task=FINANCE_TASK, base=base)
    with AdapterHub(base) as hub:
        hub.load(path, name="finance")
        started = time.perf_counter()
        side = _classify_side(hub, "finance", timer, config, hub.predict, batch_size=32,
                              count=16 if not config.quick else 8)
        side["base_bytes"] = base.footprint_bytes
        side["wall_seconds"] = time.perf_counter() - started
    return side


def _encoder_base(config: BenchConfig, work: Path) -> str:
    from ..base import embedded

    if not config.quick:
        return embedded.ENCODER_ALIAS
    from ..base.tiny import make_tiny_bert

    path = work / "tiny-bert"
    if not (path / "config.json").is_file():
        make_tiny_bert(path)
    return str(path)
