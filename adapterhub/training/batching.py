"""Batches without padding waste: length-grouped or packed rows, with the supervised positions listed.

:func:`plan_batches` decides which examples train together (shuffled per
epoch, grouped by length so a batch pads little); :func:`collate` lays them out
either one right-padded row each or packed several to a row. Either way a
:class:`Batch` lists exactly the positions whose next token is supervised, so
the trainer applies the LM head there and nowhere else
(:class:`~adapterhub.training.lm_loss.SupervisedLM`).

>>> example = Example(input_ids=(5, 6, 7, 8), labels=(-100, -100, 7, 8))
>>> batch = collate([example], pad_id=0)
>>> batch.target_cols.tolist(), batch.targets.tolist()
([1, 2], [7, 8])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import TrainingError
from ..tokens import common_prefix
from .examples import IGNORE, Example


@dataclass
class Batch:
    """A micro-batch laid out for the supervised-positions-only forward.

    ``hidden[target_rows, target_cols]`` are the ``N`` hidden states whose next token is
    supervised; ``targets`` are those tokens.
    """

    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor | None  # [R, T]; None when packed (position_ids mark the boundaries)
    position_ids: torch.Tensor | None  # [R, T] when packed, else None (0..T-1 implied)
    target_rows: torch.Tensor  # [N]
    target_cols: torch.Tensor  # [N]
    targets: torch.Tensor  # [N]
    num_examples: int
    num_tokens: int  # real tokens of the examples (padding excluded, a shared prefix counted in every row)
    shared_prefix: torch.Tensor | None = None  # [P] tokens every row starts with, cut off input_ids (computed once)
    trunk_hidden: torch.Tensor | None = None  # [R, T, H] the frozen trunk's outputs for these rows (trunk.py)

    def to(self, device: Any) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.position_ids),
                     move(self.target_rows), move(self.target_cols), move(self.targets),
                     self.num_examples, self.num_tokens, move(self.shared_prefix), move(self.trunk_hidden))


def plan_batches(lengths: Sequence[int], *, batch_size: int, seed: int | None, epoch: int = 0,
                 group_by_length: bool = True, group_size: int = 16) -> list[list[int]]:
    """Split example indices into micro-batches.

    With ``seed`` the order is shuffled (deterministically per ``seed`` and ``epoch``, so a
    resumed run sees the same batches); ``group_by_length`` then sorts each window of
    ``group_size`` batches by length so a batch pads little, and shuffles the batches.
    Without ``seed`` (evaluation) examples are simply sorted by length.

    >>> plan_batches([5, 1, 4, 2], batch_size=2, seed=None)
    [[0, 2], [3, 1]]
    """
    if seed is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * group_size
    batches = []
    for start in range(0, len(order), window):
        group = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def collate(examples: Sequence[Example], *, pad_id: int, pack_length: int | None = None,
            share_prefix: bool = False) -> Batch:
    """Lay examples out as a :class:`Batch`: one right-padded row each, or packed rows.

    Args:
        examples: the micro-batch.
        pad_id: token id used for padding (never attended to, never a target).
        pack_length: pack examples into rows of at most this many tokens (first-fit,
            longest first); each example restarts its ``position_ids`` at 0, which is how
            transformers keeps packed examples from attending to each other.
        share_prefix: (padded rows only) cut the tokens that every example starts with
            (up to the first supervised position) into ``shared_prefix``, so the model runs
            them once per batch instead of once per row: the same prompt template, system
            message or chat header is computed once.
    """
    if pack_length is None:
        rows = [[index] for index in range(len(examples))]
    else:
        rows, room = [], []
        for index in sorted(range(len(examples)), key=lambda i: -len(examples[i])):
            slot = next((r for r, free in enumerate(room) if free >= len(examples[index])), None)
            if slot is None:
                rows.append([]), room.append(max(pack_length, len(examples[index])))
                slot = len(rows) - 1
            rows[slot].append(index)
            room[slot] -= len(examples[index])
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    target_rows, target_cols, targets = [], [], []
    for r, row in enumerate(rows):
        offset = 0
        for index in row:
            example = examples[index]
            length = len(example)
            input_ids[r, offset:offset + length] = torch.tensor(example.input_ids)
            attention_mask[r, offset:offset + length] = 1
            position_ids[r, offset:offset + length] = torch.arange(length)
            for position in range(1, length):
                if example.labels[position] != IGNORE:
                    target_rows.append(r)
                    target_cols.append(offset + position - 1)
                    targets.append(example.input_ids[position])
            offset += length
        position_ids[r, offset:] = torch.arange(width - offset)  # padding tail: its own "sequence"
    packed = pack_length is not None
    shared = common_prefix_length(examples) if share_prefix and not packed and len(examples) > 1 else 0
    return Batch(input_ids=input_ids[:, shared:], attention_mask=None if packed else attention_mask[:, shared:],
                 position_ids=position_ids if packed else None,
                 target_rows=torch.tensor(target_rows, dtype=torch.long),
                 target_cols=torch.tensor(target_cols, dtype=torch.long) - shared,
                 targets=torch.tensor(targets, dtype=torch.long),
                 num_examples=len(examples), num_tokens=sum(len(e) for e in examples),
                 shared_prefix=input_ids[0, :shared] if shared else None)


def common_prefix_length(examples: Sequence[Example]) -> int:
    """How many leading tokens all examples share, stopping before any hidden state that predicts a label.

    >>> common_prefix_length([Example((1, 2, 3, 4), (-100, -100, -100, 4)), Example((1, 2, 5, 6), (-100,) * 3 + (6,))])
    2
    """
    length = common_prefix([e.input_ids for e in examples])
    first_target = min(next((i for i, label in enumerate(e.labels) if label != IGNORE), len(e)) for e in examples)
    return max(0, min(length, first_target - 1))


def plan_steps(num_examples: int, training: Any, *, world: int = 1) -> tuple[int, int, int]:
    """``(micro-batches per step, steps per epoch, total steps)`` for ``num_examples`` training rows.

    With several processes each epoch is cut to a multiple of ``world`` micro-batches,
    so every process runs the same number of forward passes.

    >>> from adapterhub.training.recipe import TrainingSection
    >>> plan_steps(252, TrainingSection(batch_size=8, gradient_accumulation_steps=2, epochs=2))
    (2, 16, 32)
    """
    micro_per_epoch = math.ceil(num_examples / training.batch_size)
    if world > 1:
        micro_per_epoch -= micro_per_epoch % world
        if micro_per_epoch == 0:
            raise TrainingError(f"{num_examples} training rows are too few for {world} processes at batch_size "
                                f"{training.batch_size}; lower training.batch_size")
    micro_per_step = training.gradient_accumulation_steps * world
    steps_per_epoch = math.ceil(micro_per_epoch / micro_per_step)
    total_steps = training.max_steps or math.ceil(steps_per_epoch * training.epochs)
    return micro_per_step, steps_per_epoch, total_steps
