"""AdaLoRA, IA³, LoHa and bottleneck rows equal their references, alone and mixed with LoRA and prefix rows.

AdaLoRA, IA³ and LoHa are compared with ``PeftModel.from_pretrained``; bottleneck
adapters (PEFT has none) with a plain module-by-module reference written here:
forward hooks that add ``up(act(down(h)))`` after each adapted layer.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.runtime import AdapterHub
from adapterhub.runtime.testing import load_peft, make_random_adapters

ATOL = 1e-4
ADAPTERS = {  # name -> make_random_adapters options
    "adalora-r6": dict(method="adalora", r=6),
    "adalora-qv": dict(method="adalora", r=4, lora_alpha=3, target_modules=["q_proj", "v_proj"]),
    "ia3": dict(method="ia3"),
    "ia3-custom": dict(method="ia3", target_modules=["q_proj", "o_proj", "up_proj", "down_proj"]),
    "bottleneck-houlsby": dict(method="bottleneck", placement="houlsby", reduction_factor=8),
    "bottleneck-pfeiffer": dict(method="bottleneck", placement="pfeiffer", reduction_factor=16, non_linearity="gelu"),
    "loha": dict(method="loha", r=4),
    "loha-qv": dict(method="loha", r=2, lora_alpha=3, target_modules=["q_proj", "v_proj"]),
    "lora": dict(r=4),
    "prefix": dict(method="prefix", num_virtual_tokens=3),
}
NAMES = list(ADAPTERS)


def bottleneck_reference(base, path):
    """A fresh copy of the base with each stored bottleneck applied by a forward hook, one module at a time."""
    from transformers import AutoModelForCausalLM

    config = json.loads((path / "adapter_config.json").read_text())
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
           "tanh": torch.tanh}[config["non_linearity"]]
    weights = load_file(str(path / "adapter_model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(base.spec.path, dtype=torch.float32).eval()
    modules = dict(model.named_modules())
    for key in weights:
        if key.endswith(".bottleneck.down.weight"):
            stem = key.removesuffix(".down.weight")
            module = modules[stem.removeprefix("base_model.model.").removesuffix(".bottleneck")]
            down, down_b = weights[f"{stem}.down.weight"], weights[f"{stem}.down.bias"]
            up, up_b = weights[f"{stem}.up.weight"], weights[f"{stem}.up.bias"]

            def hook(_module, _inputs, h, down=down, down_b=down_b, up=up, up_b=up_b):
                return h + (act(h @ down.T + down_b) @ up.T + up_b)

            module.register_forward_hook(hook)
    return model


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("new-methods")
    return {name: make_random_adapters(tiny_base, root, prefix=name, seed=10 + i, **options)[0]
            for i, (name, options) in enumerate(ADAPTERS.items())}


@pytest.fixture(scope="module")
def references(tiny_base, adapter_dirs):
    return {name: bottleneck_reference(tiny_base, path) if name.startswith("bottleneck") else load_peft(tiny_base, path)
            for name, path in adapter_dirs.items()}


@pytest.fixture(scope="module")
def hub(tiny_base, adapter_dirs):
    with AdapterHub(tiny_base) as hub:
        for name, path in adapter_dirs.items():
            hub.load(path, name=name)
        yield hub


def reference_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids.unsqueeze(0)).logits[0]


def test_random_adalora_really_has_a_budget(adapter_dirs):
    config = json.loads((adapter_dirs["adalora-r6"] / "adapter_config.json").read_text())
    kept = [sum(mask) for mask in config["rank_pattern"].values()]
    assert 0 in kept and 0 < sum(kept) < 6 * len(kept)


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_the_reference(hub, references, tiny_base, name):
    ids = torch.randint(0, 300, (11,), generator=torch.Generator().manual_seed(7))
    got = hub.logits(ids, domain=name)[0]
    assert torch.allclose(got, reference_logits(references[name], ids), atol=ATOL)
    bare = hub.logits(ids, domain=None)[0]
    assert (got - bare).abs().max() > 1e-2, "the adapter changes the output"


@pytest.mark.parametrize("order", ["grouped", "interleaved"])
def test_every_row_of_a_mixed_batch_matches(hub, references, tiny_base, order):
    rows = [*NAMES, None, *NAMES[:3]] if order == "grouped" else [None, *reversed(NAMES), NAMES[2], None, NAMES[4]]
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
        model = tiny_base.model if name is None else references[name]
        expected = reference_logits(model, input_ids[i, width - length:])
        assert torch.allclose(got[i, width - length:], expected, atol=ATOL), (i, name)


def test_patches_chain_on_a_shared_linear_layer(hub, tiny_base):
    """down_proj carries LoRA, IA³, LoHa and bottleneck patches at once, each wrapping the one before."""
    from adapterhub.methods.bottleneck.serving import BottleneckLayer
    from adapterhub.methods.ia3.serving import IA3Layer
    from adapterhub.methods.loha.serving import LohaLayer
    from adapterhub.methods.lora.layer import LoraLayer

    down_proj = tiny_base.model.model.layers[0].mlp.down_proj
    chain, layer = [], down_proj.forward
    while isinstance(layer, (LoraLayer, IA3Layer, BottleneckLayer, LohaLayer)):
        chain.append(type(layer).__name__)
        layer = getattr(layer, "inner_forward", None) or getattr(layer, "base_forward", None)
    assert sorted(chain) == ["BottleneckLayer", "IA3Layer", "LohaLayer", "LoraLayer"]


def test_greedy_generation_in_a_mixed_batch_matches_each_adapter_alone(hub):
    rows = ["adalora-r6", "ia3", "bottleneck-houlsby", "lora", "prefix", None, "loha", "loha-qv"]
    prompts = ["The quarterly revenue of the company rose", "Patient reports chest pain"] * 4
    mixed = hub.generate(prompts, domains=rows, max_new_tokens=6)
    alone = [hub.generate(prompt, domain=name, max_new_tokens=6) for prompt, name in zip(prompts, rows)]
    assert mixed == alone


def test_resident_report_names_the_methods(hub):
    methods = {info.name: info.method for info in hub.resident()}
    assert methods["adalora-qv"] == "adalora" and methods["ia3"] == "ia3"
    assert methods["bottleneck-pfeiffer"] == "bottleneck" and methods["loha-qv"] == "loha"
