"""Which task a row of ``predict`` is scored for (the scoring itself is :mod:`adapterhub.scoring`)."""

from __future__ import annotations

from ..errors import TaskMismatchError
from ..prompts import TaskSpec
from .slots import ResidentAdapter


def classification_task(entry: ResidentAdapter | None, name: str | None) -> TaskSpec:
    """The task of a row's adapter, which must be a classification adapter (``predict`` needs labels)."""
    if entry is None:
        raise TaskMismatchError("predict needs a classification adapter for every text, but some texts use the bare "
                                "base (domain None)", fix="pass domain= or domains= naming classification adapters",
                                cli_fix="pass --domain NAME of a classification adapter (`adapterhub registry list` "
                                        "shows each adapter's task), or answer with `adapterhub generate`")
    if entry.task.is_encoder_task:
        raise TaskMismatchError(f"{name!r} is an encoder {entry.task.type} adapter", fix="use hub.classify or hub.tag",
                                cli_fix=f"use `adapterhub classify --domain {name}` or `adapterhub tag --domain {name}`")
    if not entry.task.is_classification:
        raise TaskMismatchError(f"predict needs a classification adapter, but {name!r} is a {entry.task.type} "
                                "adapter (no labels in its manifest)", fix="use hub.generate for it",
                                cli_fix=f"answer with it through `adapterhub generate --domain {name}`")
    return entry.task
