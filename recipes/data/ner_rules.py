"""The annotation rules of the NER data (issue 15), as a checker that names every span breaking them.

The rules (the held-out sets follow them, and so must every training sentence):

* spans are exact: no outer whitespace or punctuation, no leading "the"/"a"/possessive;
* DISEASE: named diseases and conditions (abbreviations too); a disease inside a longer name is labelled
  alone ("Parkinson's disease foundation" -> ``Parkinson's disease``);
* DRUG: medication names, generic or brand, combinations and vitamins; no dosages, forms or routes;
  drug classes ("antibiotics", "NSAIDs") are not labelled;
* SYMPTOM: what a patient experiences or shows; severity, side and location words stay out ("severe bone
  pain" -> ``bone pain``, "tingling in her feet" -> ``tingling``) but words of the symptom's name stay in
  (``productive cough``, ``pleuritic chest pain``); negated symptoms are labelled, the negation is not.

>>> rule_problems("She has severe bone pain.", [{"start": 8, "end": 24, "label": "SYMPTOM"}])
["SYMPTOM 'severe bone pain' starts with the severity/side/location word 'severe'"]
>>> rule_problems("Takes aspirin 81 mg.", [{"start": 6, "end": 19, "label": "DRUG"}])
["DRUG 'aspirin 81 mg' holds a dose"]
"""

from __future__ import annotations

import re
from typing import Any, Sequence

LEADING_WORDS = {"the", "a", "an", "my", "his", "her", "their", "our", "your", "no", "denies", "without", "any"}
"""No span starts with an article, a possessive or a negation."""

SYMPTOM_MODIFIERS = {
    # severity, course and quality
    "severe", "mild", "moderate", "intermittent", "worsening", "persistent", "sharp", "dull", "occasional", "new",
    "constant", "sudden", "slight", "terrible", "awful", "bad", "crushing", "throbbing", "chronic", "acute",
    "recurrent", "progressive", "ongoing", "increasing", "episodic", "significant", "marked", "some", "really",
    "very", "extreme", "horrible", "minor", "mild-moderate", "stabbing", "nagging", "transient",
    # side and location
    "left", "right", "bilateral", "left-sided", "right-sided", "both", "upper", "lower", "generalised",
    "generalized", "localised", "localized",
}
"""Words that stay out of a SYMPTOM when they lead it."""

NAMES_WITH_A_PLACE = {"blood in the stool", "blood in the urine", "blood in stool", "blood in urine"}
"""Symptom names that hold a place phrase of their own."""
_LOCATION_TAIL = re.compile(r"\b(in|on|over|at|behind|around|across|down|into)\s+(the|her|his|my|their|both|a|an|"
                            r"left|right)\b", re.IGNORECASE)
_DOSE = re.compile(r"\d[\d.,/]*\s*(mg|mcg|µg|g|ml|mL|units?|iu|IU|%|mmol|puffs?|tablets?|drops?)\b", re.IGNORECASE)
_FORM_WORDS = {"tablet", "tablets", "pill", "pills", "capsule", "capsules", "inhaler", "cream", "ointment", "drops",
               "injection", "injections", "patch", "patches", "syrup", "spray", "gel", "jab", "shot", "iv", "po",
               "daily", "bd", "tds", "od", "prn", "nocte"}
DRUG_CLASSES = {
    "antibiotic", "antibiotics", "nsaid", "nsaids", "statin", "statins", "beta blocker", "beta blockers",
    "beta-blocker", "beta-blockers", "ace inhibitor", "ace inhibitors", "opioid", "opioids", "antihistamine",
    "antihistamines", "steroid", "steroids", "antidepressant", "antidepressants", "blood thinner", "blood thinners",
    "ppi", "ppis", "ssri", "ssris", "diuretic", "diuretics", "anticoagulant", "anticoagulants", "painkiller",
    "painkillers", "antivirals", "antiviral", "antipsychotic", "antipsychotics", "antacids", "antacid",
    "laxative", "laxatives", "sglt2 inhibitors", "sglt2 inhibitor", "antiplatelets", "antiplatelet",
    "inhaled steroids", "corticosteroids", "corticosteroid", "benzodiazepines", "benzodiazepine", "insulin pens",
    "vaccine", "vaccines", "biologics", "biologic", "chemotherapy", "chemo", "the pill", "hrt", "arbs", "arb",
    "triptans", "triptan", "anti-inflammatories", "sleeping pills", "blood pressure tablets", "water tablets",
}
"""Drug classes and generic medicine words: never DRUG."""

_NAME_TAILS = {"foundation", "society", "association", "trust", "charity", "clinic", "unit", "ward", "centre",
               "center", "institute", "awareness", "week", "month", "research", "uk"}
"""A DISEASE or DRUG inside a longer name is labelled alone: these words never end one."""


def rule_problems(text: str, entities: Sequence[dict[str, Any]]) -> list[str]:
    """Every way the spans of one row break the annotation rules (empty when the row is clean).

    Args:
        text: the sentence.
        entities: its ``{"start", "end", "label"}`` spans.

    Returns:
        One message per problem, naming the span and the rule.
    """
    problems = []
    for entity in entities:
        span, label = text[entity["start"]:entity["end"]], entity["label"]
        words = span.split()
        first, last = words[0].lower(), words[-1].lower()
        named = f"{label} {span!r}"
        if span != span.strip(" .,;:!?\"'()[]"):
            problems.append(f"{named} has outer whitespace or punctuation")
        if first in LEADING_WORDS:
            problems.append(f"{named} starts with {words[0]!r} (articles, possessives and negations stay out)")
        if last in _NAME_TAILS:
            problems.append(f"{named} ends in {words[-1]!r}: label the {label.lower()} inside the name alone")
        if label == "SYMPTOM":
            if first in SYMPTOM_MODIFIERS and len(words) > 1:
                problems.append(f"{named} starts with the severity/side/location word {words[0]!r}")
            if _LOCATION_TAIL.search(span) and span.lower() not in NAMES_WITH_A_PLACE:
                problems.append(f"{named} carries a location phrase ({_LOCATION_TAIL.search(span).group(0)!r})")
        if label == "DRUG":
            if _DOSE.search(span):
                problems.append(f"{named} holds a dose")
            elif last in _FORM_WORDS and len(words) > 1:
                problems.append(f"{named} ends in the form/route word {words[-1]!r}")
            if span.lower() in DRUG_CLASSES:
                problems.append(f"{named} is a drug class, not a drug")
    return problems


def row_problems(rows: Sequence[dict[str, Any]], *, where: str) -> list[str]:
    """:func:`rule_problems` of many rows, each message prefixed with ``where`` and the row's text."""
    found = []
    for number, row in enumerate(rows, 1):
        for problem in rule_problems(row["text"], row["entities"]):
            found.append(f"{where} row {number}: {problem} in {row['text']!r}")
    return found
