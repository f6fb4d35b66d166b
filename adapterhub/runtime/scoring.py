"""Which task a row of ``predict`` is scored for (the scoring itself is :mod:`adapterhub.scoring`)."""

from __future__ import annotations

from ..errors import TaskMismatchError
from ..prompts import TaskSpec
from .slots import ResidentAdapter


def classification_task(entry: ResidentAdapter | None, name: str | None) -> TaskSpec:
    """The task of a row's adapter, which must be a classification adapter (``predict`` needs labels)."""
    if entry is None:
        raise TaskMismatchError("predict needs a classification adapter for every text, but some texts use the bare "
                                "base (domain None); pass domain= or domains= naming classification adapters")
    if entry.task.is_encoder_task:
        raise TaskMismatchError(f"{name!r} is an encoder {entry.task.type} adapter; use hub.classify or hub.tag "
                                "(adapterhub classify / adapterhub tag) for it")
    if not entry.task.is_classification:
        raise TaskMismatchError(f"predict needs a classification adapter, but {name!r} is a {entry.task.type} "
                                "adapter (no labels in its manifest); use hub.generate for it")
    return entry.task
