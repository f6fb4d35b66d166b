"""The runtime computes exactly what plain PEFT computes with each adapter alone.

Every adapter in ``ADAPTERS`` is compared against ``PeftModel.from_pretrained``
on a fresh copy of the tiny base: logits after switches, every row of mixed and
left-padded batches, greedy and beam generation, and under threads.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from adapterhub.runtime import AdapterHub
from adapterhub.runtime.testing import load_peft, make_random_adapters

ATOL = 1e-4
ADAPTERS = {  # name -> make_random_adapters options
    "lora-r4-all": dict(r=4),
    "lora-r4-all-b": dict(r=4, lora_alpha=16),
    "lora-r16-qv": dict(r=16, target_modules=["q_proj", "v_proj"]),
    "lora-mlp-patterns": dict(r=2, lora_alpha=3, target_modules=["gate_proj", "up_proj", "down_proj"],
                              rank_pattern={"down_proj": 6}, alpha_pattern={"up_proj": 11}),
    "lora-bias": dict(r=3, target_modules=["o_proj", "k_proj"], lora_bias=True),
    "rslora-r8": dict(r=8, lora_alpha=5, use_rslora=True, target_modules=["k_proj", "o_proj", "down_proj"]),
    "dora-r4": dict(r=4, use_dora=True, target_modules=["q_proj", "v_proj", "up_proj"]),
    "lora-last-layer": dict(r=4, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[1]),
    "prefix-6": dict(method="prefix", num_virtual_tokens=6),
    "prefix-3": dict(method="prefix", num_virtual_tokens=3),
}
NAMES = list(ADAPTERS)
PROMPTS = ["The quarterly revenue of the company rose", "Patient reports chest pain",
           "This Agreement shall be governed by", "What is the capital of France?"]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_random_adapters(tiny_base, root, prefix=name, seed=index, **options)[0]
            for index, (name, options) in enumerate(ADAPTERS.items())}


@pytest.fixture(scope="module")
def peft_models(tiny_base, adapter_dirs):
    return {name: load_peft(tiny_base, path) for name, path in adapter_dirs.items()}


@pytest.fixture(scope="module")
def hub(tiny_base, adapter_dirs):
    with AdapterHub(tiny_base) as hub:
        for name, path in adapter_dirs.items():
            hub.load(path, name=name)
        yield hub


def reference_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids.unsqueeze(0)).logits[0]


def reference_greedy(model, ids, steps, eos):
    """Greedy decoding by full recomputation through PEFT's forward (the semantics PEFT intends)."""
    ids = ids.unsqueeze(0)
    start = ids.shape[1]
    for _ in range(steps):
        with torch.no_grad():
            token = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        if token.item() == eos:
            break
    return ids[0, start:].tolist()


def chat_ids(tokenizer, prompt):
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])


def model_for(name, peft_models, tiny_base):
    return tiny_base.model if name is None else peft_models[name]


@pytest.fixture
def captured_tokens(monkeypatch, tiny_base):
    """The new token ids of each hub.generate call, in the caller's row order, as they go to decoding."""
    calls = []
    tokenizer = tiny_base.tokenizer
    original = tokenizer.batch_decode

    def spy(tokens, *args, **kwargs):
        calls.append(tokens)
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "batch_decode", spy)
    return calls


def strip_tail(tokens, eos, pad):
    tokens = list(tokens)
    if eos in tokens:
        tokens = tokens[: tokens.index(eos) + 1]
    while tokens and tokens[-1] == pad and pad != eos:
        tokens.pop()
    return tokens


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_peft_after_switches(hub, peft_models, name):
    ids = torch.randint(0, 300, (11,), generator=torch.Generator().manual_seed(7))
    for other in [*reversed(NAMES), None, name]:  # any sequence of switches ends on `name`
        hub.switch(other)
    assert hub.domain == name
    got = hub.logits(ids)[0]
    assert torch.allclose(got, reference_logits(peft_models[name], ids), atol=ATOL)


def test_adapters_really_change_the_output(hub, tiny_base):
    ids = torch.arange(5, 17)
    bare = hub.logits(ids, domain=None)[0]
    with torch.no_grad():
        assert torch.allclose(bare, tiny_base.model(input_ids=ids.unsqueeze(0)).logits[0], atol=1e-6)
    for name in NAMES:
        assert (hub.logits(ids, domain=name)[0] - bare).abs().max() > 1e-2, name


@pytest.mark.parametrize("order", ["grouped", "interleaved"])
def test_every_row_of_a_mixed_left_padded_batch_matches_peft(hub, peft_models, tiny_base, order):
    rows = [*NAMES, None, *NAMES[:3]] if order == "grouped" else [None, *NAMES, NAMES[0], None, NAMES[5]]
    generator = torch.Generator().manual_seed(3)
    lengths = [6 + (i * 5) % 9 for i in range(len(rows))]
    width = max(lengths)
    input_ids = torch.randint(0, 300, (len(rows), width), generator=generator)
    mask = torch.zeros_like(input_ids)
    for i, length in enumerate(lengths):
        mask[i, width - length:] = 1
        input_ids[i, : width - length] = tiny_base.tokenizer.pad_token_id
    got = hub.logits(input_ids, mask, domains=rows)
    for i, (name, length) in enumerate(zip(rows, lengths)):
        expected = reference_logits(model_for(name, peft_models, tiny_base), input_ids[i, width - length:])
        assert torch.allclose(got[i, width - length:], expected, atol=ATOL), (i, name)


@pytest.mark.parametrize("rows", [
    ["lora-r4-all", "lora-r4-all-b", "lora-r4-all", "lora-r4-all-b"],  # every layer: one gathered bmm pair
    ["lora-r4-all-b", "lora-r16-qv", "rslora-r8", "lora-r4-all"],  # mixed ranks and targets: per-adapter loop
])
def test_long_mixed_rows_match_peft_on_the_gathered_path(hub, peft_models, monkeypatch, rows):
    from adapterhub.methods.lora.layer import LoraLayer

    gathered = []
    original = LoraLayer._add_row_gathered
    monkeypatch.setattr(LoraLayer, "_add_row_gathered",
                        lambda self, *args: gathered.append(original(self, *args)) or gathered[-1])
    input_ids = torch.randint(0, 300, (len(rows), 24), generator=torch.Generator().manual_seed(5))
    got = hub.logits(input_ids, domains=rows)
    for i, name in enumerate(rows):
        assert torch.allclose(got[i], reference_logits(peft_models[name], input_ids[i]), atol=ATOL), (i, name)
    assert any(gathered) == ("lora-r16-qv" not in rows)


def test_greedy_mixed_generation_is_token_identical(hub, peft_models, tiny_base, captured_tokens):
    tokenizer = tiny_base.tokenizer
    rows = [*NAMES, None]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(rows))]
    hub.generate(prompts, domains=rows, max_new_tokens=8)
    for i, (name, prompt) in enumerate(zip(rows, prompts)):
        expected = reference_greedy(model_for(name, peft_models, tiny_base), chat_ids(tokenizer, prompt), 8,
                                    tokenizer.eos_token_id)
        assert strip_tail(captured_tokens[0][i].tolist(), tokenizer.eos_token_id, tokenizer.pad_token_id) == expected


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("prefix")])
def test_lora_generation_equals_peft_generate(hub, peft_models, tiny_base, captured_tokens, name):
    tokenizer = tiny_base.tokenizer
    ids = chat_ids(tokenizer, PROMPTS[1]).unsqueeze(0)
    with torch.no_grad():
        expected = peft_models[name].generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                              do_sample=False, num_beams=3, pad_token_id=tokenizer.pad_token_id)
    hub.generate(PROMPTS[1], domain=name, max_new_tokens=6, num_beams=3)
    assert captured_tokens[0][0].tolist() == expected[0, ids.shape[1]:].tolist()


def test_beams_follow_each_row_in_a_mixed_batch(hub, captured_tokens):
    rows = ["prefix-6", "lora-r4-all", None, "dora-r4", "prefix-3"]
    prompts = PROMPTS + PROMPTS[:1]
    hub.generate(prompts, domains=rows, max_new_tokens=6, num_beams=3, num_return_sequences=2)
    mixed = captured_tokens.pop()
    assert mixed.shape[0] == 2 * len(rows)
    for i, (name, prompt) in enumerate(zip(rows, prompts)):
        hub.generate(prompt, domain=name, max_new_tokens=6, num_beams=3, num_return_sequences=2)
        alone = captured_tokens.pop()
        width = min(alone.shape[1], mixed.shape[1])
        assert mixed[2 * i: 2 * i + 2, :width].tolist() == alone[:, :width].tolist(), name


def test_sampling_is_reproducible_per_seed(hub):
    torch.manual_seed(0)
    first = hub.generate(PROMPTS[:2], domains=["lora-r4-all", "prefix-3"], do_sample=True, max_new_tokens=5)
    torch.manual_seed(0)
    second = hub.generate(PROMPTS[:2], domains=["lora-r4-all", "prefix-3"], do_sample=True, max_new_tokens=5)
    assert first == second and len(first) == 2


def test_eight_threads_alternating_domains_match_single_thread(hub):
    domains = [*NAMES, None]
    inputs = torch.randint(0, 300, (len(domains), 9), generator=torch.Generator().manual_seed(11))
    reference = {d: hub.logits(inputs[i], domain=d)[0] for i, d in enumerate(domains)}
    failures = []

    def worker(offset):
        for call in range(200):
            index = (offset + call) % len(domains)
            if call % 2:
                got = hub.logits(inputs[index], domain=domains[index])[0]
            else:
                with hub.using(domains[index]):
                    got = hub.logits(inputs[index])[0]
            if not torch.allclose(got, reference[domains[index]], atol=1e-6):
                failures.append((offset, call, domains[index]))

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_using_is_isolated_between_asyncio_tasks(hub):
    ids = torch.arange(3, 12)
    expected = {name: hub.logits(ids, domain=name)[0] for name in NAMES[:4]}

    async def task(name):
        with hub.using(name):
            await asyncio.sleep(0.01)  # the other tasks enter their own scopes meanwhile
            return hub.domain, hub.logits(ids)[0]

    async def main():
        return await asyncio.gather(*(task(name) for name in NAMES[:4]))

    for name, (seen, got) in zip(NAMES[:4], asyncio.run(main())):
        assert seen == name and torch.allclose(got, expected[name], atol=1e-6)
    assert hub.domain is None or hub.domain in NAMES  # the hub default is untouched by the scopes


def test_resident_bytes_stay_within_file_bytes(hub, adapter_dirs):
    report = {info.name: info for info in hub.resident()}
    stored = sum(info.bytes for info in report.values())
    on_disk = sum((path / "adapter_model.safetensors").stat().st_size for path in adapter_dirs.values())
    assert set(report) == set(NAMES)
    assert stored <= 1.1 * on_disk
    held = _slot_storage_bytes(hub)  # what the tensors really hold, shared storage counted once
    assert held == stored


def _slot_storage_bytes(hub):
    seen, total = set(), 0
    tensors = []
    for method in hub.residency.methods.values():
        for slot, layers in getattr(method, "_slot_layers", {}).items():
            for layer in layers:
                weights = layer.weights[slot]
                tensors += [weights.A, weights.B, weights.bias, weights.dora_gain]
        for prefix in getattr(method, "_slots", {}).values():
            tensors += [prefix.keys, prefix.values]
    for tensor in tensors:
        if tensor is not None and tensor.untyped_storage().data_ptr() not in seen:
            seen.add(tensor.untyped_storage().data_ptr())
            total += tensor.untyped_storage().nbytes()
    return total
