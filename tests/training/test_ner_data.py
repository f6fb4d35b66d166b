"""The shipped NER data builder: the annotation-rule checker catches each kind of violation and fails the build."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "recipes" / "data"


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DATA / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(DATA))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(DATA))
        sys.modules[name] = module
    return sys.modules[name]


def _problems(markup: str) -> list[str]:
    build_ner, rules = _load("build_ner"), _load("ner_rules")
    row = build_ner.parse_markup(markup, build_ner.DOMAINS["medical-ner"])
    return rules.rule_problems(row["text"], row["entities"])


@pytest.mark.parametrize("markup, expected", [
    ("[Severe bone pain|S] at night.", "severity/side/location word 'Severe'"),
    ("She has [left-sided weakness|S].", "severity/side/location word 'left-sided'"),
    ("Reports [lower back pain|S].", "severity/side/location word 'lower'"),
    ("Reports [tingling in her feet|S].", "location phrase ('in her')"),
    ("Patient [denies chest pain|S].", "starts with 'denies'"),
    ("Took [aspirin 81 mg|R] daily.", "holds a dose"),
    ("Uses an [albuterol inhaler|R].", "form/route word 'inhaler'"),
    ("Avoid [NSAIDs|R] after surgery.", "drug class"),
    ("A gift to the [Parkinson's disease foundation|D].", "ends in 'foundation'"),
    ("Known to [the COPD|D] team.", "starts with 'the'"),
])
def test_the_checker_names_each_rule_a_span_breaks(markup, expected):
    problems = _problems(markup)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize("markup", [
    "Worsening [productive cough|S] and [pleuritic chest pain|S].",  # part of the symptom's name stays in
    "Denies [chest pain|S]; [blood in the stool|S] last week.",
    "[Sepsis|D] treated; [vitamin B12|R] and [amoxicillin-clavulanate|R] continued at the Heart Foundation clinic.",
    "Takes [aspirin|R] 81 mg and [Symbicort|R] 2 puffs; no NSAIDs.",
])
def test_spans_that_follow_the_rules_pass(markup):
    assert _problems(markup) == []


def test_the_build_fails_listing_every_offender_and_repeated_sentences():
    build_ner = _load("build_ner")
    labels = build_ner.DOMAINS["medical-ner"]
    splits = {"train": [build_ner.parse_markup("Mild [mild nausea|S].", labels),
                        build_ner.parse_markup("Takes [warfarin 5 mg|R].", labels),
                        build_ner.parse_markup("[Nausea|S] today.", labels)],
              "validation": [build_ner.parse_markup("[nausea|S] today.", labels)]}
    with pytest.raises(build_ner.RuleError) as error:
        build_ner.check(splits, domain="medical-ner")
    message = str(error.value)
    assert "3 problem(s)" in message and "'mild nausea'" in message and "'warfarin 5 mg'" in message
    assert "in both train and validation" in message


def test_the_shipped_medical_text_follows_the_rules_and_keeps_templates_a_small_share():
    build_ner = _load("build_ner")
    splits = build_ner.medical_splits(DATA / "medical-ner", build_ner.DOMAINS["medical-ner"])
    build_ner.check(splits, domain="medical-ner")  # raises on any offender
    assert len(splits["train"]) >= 600 and len(splits["validation"]) >= 80 and len(splits["heldout"]) >= 80
