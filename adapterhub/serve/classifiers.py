"""Classifier adapters asked for free text answer their label.

A decoder classifier learned to write one of its labels after its own prompt template. The raw text of
``/v1/completions`` or LoRAX ``/generate`` skipped that template, and the adapter mostly ended the text at once
(``""`` with ``finish_reason: "stop"``). Those routes now render such a request as ``hub.generate(text)`` does
for the adapter (its template, with its chat setting), so the completion is the label it would write;
``/v1/classify`` stays the route for the label *scores* (``hub.predict``), and chat always applied the template.
A weighted mix is free text and keeps the raw prompt.

>>> answers_with_label(None)
False
"""

from __future__ import annotations

from typing import Any


def answers_with_label(entry: Any) -> bool:
    """Whether a free-text request to ``entry`` (a pinned adapter, ``None`` for the base) gets its template."""
    from ..runtime.residency import ResidentAdapter

    return isinstance(entry, ResidentAdapter) and entry.task.is_classification
