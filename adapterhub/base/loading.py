"""Loading one frozen base model: alias, Hugging Face id or local directory.

``load_base`` resolves the name to a local directory of safetensors weights,
loads it (optionally 4-bit NF4/FP4 or 8-bit through bitsandbytes), freezes it
and computes a *fingerprint* from the files on disk, so the same weights give
the same fingerprint however they were quantised at load time.

>>> from adapterhub import load_base
>>> base = load_base()  # doctest: +SKIP
>>> base.spec.num_layers, base.fingerprint[:8]  # doctest: +SKIP
(30, 'llama-30')
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._transformers import text_config
from . import embedded
from .identity import fingerprint, logical_parameter_count
from .quantized import set_cpu_packing
from ..errors import BaseModelError, BaseNotFoundError, QuantizationError, UnknownBaseError

QUANTIZATIONS = (None, "nf4", "fp4", "int8")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]
KINDS = ("decoder", "encoder")
ENCODER_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra",
                                 "camembert", "mpnet", "albert", "modernbert"})
"""``model_type`` values loaded as encoders (bidirectional bodies that classification heads sit on)."""


@dataclass(frozen=True)
class BaseSpec:
    """What was loaded and how (everything but the weights)."""

    name: str  # as the user gave it
    source: str  # "embedded", "local" or "hub"
    path: str  # local directory the weights came from
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_parameters: int
    dtype: str  # compute dtype
    quantize: str | None
    device: str
    kind: str = "decoder"  # "decoder" (causal LM) or "encoder" (BERT-style body, no LM head)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Base:
    """A loaded, frozen base model with its tokenizer and identity."""

    model: Any  # transformers PreTrainedModel, eval mode, requires_grad=False everywhere
    tokenizer: Any
    fingerprint: str
    spec: BaseSpec
    _shapes: dict[str, tuple[int, int]] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``"decoder"`` (a causal LM: generate, predict) or ``"encoder"`` (a BERT-style body: classify, tag)."""
        return self.spec.kind

    @property
    def module_prefix(self) -> str:
        """What task models put before this body's module names: ``"bert."`` for a BERT encoder, ``""`` for decoders.

        PEFT names an encoder adapter's modules inside ``AutoModelFor{Sequence,Token}Classification``
        (``bert.encoder.layer.0.attention.self.query``); the base holds the body alone.
        """
        if self.kind != "encoder":
            return ""
        prefix = getattr(self.model, "base_model_prefix", "")
        return f"{prefix}." if prefix else ""

    def named_modules(self) -> Any:
        """``(name, module)`` pairs under the names adapters use (see :attr:`module_prefix`)."""
        prefix = self.module_prefix
        for name, module in self.model.named_modules():
            yield (f"{prefix}{name}" if name else name), module

    @property
    def footprint_bytes(self) -> int:
        """Bytes held by parameters and buffers (quantised sizes when quantised)."""
        return int(self.model.get_memory_footprint())

    @property
    def kernel_4bit(self) -> str | None:
        """The bitsandbytes kernel of the 4-bit layers now: ``"unpacked"``, ``"packed-bf16"``, ``"gpu"``; or
        ``None`` (no 4-bit layer). See :func:`adapterhub.base.quantized.kernel_path`."""
        from .quantized import kernel_path

        return kernel_path(self.model)

    @property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``{module_name: (in_features, out_features)}`` for every linear layer.

        Names are relative to the causal-LM model (``model.layers.0.self_attn.q_proj``) or, for an
        encoder, to its task models (``bert.encoder.layer.0.attention.self.query``): the same names
        PEFT uses after its ``base_model.model.`` prefix.
        Quantised layers report their logical (unquantised) shapes.
        """
        if self._shapes is None:
            self._shapes = linear_shapes(self.model, prefix=self.module_prefix)
        return self._shapes


def linear_shapes(model: Any, *, prefix: str = "") -> dict[str, tuple[int, int]]:
    """``{prefix + name: (in_features, out_features)}`` of every ``nn.Linear`` (incl. bitsandbytes)."""
    import torch

    return {
        prefix + name: (int(module.in_features), int(module.out_features))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def load_base(
    model: str = embedded.DEFAULT_ALIAS,
    *,
    quantize: str | None = None,
    double_quant: bool = True,
    keep_full_precision: Sequence[str] = (),
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = True,
    kind: str = "auto",
    packed_4bit: bool | None = None,
) -> Base:
    """Load a frozen base model.

    Args:
        model: an embedded alias (``"smollm2-135m-instruct"``, or the encoder ``"minilm-l6"``), a local directory
            with ``config.json`` and safetensors weights, or a Hugging Face id
            (``"org/name"``).
        quantize: ``None``, ``"nf4"``, ``"fp4"`` (4-bit) or ``"int8"``, via bitsandbytes.
        double_quant: also quantise the 4-bit quantisation constants.
        keep_full_precision: with ``quantize``, linear layers left unquantised, named as transformers'
            ``llm_int8_skip_modules`` matches them (``["down_proj"]``, ``["layers.0.", "layers.29."]``);
            the LM head always is.
        dtype: compute dtype: ``"auto"`` (float32 on CPU, bfloat16 on CUDA when
            supported, else float16), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        trust_remote_code: allow custom modelling code from the model repo.
        progress: show download/convert progress for the embedded base.
        kind: ``"auto"`` (an encoder for BERT-family ``model_type`` values, see
            :data:`ENCODER_MODEL_TYPES`; else a decoder), ``"decoder"`` or ``"encoder"``.
        packed_4bit: with ``quantize="nf4"``/``"fp4"`` on a CPU with AVX512-BF16: ``None`` (default) or ``True``
            lets bitsandbytes pack each 4-bit layer whose widths allow it at its first eval-mode forward and
            compute it in bf16 (serving's fast path: same predictions as unpacked on the shipped adapters,
            README "4-bit"); ``False`` dequantises to ``dtype`` at every forward. A packed layer passes no
            gradient: training forbids packing itself (:mod:`adapterhub.training.grad_guard`); a training loop
            of your own on this base needs ``False`` (or :func:`adapterhub.base.quantized.set_cpu_packing`).

    Returns:
        A :class:`Base` whose model is in eval mode with every parameter frozen: a causal LM
        (decoder) or the encoder body without any head (``AutoModel``, pooler included).

    Raises:
        UnknownBaseError: ``model`` is no alias, directory or Hub id.
        BaseNotFoundError: a local path does not exist or has no weights.
        QuantizationError: unknown quantisation, or unsupported on this device.
        FetchError / HubConnectionError: the weights could not be downloaded.

    >>> base = load_base("smollm2-135m-instruct", quantize="nf4")  # doctest: +SKIP
    >>> base.spec.quantize  # doctest: +SKIP
    'nf4'
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if kind not in ("auto", *KINDS):
        raise BaseModelError(f"unknown kind={kind!r}; use 'auto', 'decoder' or 'encoder'")
    if quantize not in QUANTIZATIONS:
        raise QuantizationError(f"unknown quantize={quantize!r}; use one of None, 'nf4', 'fp4', 'int8'")
    if dtype not in DTYPES:
        raise QuantizationError(f"unknown dtype={dtype!r}; use one of {', '.join(DTYPES)}")
    if packed_4bit and quantize not in ("nf4", "fp4"):
        raise QuantizationError(f"packed_4bit=True needs quantize='nf4' or 'fp4' (got quantize={quantize!r}): only "
                                "bitsandbytes' 4-bit layers have a packed CPU kernel")
    source, path = resolve(model, progress=progress)
    device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": True, "trust_remote_code": trust_remote_code}
    if quantize is not None:
        kwargs["quantization_config"] = _bnb_config(quantize, double_quant, torch_dtype, device,
                                                    skip=["lm_head", *keep_full_precision])
    elif keep_full_precision:
        raise QuantizationError(f"keep_full_precision={list(keep_full_precision)} needs quantize='nf4', 'fp4' or "
                                "'int8': an unquantised base keeps every layer in full precision already")
        kwargs["device_map"] = {"": device}
    try:
        if kind == "auto":
            model_type = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).model_type
            kind = "encoder" if model_type in ENCODER_MODEL_TYPES else "decoder"
        model_class = AutoModel if kind == "encoder" else AutoModelForCausalLM
        hf_model = model_class.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise BaseModelError(f"could not load base {model!r} from {path}: {error}. "
                             "Check that the directory holds config.json, safetensors weights and a tokenizer.") from error
    if quantize is None:
        hf_model.to(device)
    else:
        set_cpu_packing(hf_model, packed_4bit is not False)  # chosen here, and only where the widths allow
    hf_model.eval()
    hf_model.requires_grad_(False)
    if tokenizer.pad_token is None and kind == "decoder":
        tokenizer.pad_token = tokenizer.eos_token
    config = hf_model.config
    text = text_config(config)
    spec = BaseSpec(
        name=model, source=source, path=str(path), model_type=str(config.model_type),
        num_layers=int(getattr(text, "num_hidden_layers", 0)),
        hidden_size=int(getattr(text, "hidden_size", 0)),
        vocab_size=int(getattr(text, "vocab_size", 0)),
        num_parameters=logical_parameter_count(path),
        dtype=str(torch_dtype).removeprefix("torch."), quantize=quantize, device=device, kind=kind,
    )
    return Base(model=hf_model, tokenizer=tokenizer, fingerprint=fingerprint(path), spec=spec)


def resolve(model: str, *, progress: bool = True) -> tuple[str, Path]:
    """Map a model name to ``(source, local directory)``, downloading if needed."""
    if model in embedded.ALIASES:
        return "embedded", embedded.ensure(model, progress=progress)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BaseNotFoundError(f"base directory {path} has no config.json; point to a saved "
                                    "transformers model directory (save_pretrained output)")
        if not list(path.glob("*.safetensors")):
            raise BaseNotFoundError(f"base directory {path} has no *.safetensors weights (pickle .bin is never "
                                    "loaded); convert with model.save_pretrained(dir, safe_serialization=True)")
        return "local", path
    if model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1:
        raise BaseNotFoundError(f"base directory {model!r} does not exist; check the path, or use the alias "
                                f"{embedded.DEFAULT_ALIAS!r} or a Hugging Face id like 'org/name'")
    if _HUB_ID.match(model):
        return "hub", _download_from_hub(model)
    known = ", ".join(sorted(embedded.ALIASES))
    raise UnknownBaseError(f"unknown base model {model!r}: not an alias ({known}), an existing directory "
                           "or a Hugging Face id ('org/name')")


def _download_from_hub(repo_id: str) -> Path:
    """The local snapshot of a base model repo (safetensors, config and tokenizer only)."""
    from huggingface_hub import snapshot_download

    from ..hf.client import HubRef, HubSettings, hub_errors

    from ..errors import HubError

    settings = HubSettings.from_env()
    try:
        with hub_errors(HubRef(repo_id), settings, action="download the base model from"):
            return Path(snapshot_download(repo_id, allow_patterns=_WEIGHT_PATTERNS, cache_dir=settings.cache_dir,
                                          endpoint=settings.endpoint, token=settings.token,
                                          local_files_only=settings.offline, library_name="adapterhub"))
    except HubError as error:
        hint = f"; or load the embedded base {embedded.DEFAULT_ALIAS!r} or a local model directory instead"
        raise type(error)(str(error) + hint) from error.__cause__


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QuantizationError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise QuantizationError(f"unknown device={device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def _bnb_config(quantize: str, double_quant: bool, compute_dtype: Any, device: str, *,
                skip: Sequence[str] = ("lm_head",)) -> Any:
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as error:
        raise QuantizationError(f"quantize={quantize!r} needs bitsandbytes: pip install bitsandbytes") from error
    if quantize == "int8":
        if not device.startswith("cuda") and compute_dtype is not None and str(compute_dtype) == "torch.bfloat16":
            raise QuantizationError("quantize='int8' with bfloat16 is not supported on CPU; use dtype='float32'")
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantize, llm_int8_skip_modules=list(skip),
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)
