"""bitsandbytes' packed bf16 CPU path for 4-bit layers: forced on any CPU, so an Intel CI without bf16 catches it too.

Forcing means answering bitsandbytes' own feature probe ``has_avx512bf16`` with True (as an AVX512-BF16 CPU
does); each ``Linear4bit`` copies the answer into its flag when it is built. Where the CPU really has the
feature, the packed outputs are also compared with the unpacked ones (bf16 tolerance).
"""

from __future__ import annotations

import pytest
import torch

from adapterhub import load_base
from adapterhub.base import quantized
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.errors import QuantizationError
from tests.helpers.packed_cpu import force_probe

bnb = pytest.importorskip("bitsandbytes")
REAL_BF16_CPU = quantized.cpu_packs_4bit()  # before any test forces the probe


@pytest.fixture
def bf16_cpu(monkeypatch):
    force_probe(monkeypatch, True)


def _linear_4bit(out_features: int = 64, in_features: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(out_features, in_features) / 8, requires_grad=False, quant_type="nf4")
    return layer.to("cpu")  # quantises


def _input_gradient(layer, x, g):
    layer.train()
    x = x.clone().requires_grad_()
    layer(x).backward(g)
    return x.grad


def test_the_minimal_check_bitsandbytes_packs_for_good_at_an_eval_forward(bf16_cpu):
    """The README's minimal check: after one eval-mode no-grad forward, a train-mode backward gives no input grad."""
    layer = _linear_4bit()
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    x, g = torch.randn(3, 64), torch.randn(3, 64)
    torch.testing.assert_close(_input_gradient(layer, x, g), g @ weight, rtol=1e-4, atol=1e-4)
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert quantized.is_packed(layer) and layer.weight.quant_state.dtype == torch.bfloat16
    with pytest.warns(UserWarning, match="autograd kernel was not registered"):
        assert _input_gradient(layer, x, g) is None  # bitsandbytes 0.50: the packed op has no autograd
    assert quantized.unpack(layer) and not quantized.is_packed(layer)
    torch.testing.assert_close(_input_gradient(layer, x, g), g @ weight, rtol=2e-2, atol=2e-2)  # constants via bf16


def test_forbidding_packing_keeps_the_layer_unpacked_and_its_gradients_exact(bf16_cpu):
    layer = _linear_4bit()
    assert layer.support_avx512bf16_for_cpu  # what bitsandbytes set from the forced probe
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    assert quantized.set_cpu_packing(layer, False) == {"layers": 1, "may_pack": 0, "unpacked": 0}
    x, g = torch.randn(3, 64), torch.randn(3, 64)
    layer.eval()
    with torch.no_grad():
        layer(x)
    assert not quantized.is_packed(layer) and quantized.kernel_path(layer) == "unpacked"
    torch.testing.assert_close(_input_gradient(layer, x, g), g @ weight, rtol=1e-4, atol=1e-4)


def test_packing_later_forbidden_unpacks_what_packed(bf16_cpu):
    layer = _linear_4bit()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(2, 64))
    assert quantized.kernel_path(layer) == "packed-bf16"
    assert quantized.set_cpu_packing(layer, False)["unpacked"] == 1 and not quantized.is_packed(layer)


@pytest.mark.parametrize("shape, packs", [((64, 64), True), ((32, 128), True), ((48, 64), False), ((64, 32), False),
                                          ((3, 64), False)])
def test_which_widths_the_packer_takes(shape, packs):
    assert quantized.can_pack(_linear_4bit(*shape)) is packs  # (out, in): out % 32, in % the 64-wide block


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def _ids(base):
    if base.kind == "encoder":
        return {"input_ids": torch.tensor([[2, 40, 41, 42, 3]])}
    return {"input_ids": base.tokenizer(["Revenue rose and margins widened."], return_tensors="pt").input_ids}


def _output(base):
    with torch.no_grad():
        out = base.model(**_ids(base))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("model", ["tiny_llama_dir", "bert_dir"])
def test_the_tiny_models_take_every_cpu_path(model, request, monkeypatch):
    """Both tiny models load, pack and run in 4 bits on the packed path, and unpacked on a CPU without bf16."""
    path = str(request.getfixturevalue(model))
    force_probe(monkeypatch, False)
    plain = load_base(path, device="cpu", quantize="nf4")  # no feature: the default dequantises
    assert plain.kernel_4bit == "unpacked"
    reference = _output(plain)
    force_probe(monkeypatch, True)
    packed = load_base(path, device="cpu", quantize="nf4")  # the feature: the default packs for serving
    layers = dict(quantized.linear_4bit_layers(packed.model))
    assert layers and all(quantized.can_pack(layer) for layer in layers.values())
    assert packed.kernel_4bit == "packed-bf16"
    out = _output(packed)
    assert all(quantized.is_packed(layer) for layer in layers.values())
    if REAL_BF16_CPU:  # the packed kernel exists only there: compare its bf16 figures with the unpacked ones
        torch.testing.assert_close(out, reference, rtol=0.1, atol=0.1 * float(reference.abs().mean()))
    unpacked = load_base(path, device="cpu", quantize="nf4", packed_4bit=False)  # never packs, on any CPU
    _output(unpacked)
    assert unpacked.kernel_4bit == "unpacked"
    assert not any(quantized.is_packed(layer) for _, layer in quantized.linear_4bit_layers(unpacked.model))


def test_a_base_the_packer_cannot_lay_out_is_served_unpacked(tmp_path, bf16_cpu):
    """Widths the packer refuses ("N must be divisible by block_n") stay unpacked instead of failing at a forward."""
    narrow = load_base(str(make_tiny_bert(tmp_path / "narrow", intermediate=48)), device="cpu", quantize="nf4")
    layers = dict(quantized.linear_4bit_layers(narrow.model))
    takes = {name for name, layer in layers.items() if quantized.can_pack(layer)}
    assert 0 < len(takes) < len(layers)  # 48 wide: neither the outputs (by 32) nor the inputs (by 64)
    assert narrow.kernel_4bit == f"packed-bf16 ({len(takes)} of {len(layers)} layers)"
    _output(narrow)
    assert {name for name, layer in layers.items() if quantized.is_packed(layer)} == takes


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_the_packed_option_needs_a_4bit_base(tiny_llama_dir, quantize):
    with pytest.raises(QuantizationError, match="packed_4bit=True needs quantize='nf4' or 'fp4'"):
        load_base(str(tiny_llama_dir), device="cpu", quantize=quantize, packed_4bit=True)
    assert load_base(str(tiny_llama_dir), device="cpu").kernel_4bit is None


def test_base_info_and_the_bench_report_say_which_kernel(tiny_llama_dir, capsys, bf16_cpu):
    import json

    from adapterhub.bench.report import _machine_rows
    from adapterhub.cli import main

    for extra, kernel in (([], "packed-bf16"), (["--unpacked-4bit"], "unpacked")):
        assert main(["base", "info", str(tiny_llama_dir), "--device", "cpu", "--quantize", "nf4", "--json",
                     *extra]) == 0
        assert json.loads(capsys.readouterr().out)["kernel_4bit"] == kernel
    rows = dict(_machine_rows({"base": {"dtype": "float32", "quantize": "nf4", "kernel_4bit": "unpacked"}}))
    assert rows["dtype / quantize"] == "float32 / nf4 (unpacked 4-bit kernel)"


def test_a_hub_and_the_server_choose_the_4bit_kernel(tiny_llama_dir, bf16_cpu):
    """``AdapterHub(packed_4bit=False)`` (``adapterhub serve --unpacked-4bit``) serves unpacked; the default packs."""
    from adapterhub.cli import build_parser
    from adapterhub.errors import ConfigError
    from adapterhub.runtime import AdapterHub

    packed = AdapterHub(str(tiny_llama_dir), device="cpu", quantize="nf4")
    unpacked = AdapterHub(str(tiny_llama_dir), device="cpu", quantize="nf4", packed_4bit=False)
    assert packed.base.kernel_4bit.startswith("packed-bf16") and unpacked.base.kernel_4bit == "unpacked"
    with pytest.raises(ConfigError, match="packed_4bit="):
        AdapterHub(packed.base, packed_4bit=False)  # a loaded base keeps the kernel it was loaded with
    assert build_parser().parse_args(["serve", "--quantize", "nf4", "--unpacked-4bit"]).packed_4bit is False
