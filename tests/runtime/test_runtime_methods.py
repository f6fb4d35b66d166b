"""LoRA/DoRA/prefix slot math over every base precision: plain PEFT on the same base is the reference."""

from __future__ import annotations

import warnings

import pytest
import torch

from adapterhub import load_base
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.testing import load_peft, make_random_adapters

ADAPTERS = {
    "lora": dict(r=4),
    "rslora": dict(r=8, use_rslora=True, target_modules=["v_proj", "up_proj"]),
    "dora": dict(r=3, use_dora=True, target_modules=["q_proj", "down_proj"]),
    "prefix": dict(method="prefix", num_virtual_tokens=5),
}
PRECISIONS = [  # (quantize, dtype, atol): the adapter math is exact; low precisions round differently from
    (None, "float32", 1e-4),  # PEFT, which upcasts adapter weights to float32
    ("nf4", "float32", 1e-3),
    ("int8", "float32", 1e-2),  # int8 rounds activations: a 1e-7 input difference can move one quantisation step
    (None, "float16", 5e-3),
    (None, "bfloat16", 3e-2),
    ("nf4", "bfloat16", 3e-2),
]


def without_cpu_repacking(model):
    """Keep bitsandbytes from repacking 4-bit weights for its bf16 CPU kernel on the first forward.

    PEFT's DoRA dequantises ``weight.data`` on every forward, which is garbage once repacked
    (bitsandbytes 0.50), so the PEFT reference is only meaningful without repacking.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("method-adapters")
    return {name: make_random_adapters(tiny_base, root, prefix=name, **options)[0]
            for name, options in ADAPTERS.items()}


@pytest.mark.parametrize("quantize, dtype, atol", PRECISIONS)
def test_every_method_matches_peft_on_the_same_base(tiny_llama_dir, adapter_dirs, quantize, dtype, atol):
    warnings.filterwarnings("ignore", message="MatMul8bitLt")
    base = load_base(str(tiny_llama_dir), quantize=quantize, dtype=dtype, device="cpu")
    without_cpu_repacking(base.model)
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(1))
    with AdapterHub(base) as hub:
        names = list(adapter_dirs)
        for name, path in adapter_dirs.items():
            hub.load(path, name=name)
        rows = ids.repeat(2, 1)[: len(names)]
        mixed = hub.logits(rows, domains=names).float()
        with torch.no_grad():
            bare = base.model(input_ids=rows).logits.float()
        for row, name in enumerate(names):
            with torch.no_grad():
                reference = without_cpu_repacking(load_peft(tiny_llama_dir, adapter_dirs[name], quantize=quantize,
                                                            dtype=dtype))
                expected = reference(input_ids=rows[row: row + 1]).logits.float()[0]
            assert torch.allclose(mixed[row], expected, atol=atol), name
            assert (expected - bare[row]).abs().max() > 5 * atol, name  # the adapter matters at this precision


def test_default_nf4_base_with_cpu_repacking_stays_close(tiny_llama_dir, adapter_dirs):
    base = load_base(str(tiny_llama_dir), quantize="nf4", device="cpu")
    ids = torch.randint(0, 300, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base.model(input_ids=ids)  # bitsandbytes repacks its weights here, before the adapters load
    with AdapterHub(base) as hub:
        for name, path in adapter_dirs.items():
            hub.load(path, name=name)
            with torch.no_grad():
                expected = without_cpu_repacking(load_peft(tiny_llama_dir, path, quantize="nf4"))(input_ids=ids)
            assert torch.allclose(hub.logits(ids, domain=name), expected.logits, atol=1e-2), name


def test_resident_tensors_use_the_base_dtype(tiny_llama_dir, adapter_dirs):
    base = load_base(str(tiny_llama_dir), dtype="bfloat16", device="cpu")
    with AdapterHub(base) as hub:
        for path in adapter_dirs.values():
            hub.load(path)
        layers = hub.residency.methods["lora"]._slot_layers
        dtypes = {w.dtype for slot, ls in layers.items() for layer in ls for w in (layer.weights[slot].A,
                                                                                     layer.weights[slot].B)}
        prefix_dtypes = {p.keys.dtype for p in hub.residency.methods["prefix"]._slots.values()}
        assert dtypes == prefix_dtypes == {torch.bfloat16}
        report = hub.resident()
        assert all(info.bytes <= 0.55 * info.file_bytes for info in report)  # float32 files, bf16 slots
