"""What training data becomes: tokenized :class:`Example` s with completion-only labels, grouped in
:class:`Split` s of a :class:`Dataset` (made by :mod:`.data` for decoders, :mod:`.encoder_data` for encoders).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..prompts import TaskSpec

IGNORE = -100
"""Label of a position without loss (a prompt token)."""


@dataclass(frozen=True)
class Example:
    """One tokenized example: ``labels[i]`` is ``input_ids[i]`` where supervised, else :data:`IGNORE`."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Split:
    """The rows of one split (canonical field names) and their encoded examples."""

    origin: str
    rows: list[dict[str, Any]]
    examples: list[Example]

    @property
    def num_tokens(self) -> int:
        return sum(len(example) for example in self.examples)


@dataclass
class Dataset:
    """Everything the trainer needs from ``data:``."""

    task: TaskSpec
    train: Split
    validation: Split | None
    test: Split | None

