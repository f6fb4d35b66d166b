"""Build the NER training, validation and held-out files from annotated text (offsets computed, never typed).

Annotated text holds one sentence per line with entities marked ``[span|LABEL]`` (medical text may write
the label as ``S`` SYMPTOM, ``D`` DISEASE, ``R`` DRUG). Lines starting with ``#`` are comments.

* ``medical-ner/text/``: ``train-*.txt`` are hand-written sentences of many shapes (triage notes, discharge
  summaries, referral letters, patient messages, forum questions, medication lists, negations, sentences
  whose medical words are not entities); ``templates.txt`` holds a few templates (a sentence with
  ``{SLOT}``s filled from ``@SLOT: a; b; ...`` lists, written ``COPIES`` times) kept to a small share of the
  training rows; ``validation.txt`` and ``heldout.txt`` were written apart from the training text (different
  sentences, no templates). They become ``train.jsonl``, ``validation.jsonl`` and ``heldout.jsonl``;
  ``test.jsonl`` (issue 15's independent file) is not built here.
* ``finance-ner/source.txt``: sentences and templates as above; every sentence of a template whose number
  is a multiple of 6 goes to ``validation.jsonl``, the rest to ``train.jsonl``.

Rows are ``{"text", "entities": [{"start", "end", "label"}]}``. The build is deterministic (seeded) and
fails, listing every offender, when a span breaks the annotation rules (:mod:`ner_rules`), a sentence is
in two files, or templates exceed ``MAX_TEMPLATE_SHARE`` of the medical training rows.

    python recipes/data/build_ner.py            # rebuilds medical-ner/ and finance-ner/
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ner_rules import row_problems  # noqa: E402

HERE = Path(__file__).resolve().parent
DOMAINS = {"medical-ner": ("DISEASE", "DRUG", "SYMPTOM"), "finance-ner": ("ORG", "MONEY", "PERCENT")}
ALIASES = {"S": "SYMPTOM", "D": "DISEASE", "R": "DRUG"}
COPIES = 5  # sentences written per template (finance)
MEDICAL_COPIES = 2  # the medical templates are few and written twice each
MAX_TEMPLATE_SHARE = 0.15
_MARK = re.compile(r"\[([^\[\]|]+)\|([A-Z]+)\]")
_SLOT = re.compile(r"\{([A-Z_0-9]+)\}")


class RuleError(ValueError):
    """Annotated text breaks the annotation rules; the message lists every offender."""


def parse_markup(line: str, labels: tuple[str, ...]) -> dict:
    """``"Takes [aspirin|DRUG]."`` -> ``{"text": "Takes aspirin.", "entities": [{start, end, label}]}``."""
    text, entities, position = "", [], 0
    for match in _MARK.finditer(line):
        text += line[position:match.start()]
        span, label = match.group(1), ALIASES.get(match.group(2), match.group(2))
        if label not in labels:
            raise ValueError(f"unknown label {match.group(2)!r} in {line!r}")
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
    """The sentences of an annotated file and its ``@SLOT`` lists."""
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
    """``copies`` different fillings of a template (the sentence itself when it has no slot)."""
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


def _rows(path: Path, labels: tuple[str, ...], rng: random.Random, copies: int) -> list[dict]:
    sentences, slots = read_source(path)
    missing = {name for s in sentences for name in _SLOT.findall(s)} - set(slots)
    if missing:
        raise ValueError(f"{path}: slots without a list: {sorted(missing)}")
    return [parse_markup(line, labels) for template in sentences for line in expand(template, slots, rng, copies)]


def medical_splits(folder: Path, labels: tuple[str, ...]) -> dict[str, list[dict]]:
    """``train`` (hand-written files + a few templates), ``validation`` and ``heldout`` rows of ``folder/text``."""
    text = folder / "text"
    rng = random.Random(35)
    written = [row for path in sorted(text.glob("train-*.txt")) for row in _rows(path, labels, rng, 1)]
    templated = _rows(text / "templates.txt", labels, rng, MEDICAL_COPIES) if (text / "templates.txt").exists() else []
    share = len(templated) / max(len(written) + len(templated), 1)
    if share > MAX_TEMPLATE_SHARE:
        raise RuleError(f"templates give {share:.0%} of the training rows; keep them under {MAX_TEMPLATE_SHARE:.0%}")
    return {"train": written + templated, "validation": _rows(text / "validation.txt", labels, rng, 1),
            "heldout": _rows(text / "heldout.txt", labels, rng, 1)}


def finance_splits(folder: Path, labels: tuple[str, ...]) -> dict[str, list[dict]]:
    """Issue 15's split of ``source.txt``: every sixth sentence's rows to validation."""
    sentences, slots = read_source(folder / "source.txt")
    rng = random.Random(15)
    train, validation = [], []
    for number, template in enumerate(sentences, 1):
        rows = [parse_markup(line, labels) for line in expand(template, slots, rng, COPIES)]
        (validation if number % 6 == 0 else train).extend(rows)
    return {"train": train, "validation": validation}


def check(splits: dict[str, list[dict]], *, domain: str) -> None:
    """Raise :class:`RuleError` naming every rule-breaking span and every sentence found in two splits."""
    problems = [p for name, rows in splits.items() for p in row_problems(rows, where=f"{domain}/{name}")] \
        if domain == "medical-ner" else []
    seen: dict[str, str] = {}
    for name, rows in splits.items():
        for row in rows:
            other = seen.setdefault(row["text"].lower(), name)
            if other != name:
                problems.append(f"{domain}: {row['text']!r} is in both {other} and {name}")
    if problems:
        raise RuleError(f"{len(problems)} problem(s) in the {domain} data:\n  " + "\n  ".join(problems))


def build(domain: str) -> dict[str, int]:
    """Write the domain's ``<split>.jsonl`` files; returns the rows written per split."""
    labels, folder = DOMAINS[domain], HERE / domain
    splits = medical_splits(folder, labels) if domain == "medical-ner" else finance_splits(folder, labels)
    check(splits, domain=domain)
    for name, rows in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {name: len(rows) for name, rows in splits.items()}


if __name__ == "__main__":
    for name in sys.argv[1:] or DOMAINS:
        try:
            counts = build(name)
        except RuleError as error:
            sys.exit(f"build_ner: {error}")
        print(f"{name}: " + ", ".join(f"{count} {split}" for split, count in counts.items()) + " rows")
