"""Decode steps of mixed batches (one token per row) stack the batch's LoRA pairs per layer: one matmul pair
with a row mask instead of one pair per adapter. Every row must get exactly what it gets decoding alone."""

from __future__ import annotations

import pytest
import torch

from adapterhub.runtime import AdapterHub
from adapterhub.methods.lora import kernels
from adapterhub.methods.lora import layer as lora_layer
from adapterhub.runtime.testing import make_random_adapters

ATOL = 1e-4
STACKABLE = {  # LoRA-family adapters of different ranks, targets and scalings
    "a-r4": dict(r=4),
    "b-r8": dict(r=8, lora_alpha=3),
    "c-r16-qv": dict(r=16, target_modules=["q_proj", "v_proj"]),
    "d-patterns": dict(r=2, target_modules=["gate_proj", "up_proj", "down_proj"], rank_pattern={"down_proj": 6}),
    "e-rslora": dict(r=8, use_rslora=True),
    "f-adalora": dict(method="adalora", r=8),
    "g-r4": dict(r=4, lora_alpha=5),
    "h-r2": dict(r=2),
}
OTHERS = {  # rows that cannot stack but share the batch
    "dora": dict(r=4, use_dora=True, target_modules=["q_proj", "v_proj", "up_proj"]),
    "bias": dict(r=3, target_modules=["o_proj", "k_proj"], lora_bias=True),
    "ia3": dict(method="ia3"),
    "bottleneck": dict(method="bottleneck"),
    "prefix": dict(method="prefix", num_virtual_tokens=3),
}
EIGHT = list(STACKABLE)
PROMPTS = ["The quarterly revenue of the company rose", "Patient reports chest pain", "Governed by the laws of",
           "What is the capital of France?", "Summarise", "Shares jumped 8% after earnings and the outlook"]


@pytest.fixture(scope="module")
def hub(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("decode-adapters")
    with AdapterHub(tiny_base) as hub:
        for index, (name, options) in enumerate({**STACKABLE, **OTHERS}.items()):
            hub.load(make_random_adapters(tiny_base, root, prefix=name, seed=index, **options)[0], name=name)
        yield hub


@pytest.fixture
def stacked_calls(monkeypatch):
    """The form of every stacked update a layer added (``True``: equal runs of rows, one ``bmm`` pair)."""
    calls = []
    original = kernels.StackedLora.add_to

    def spy(self, *args):
        calls.append(self.blocks)
        return original(self, *args)

    monkeypatch.setattr(kernels.StackedLora, "add_to", spy)
    return calls


def decode(stepper, prompts, entries, steps, tokens=None):
    """Logits ``[rows, 1 + steps, vocab]`` of a prefill and ``steps`` decode steps (greedy unless ``tokens``)."""
    batch, logits = stepper.prefill(prompts, entries, rows=list(range(len(prompts))))
    seen, fed = [logits], []
    for step in range(steps):
        fed.append(logits.argmax(-1).tolist() if tokens is None else tokens[step])
        logits = stepper.decode(batch, fed[-1])
        seen.append(logits)
    return torch.stack(seen, dim=1), fed


@pytest.mark.parametrize("rows", [
    ["a-r4", None, "b-r8", "c-r16-qv", "a-r4", "b-r8"],  # 3 adapters interleaved (row index tensors) and bare
    [*EIGHT, None],  # 8 adapters of mixed ranks, targets, rsLoRA, AdaLoRA, and bare
    ["h-r2", "dora", "a-r4", "ia3", "b-r8", None, "bottleneck", "c-r16-qv", "prefix", "bias", "f-adalora", "a-r4"],
    ["a-r4:0.7+b-r8:0.3", "g-r4", "c-r16-qv:1+e-rslora:-0.5", None, "g-r4"],  # weighted mixes stack too
    ["a-r4", "a-r4", "g-r4", "g-r4"],  # equal runs of one rank, in slot order: one bmm pair per layer
], ids=["3-interleaved", "8-and-bare", "beside-other-methods", "mixes", "runs"])
def test_mixed_decode_equals_each_row_decoded_alone(hub, stacked_calls, rows):
    stepper = hub.stepper()
    entries = [stepper.acquire(name) for name in rows]
    try:
        prompts = [stepper.encode(PROMPTS[i % len(PROMPTS)], entry) for i, entry in enumerate(entries)]
        mixed, fed = decode(stepper, prompts, entries, steps=4)
        assert stacked_calls and all(stacked_calls) == (rows == ["a-r4", "a-r4", "g-r4", "g-r4"])
        for i, entry in enumerate(entries):
            alone, _ = decode(stepper, [prompts[i]], [entry], steps=4, tokens=[[tokens[i]] for tokens in fed])
            assert torch.allclose(mixed[i], alone[0], atol=ATOL), (i, rows[i])
    finally:
        for entry in entries:
            stepper.release(entry)


def test_greedy_generation_of_a_mixed_batch_equals_each_row_alone(hub):
    rows = [*EIGHT, None, "dora", "prefix"]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(rows))]
    together = hub.generate(prompts, domains=rows, max_new_tokens=6)
    assert together == [hub.generate(prompt, domain=name, max_new_tokens=6) for prompt, name in zip(prompts, rows)]


def _stacked_slots(hub, name):
    return {slot for layer in hub.residency.methods["lora"].slot_layers(hub.residency.get(name).slot)
            for slots, _ in layer.weights.stacks for slot in slots}


def test_stacked_pairs_are_built_once_per_set_and_dropped_with_a_member(hub, tiny_base, tmp_path, monkeypatch):
    built = []
    original = kernels.StackedLora.of
    monkeypatch.setattr(kernels.StackedLora, "of", staticmethod(lambda members, **form: built.append(1) or original(members, **form)))
    for name, seed in (("x", 50), ("y", 51)):
        hub.load(make_random_adapters(tiny_base, tmp_path, prefix=name, r=4, seed=seed)[0], name=name)
    rows = ["a-r4", "x", "y", "a-r4"]
    hub.generate(PROMPTS[:4], domains=rows, max_new_tokens=4)
    layers = len(built)
    assert layers > 0
    hub.generate(PROMPTS[:4], domains=rows, max_new_tokens=4)
    assert len(built) == layers  # the same set again: nothing rebuilt
    old = hub.residency.get("y").slot
    assert old in _stacked_slots(hub, "a-r4")
    hub.load(make_random_adapters(tiny_base, tmp_path, prefix="y-new", r=4, seed=99)[0], name="y")  # a new version
    assert old not in _stacked_slots(hub, "a-r4")  # the stacked copy of the old one is gone
    stepper = hub.stepper()
    entries = [stepper.acquire(name) for name in rows]
    try:
        prompts = [stepper.encode(prompt, entry) for prompt, entry in zip(PROMPTS, entries)]
        mixed, fed = decode(stepper, prompts, entries, steps=3)
        for i in (1, 2):
            alone, _ = decode(stepper, [prompts[i]], [entries[i]], steps=3, tokens=[[tokens[i]] for tokens in fed])
            assert torch.allclose(mixed[i], alone[0], atol=ATOL), rows[i]
    finally:
        for entry in entries:
            stepper.release(entry)
    members = {hub.residency.get(name).slot for name in ("x", "y")}
    assert members <= _stacked_slots(hub, "a-r4")
    hub.unload("x")
    hub.unload("y")
    assert not members & _stacked_slots(hub, "a-r4")  # unloading a member frees the stacked copies holding it


def test_decode_steps_reuse_each_layers_plan(hub, monkeypatch):
    plans = []
    original = lora_layer.LoraLayer._plan
    monkeypatch.setattr(lora_layer.LoraLayer, "_plan", lambda self, rows: plans.append(1) or original(self, rows))
    stepper = hub.stepper()
    entries = [stepper.acquire(name) for name in ["a-r4", "b-r8", None, "e-rslora"]]
    try:
        batch, logits = stepper.prefill([stepper.encode(p, e) for p, e in zip(PROMPTS, entries)], entries,
                                        rows=list(range(4)))
        stepper.decode(batch, logits.argmax(-1).tolist())
        first = len(plans)
        assert first > 0
        for _ in range(3):
            logits = stepper.decode(batch, logits.argmax(-1).tolist())
        assert len(plans) == first  # later steps: no per-layer set-up
    finally:
        for entry in entries:
            stepper.release(entry)
