"""Batch plans (deterministic, length-grouped), padded and packed layouts, and packing correctness."""

from __future__ import annotations

import pytest
import torch

from adapterhub.training.batching import collate, common_prefix_length, plan_batches
from adapterhub.training.examples import IGNORE, Example


LENGTHS = [5, 17, 3, 9, 12, 4, 8, 15, 6, 11, 2, 14]


def test_batch_plan_is_a_deterministic_permutation():
    plan = plan_batches(LENGTHS, batch_size=3, seed=7, epoch=1, group_size=2)
    assert sorted(i for batch in plan for i in batch) == list(range(len(LENGTHS)))
    assert plan == plan_batches(LENGTHS, batch_size=3, seed=7, epoch=1, group_size=2)
    assert plan != plan_batches(LENGTHS, batch_size=3, seed=7, epoch=2, group_size=2)


def test_length_grouping_pads_less_than_random_batches():
    lengths = [(i * 37) % 50 + 5 for i in range(96)]

    def padding(plan):
        return sum(max(lengths[i] for i in batch) * len(batch) - sum(lengths[i] for i in batch) for batch in plan)

    grouped = plan_batches(lengths, batch_size=8, seed=0)
    shuffled = plan_batches(lengths, batch_size=8, seed=0, group_by_length=False)
    assert padding(grouped) < padding(shuffled) / 3


def _examples():
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length, prompt in [(7, 5), (12, 9), (5, 4), (9, 5), (3, 2)]:
        ids = torch.randint(3, 300, (length,), generator=generator).tolist()
        examples.append(Example(tuple(ids), tuple([IGNORE] * prompt + ids[prompt:])))
    return examples


def test_padded_batch_targets():
    examples = _examples()
    batch = collate(examples, pad_id=0)
    assert batch.input_ids.shape == (5, 12) and batch.position_ids is None
    assert batch.attention_mask.sum(1).tolist() == [len(e) for e in examples]
    for row, col, target in zip(batch.target_rows, batch.target_cols, batch.targets):
        assert examples[row].labels[col + 1] == target  # the hidden state at col predicts token col+1
    assert batch.targets.numel() == sum(sum(l != IGNORE for l in e.labels) for e in examples)


def test_packing_fills_rows_and_restarts_positions():
    examples = _examples()
    batch = collate(examples, pad_id=0, pack_length=16)
    assert batch.attention_mask is None and batch.input_ids.shape[1] <= 16
    assert batch.input_ids.shape[0] < len(examples)
    assert (batch.input_ids != 0).sum() == sum(len(e) for e in examples)
    starts = (batch.position_ids == 0).sum().item()
    assert starts >= len(examples)  # every example (and any padding tail) starts again at 0
    padded = collate(examples, pad_id=0)
    assert sorted(batch.targets.tolist()) == sorted(padded.targets.tolist())


@pytest.mark.parametrize("pack_length", [16, 64])
def test_packed_loss_equals_padded_loss(tiny_base, pack_length):
    """Packed examples must not see each other: the loss is the same as with one padded row each."""
    from peft import LoraConfig, get_peft_model

    from adapterhub.training.lm_loss import SupervisedLM, batch_inputs

    torch.manual_seed(0)
    model = SupervisedLM(get_peft_model(tiny_base.model, LoraConfig(r=4, target_modules="all-linear",
                                                                    init_lora_weights=False)))
    try:
        model.eval()
        examples = _examples()
        with torch.no_grad():
            padded = model(**batch_inputs(collate(examples, pad_id=0)))
            packed = model(**batch_inputs(collate(examples, pad_id=0, pack_length=pack_length)))
        assert packed.item() == pytest.approx(padded.item(), rel=1e-5)
    finally:
        model.model.unload()


@pytest.mark.parametrize("rows, expected", [
    ([((1, 2, 3, 4, 5), 4), ((1, 2, 3, 9, 9, 9), 5)], 3),  # the rows part after three shared tokens
    ([((1, 2, 3, 4, 5), 2), ((1, 2, 3, 4, 6), 2)], 1),  # capped: position 1 already predicts a label
    ([((7, 2, 3), 2), ((1, 2, 3), 2)], 0),
])
def test_shared_prefix_stops_before_the_first_label(rows, expected):
    examples = [Example(ids, tuple([IGNORE] * first + list(ids[first:]))) for ids, first in rows]
    assert common_prefix_length(examples) == expected
    batch = collate(examples, pad_id=0, share_prefix=True)
    plain = collate(examples, pad_id=0)
    assert (batch.shared_prefix.numel() if batch.shared_prefix is not None else 0) == expected
    assert batch.input_ids.shape[1] == plain.input_ids.shape[1] - expected
    assert batch.target_cols.tolist() == [col - expected for col in plain.target_cols.tolist()]
    assert batch.targets.tolist() == plain.targets.tolist() and batch.num_tokens == plain.num_tokens
