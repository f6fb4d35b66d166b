"""Build the NER training and validation files from their annotated sources (offsets computed, never typed).

Each ``recipes/data/<domain>-ner/source.txt`` holds one sentence per line with entities marked
``[span|LABEL]``, and slot lists ``@SLOT: first; second; ...`` whose names appear in sentences as
``{SLOT}`` (a slot value may itself carry markup, e.g. ``[metformin|DRUG]``). A sentence with slots
is a template: it is written out several times with different values. Lines starting with ``#``
are comments. Every sentence of a template whose number is a multiple of 6 goes to
``validation.jsonl`` (so validation has sentences the training file never saw); the rest to
``train.jsonl``. Rows are ``{"text", "entities": [{"start", "end", "label"}]}``.

    python recipes/data/build_ner.py            # rebuilds medical-ner/ and finance-ner/

The build is deterministic (seeded) and checks every span: non-empty, no outer whitespace or
punctuation, labels from the recipe's list.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOMAINS = {"medical-ner": ("DISEASE", "DRUG", "SYMPTOM"), "finance-ner": ("ORG", "MONEY", "PERCENT")}
COPIES = 5  # sentences written per template
_MARK = re.compile(r"\[([^\[\]|]+)\|([A-Z]+)\]")
_SLOT = re.compile(r"\{([A-Z_0-9]+)\}")


def parse_markup(line: str, labels: tuple[str, ...]) -> dict:
    """``"Takes [aspirin|DRUG]."`` -> ``{"text": "Takes aspirin.", "entities": [{start, end, label}]}``."""
    text, entities, position = "", [], 0
    for match in _MARK.finditer(line):
        text += line[position:match.start()]
        span, label = match.group(1), match.group(2)
        if label not in labels:
            raise ValueError(f"unknown label {label!r} in {line!r}")
        if span != span.strip() or span.strip(".,;:!?\"'()") != span:
            raise ValueError(f"span {span!r} has outer whitespace or punctuation in {line!r}")
        entities.append({"start": len(text), "end": len(text) + len(span), "label": label})
        text += span
        position = match.end()
    text += line[position:]
    if "[" in text or "]" in text or "{" in text:
        raise ValueError(f"unbalanced markup in {line!r}")
    return {"text": text, "entities": entities}


def read_source(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    sentences, slots = [], {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            name, _, values = line[1:].partition(":")
            slots[name.strip()] = [v.strip() for v in values.split(";") if v.strip()]
        else:
            sentences.append(line)
    return sentences, slots


def expand(template: str, slots: dict[str, list[str]], rng: random.Random, copies: int) -> list[str]:
    names = _SLOT.findall(template)
    if not names:
        return [template]
    out, seen = [], set()
    for _ in range(copies * 4):
        filled = _SLOT.sub(lambda m: rng.choice(slots[m.group(1)]), template)
        if filled not in seen:
            seen.add(filled)
            out.append(filled)
        if len(out) == copies:
            break
    return out


def build(domain: str) -> tuple[int, int]:
    labels = DOMAINS[domain]
    folder = HERE / domain
    sentences, slots = read_source(folder / "source.txt")
    missing = {name for s in sentences for name in _SLOT.findall(s)} - set(slots)
    if missing:
        raise ValueError(f"{domain}: slots without a list: {sorted(missing)}")
    rng = random.Random(15)
    train, validation = [], []
    for number, template in enumerate(sentences, 1):
        rows = [parse_markup(line, labels) for line in expand(template, slots, rng, COPIES)]
        (validation if number % 6 == 0 else train).extend(rows)
    for name, rows in (("train", train), ("validation", validation)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(train), len(validation)


if __name__ == "__main__":
    for domain in sys.argv[1:] or DOMAINS:
        counts = build(domain)
        print(f"{domain}: {counts[0]} train, {counts[1]} validation rows")
