"""LoRA (any rank and target set, rsLoRA, DoRA, lora_bias) served from per-layer slot storage.

Each targeted linear layer's ``forward`` is replaced once by a :class:`LoraLayer`:
it calls the original forward (plain, bf16/fp16, bitsandbytes 4-/8-bit alike)
and adds each row's delta from the slot the active :class:`~adapterhub.runtime.batch.RowSlots`
assigns it. Nothing is traversed or re-allocated on a switch.

Per adapter and layer, with ``s = alpha / r`` (rsLoRA: ``alpha / sqrt(r)``)::

    delta(x) = x @ A.T @ B'.T + b'                   A: [r, in], B': [out, r] = s * B, b' = s * b
    DoRA:      g = m / ||W + s * B @ A||_row          (computed once at load, like PEFT's
               B' = g * s * B,  b' = g * s * b        forward does on every call)
               delta(x) += (g - 1) * (base(x) - bias)

which is PEFT's ``lora_B(lora_A(x)) * scaling`` (and its DoRA variant) with the
constants folded in. ``lora_dropout`` is the identity at inference.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import IncompatibleBaseError, InvalidAdapterError
from ...memory import fresh_tensor
from ...methods.lora import parse_key
from ...registry.safetensors_file import SafetensorsViews
from ..batch import active_rows, routed
from . import PatchedLayers, owned, tensor_bytes

_UNSUPPORTED = {  # adapter_config key -> what it is; any truthy value is refused
    "use_qalora": "QA-LoRA", "alora_invocation_tokens": "activated LoRA (aLoRA)", "arrow_config": "Arrow routing",
    "velora_config": "VeLoRA", "use_bdlora": "BD-LoRA", "monteclora_config": "MonteCLoRA", "kasa_config": "KaSA",
    "layer_replication": "layer replication", "target_parameters": "LoRA on raw parameters",
    "trainable_token_indices": "trainable tokens", "modules_to_save": "modules_to_save (full module copies)",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)",
}
_ATTR = "_adapterhub_lora_layer"


@dataclass
class LoraWeights:
    """One adapter in one layer, constants folded (see the module docstring)."""

    A: Any  # [r, in], a transposed view of contiguous [in, r] storage (see ``transposed_into``)
    B: Any  # [out, r], a transposed view of contiguous [r, out] storage
    bias: Any = None  # [out] or None
    dora_gain: Any = None  # [out] = g - 1, or None for plain LoRA

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.A, self.B, self.bias, self.dora_gain)

    def add_to(self, x: Any, out: Any, base_bias: Any) -> None:
        """Add this adapter's delta to ``out = base(x)`` in place.

        ``x``: ``[rows, ..., in]``; ``out``: ``[rows, ..., out]``, contiguous. The second
        matmul accumulates straight into ``out`` (``addmm_``): no delta tensor is made.
        """
        flat = out.view(-1, out.shape[-1])
        if self.dora_gain is not None:  # from the base output before anything is added to it
            dora = self.dora_gain * (flat if base_bias is None else flat - base_bias)
        add_low_rank(x, flat, self.A, self.B)
        if self.bias is not None:
            flat.add_(self.bias)
        if self.dora_gain is not None:
            flat.add_(dora)


class LoraLayer:
    """The replacement ``forward`` of one linear layer: base output plus each row's slot delta."""

    def __init__(self, linear: Any) -> None:
        self.linear = linear
        self.base_forward = linear.forward
        self.weights = SlotWeights()  # slot -> weights

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = self.base_forward(x, *args, **kwargs)
        rows = active_rows()
        if rows is None or not self.weights:
            return out
        rows = rows.for_batch(x.shape[0])
        out = out.contiguous()
        if rows.uniform is not None:  # fast path: one matmul pair on the whole batch
            weights = self.weights.get(rows.uniform)
            if weights is not None:
                weights.add_to(x, out, self.linear.bias)
            return out
        if x.numel() >= _GATHER_MIN_TOKENS * x.shape[0] * x.shape[-1]:  # long rows (prefill)
            if not self._add_row_gathered(x, out, rows):  # one matmul pair per adapter present
                self._add_per_group(x, out, [(self.weights[slot], index) for slot, index in rows.groups
                                             if slot in self.weights])
            return out
        plan = rows.memo(self, self._plan, rows)  # short rows (decode steps): one plan per routing and layer
        if plan.stacked is not None:  # one matmul pair over the stacked adapters
            plan.stacked.add_to(x, out, plan.mask)
        self._add_per_group(x, out, plan.rest)
        return out

    def _add_per_group(self, x: Any, out: Any, groups: Any) -> None:
        """One matmul pair per ``(weights, rows)``: a view for contiguous rows, else a gather and a scatter."""
        for weights, index in groups:
            if isinstance(index, slice):  # contiguous rows: a view, updated in place
                weights.add_to(x[index], out[index], self.linear.bias)
            else:
                part = out.index_select(0, index)
                weights.add_to(x.index_select(0, index), part, self.linear.bias)
                out.index_copy_(0, index, part)

    def _plan(self, rows: Any) -> DecodePlan:
        """How short rows of ``rows`` get their deltas here: the stacked pairs of every plain LoRA present
        (built once per set of adapters, when at least two qualify), one pair per group for the rest."""
        present = [(slot, index, self.weights[slot]) for slot, index in rows.groups if slot in self.weights]
        plain = {slot: weights for slot, _, weights in present if weights.bias is None and weights.dora_gain is None}
        stacked = mask = None
        if len(plain) >= 2 and len({w.A.dtype for w in plain.values()}) == 1:
            stacked = self.weights.stack(plain, blocks=_even_blocks(rows, present, plain))
            if not stacked.blocks:
                mask = rows.column_mask(stacked.columns, dtype=stacked.A.dtype)
        rest = tuple((weights, index) for slot, index, weights in present if stacked is None or slot not in plain)
        return DecodePlan(stacked=stacked, mask=mask, rest=rest)

    def _add_row_gathered(self, x: Any, out: Any, rows: Any) -> bool:
        """Mixed batch, long rows: each row's own ``A`` and ``B`` gathered, one batched matmul pair.

        ``x @ A_row.T @ B_row.T`` for every row at once (``bmm``) costs about what the
        single-adapter path does, where one matmul pair per adapter pays a fixed overhead
        per adapter and a gather/scatter for interleaved rows. Applies when every row
        has a plain LoRA of one rank and dtype here; the caller sends only rows of at least
        ``_GATHER_MIN_TOKENS`` tokens (decode steps take the stacked pairs of :meth:`_plan`,
        which read each adapter's weights once instead of copying them per row). Returns
        whether it handled the batch.
        """
        import torch

        tokens = x.numel() // (x.shape[0] * x.shape[-1])
        per_row = [self.weights.get(slot) for slot in rows.slots]
        first = per_row[0]
        if first is None or first.A.dtype != out.dtype:
            return False
        for weights in per_row:
            if (weights is None or weights.bias is not None or weights.dora_gain is not None
                    or weights.A.shape != first.A.shape):
                return False
        if len({id(w) for w in per_row}) == 1:  # one adapter after all (the others are absent from this layer)
            return False
        A_t = torch.stack([w.A.t() for w in per_row])  # [rows, in, r], contiguous: bmm reads it as stored
        B_t = torch.stack([w.B.t() for w in per_row])  # [rows, r, out]
        x_rows = x.reshape(x.shape[0], tokens, x.shape[-1])
        if x_rows.dtype != A_t.dtype:
            x_rows = x_rows.to(A_t.dtype)
        out_rows = out.view(out.shape[0], tokens, out.shape[-1])
        out_rows.baddbmm_(torch.bmm(x_rows, A_t), B_t)
        return True


_GATHER_MIN_TOKENS = 16
_STACKS_KEPT = 2  # sets of adapters whose stacked pairs a layer keeps (two concurrent mixed calls don't thrash)


def _even_blocks(rows: Any, present: list[tuple[int, Any, Any]], plain: dict[int, Any]) -> bool:
    """Whether every row has a plain adapter here, all of one rank, in equal runs of rows in slot order
    (what ``generate`` and the stepper make of e.g. 8 rows over 8, 4 or 2 adapters)."""
    size = len(rows.slots) // len(plain)
    shape = next(iter(plain.values())).A.shape
    return len(present) == len(plain) and size * len(plain) == len(rows.slots) and all(
        isinstance(index, slice) and index.start == i * size and index.stop == (i + 1) * size
        and weights.A.shape == shape for i, (_, index, weights) in enumerate(present))


def add_low_rank(x: Any, flat: Any, A: Any, B: Any, *, mask: Any = None) -> None:
    """``flat += ((x @ A.T) * mask) @ B.T`` in place; ``flat``: ``out`` as ``[tokens, out]``, contiguous.

    ``mask`` (``[rows, rank]``, optional) scales each row's hidden columns; the second matmul
    accumulates straight into ``flat`` (``addmm_``) when the dtypes agree: no delta tensor is made.
    """
    import torch.nn.functional as F

    if x.dtype != A.dtype:
        x = x.to(A.dtype)
    hidden = F.linear(x, A).view(-1, A.shape[0])
    if mask is not None:
        hidden.view(mask.shape[0], -1, A.shape[0]).mul_(mask[:, None])
    if flat.dtype == hidden.dtype:
        flat.addmm_(hidden, B.t())
    else:
        flat.add_((hidden @ B.t()).to(flat.dtype))


@dataclass(frozen=True)
class StackedLora:
    """Several adapters' pairs in one layer, read in one matmul pair however many a decode step mixes
    (one pair per adapter pays a fixed cost per call and per adapter).

    Side by side (any ranks, any row order): ``A`` ``[sum r, in]``, ``B`` ``[out, sum r]``; ``x @ A.T``
    computes every adapter's hidden columns for every row, a row mask
    (:meth:`~adapterhub.runtime.batch.RowSlots.column_mask`) keeps each row's own, ``@ B.T`` adds
    the deltas. Stored like :func:`transposed_into` pairs (``[in, sum r]`` / ``[sum r, out]`` contiguous).

    In ``blocks`` (rows in equal runs per adapter, one rank): ``A`` ``[k, in, r]``, ``B`` ``[k, r, out]``
    and one ``bmm`` pair over the runs, which computes no other adapter's columns (8 rows over 8
    adapters: an eighth of the side-by-side multiply-adds).
    """

    slots: tuple[int, ...]
    columns: tuple[tuple[int, int, int], ...]  # (slot, start, stop) of each adapter's columns
    A: Any
    B: Any
    blocks: bool = False

    @classmethod
    def of(cls, members: dict[int, Any], *, blocks: bool = False) -> StackedLora:
        import torch

        columns, start = [], 0
        for slot, weights in members.items():
            columns.append((slot, start, start + weights.A.shape[0]))
            start += weights.A.shape[0]
        if blocks:
            return cls(slots=tuple(members), columns=tuple(columns), blocks=True,
                       A=torch.stack([w.A.t() for w in members.values()]),
                       B=torch.stack([w.B.t() for w in members.values()]))
        A_t = torch.cat([w.A.t() for w in members.values()], dim=1)
        B_t = torch.cat([w.B.t() for w in members.values()], dim=0)
        return cls(slots=tuple(members), columns=tuple(columns), A=A_t.t(), B=B_t.t())

    def add_to(self, x: Any, out: Any, mask: Any) -> None:
        """Add every row's delta to ``out`` (contiguous) in place; ``mask`` for the side-by-side form."""
        import torch

        if not self.blocks:
            add_low_rank(x, out.view(-1, out.shape[-1]), self.A, self.B, mask=mask)
            return
        count = self.A.shape[0]
        hidden = torch.bmm(x.reshape(count, -1, x.shape[-1]).to(self.A.dtype), self.A)
        runs = out.view(count, -1, out.shape[-1])
        if runs.dtype == hidden.dtype:
            runs.baddbmm_(hidden, self.B)
        else:
            runs.add_(torch.bmm(hidden, self.B).to(runs.dtype))


@dataclass(frozen=True)
class DecodePlan:
    """What one layer does for short rows of one routing (kept by the routing: its adapters stay pinned)."""

    stacked: StackedLora | None
    mask: Any  # [rows, sum r] 0/1, or None
    rest: tuple[tuple[Any, Any], ...]  # (weights, rows) of adapters not stacked (bias, DoRA)


class SlotWeights(dict):
    """A layer's ``{slot: weights}`` and the stacked pairs of the last ``_STACKS_KEPT`` sets of adapters
    decoded together; installing or removing a slot drops the stacks that hold it (their memory goes
    with the adapter)."""

    def __init__(self) -> None:
        super().__init__()
        self.stacks: dict[tuple[Any, bool], StackedLora] = {}  # (slots, blocks) -> stacked; least recent first

    def stack(self, members: dict[int, Any], *, blocks: bool) -> StackedLora:
        """``members`` (slot -> plain weights of this table) stacked: built once per set and form, then reused."""
        key = (tuple(members), blocks)
        stacked = self.stacks.pop(key, None) or StackedLora.of(members, blocks=blocks)
        if all(self.get(slot) is weights for slot, weights in members.items()):  # no slot changed meanwhile
            self.stacks[key] = stacked
            if len(self.stacks) > _STACKS_KEPT:
                self.stacks = dict(list(self.stacks.items())[-_STACKS_KEPT:])
        return stacked

    def _forget(self, slot: int) -> None:
        if any(slot in slots for slots, _ in list(self.stacks)):
            self.stacks = {key: value for key, value in list(self.stacks.items()) if slot not in key[0]}

    def __setitem__(self, slot: int, weights: Any) -> None:
        self._forget(slot)
        super().__setitem__(slot, weights)

    def __delitem__(self, slot: int) -> None:
        self._forget(slot)
        super().__delitem__(slot)

    def pop(self, slot: int, *default: Any) -> Any:
        self._forget(slot)
        return super().pop(slot, *default)


@dataclass
class PreparedLora:
    layers: dict[str, LoraWeights]  # module name -> weights
    nbytes: int = 0


@dataclass
class LoraMethod(PatchedLayers):
    """LoRA slots over one base; layers are patched on first use and shared by every hub on that base."""

    base: Any
    name: str = "lora"
    routes: str = "layers"
    layer_class: ClassVar[type] = LoraLayer
    patch_attr: ClassVar[str] = _ATTR
    _slot_layers: dict[int, list[LoraLayer]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        self._linears = {name: module for name, module in self.base.named_modules()
                         if isinstance(module, torch.nn.Linear)}
        self.base.linear_shapes  # noqa: B018 - computed once per base here, not inside the first load's checks
        self._dtype = getattr(torch, self.base.spec.dtype)
        self._device = next(self.base.model.parameters()).device

    def prepare(self, config: dict[str, Any], tensors: dict[str, Any]) -> PreparedLora:
        _check_config(config)
        parts_by_module = _group_by_module(tensors)
        if not parts_by_module:
            raise InvalidAdapterError("the LoRA adapter holds no lora_A/lora_B weights")
        checked = [(name, self._checked(name, parts)) for name, parts in parts_by_module.items()]
        matrices = [parts[part] for _, (_, parts) in checked for part in ("A", "B")]
        place = (_InPlace(matrices) if self._reuses(tensors, matrices) else
                 _NewStorage(sum(matrix.numel() for matrix in matrices), dtype=self._dtype, device=self._device))
        layers = {module_name: self._prepare_layer(module_name, module, parts, config, place)
                  for module_name, (module, parts) in checked}
        return PreparedLora(layers=layers, nbytes=sum(w.nbytes for w in layers.values()))

    def _reuses(self, tensors: dict[str, Any], matrices: list[Any]) -> bool:
        """Whether the prepared weights can live in the memory ``tensors`` were read into (no new storage).

        Only for weights handed over in a buffer of their own (:class:`SafetensorsViews`), stored
        contiguous in float32 like a float32 base on the CPU.
        """
        import torch

        return (isinstance(tensors, SafetensorsViews) and self._dtype == torch.float32
                and self._device.type == "cpu"
                and all(m.dtype == torch.float32 and m.device.type == "cpu" and m.is_contiguous() for m in matrices))

    def _checked(self, module_name: str, parts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The linear layer ``module_name`` names, once its ``lora_A`` / ``lora_B`` are known to fit it."""
        module = self._linears.get(module_name)
        if module is None:
            raise IncompatibleBaseError(f"the adapter targets {module_name!r}, which is not a linear layer of base "
                                        f"{self.base.spec.name!r}; was it trained for another model?")
        if "A" not in parts or "B" not in parts:
            raise InvalidAdapterError(f"the adapter lacks lora_A or lora_B weights for {module_name!r}")
        A, B = parts["A"], parts["B"]
        rank = A.shape[0]
        if tuple(A.shape) != (rank, module.in_features) or tuple(B.shape) != (module.out_features, rank):
            raise IncompatibleBaseError(
                f"shape mismatch at {module_name!r}: lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} do not fit "
                f"a linear layer of {module.in_features} -> {module.out_features} features; the adapter belongs to "
                "another base")
        return module, parts

    def _prepare_layer(self, module_name: str, module: Any, parts: dict[str, Any], config: dict[str, Any],
                       place: Any) -> LoraWeights:
        """One layer's weights; ``place`` stores ``A`` and ``B'`` (see :func:`transposed_into`)."""
        import torch

        A, B = parts["A"], parts["B"]
        rank = A.shape[0]
        scaling = _scaling(config, module_name, rank)
        gain: Any = scaling  # B' = gain * B, formed in float32: a number, or one per output row with DoRA
        dora_gain = None
        if config.get("use_dora"):
            if "magnitude" not in parts:
                raise InvalidAdapterError(f"use_dora is set but {module_name!r} has no lora_magnitude_vector")
            if "bias" in parts:
                raise InvalidAdapterError("DoRA together with lora_bias is not supported by the runtime")
            g = _dora_factor(module, A, B, parts["magnitude"], scaling, self._device)  # before A, B are placed
            gain = g * scaling
            dora_gain = owned(g - 1, dtype=self._dtype, device=self._device)
        bias = parts.get("bias")
        if bias is not None:
            bias = owned(bias.to(self._device, torch.float32) * gain, dtype=self._dtype, device=self._device)
        return LoraWeights(A=place(A), B=place(B, gain), bias=bias, dora_gain=dora_gain)


class _NewStorage:
    """Places prepared matrices one after another in one new storage (one allocation for an adapter)."""

    def __init__(self, numel: int, *, dtype: Any, device: Any) -> None:
        self.store = fresh_tensor(numel, dtype=dtype, device=device)
        self.offset = 0

    def __call__(self, matrix: Any, gain: Any = None) -> Any:
        view = transposed_into(self.store, self.offset, matrix, gain)
        self.offset += matrix.numel()
        return view


class _InPlace:
    """Places each prepared matrix in the memory it was read into, through a small reused scratch copy.

    The matrix's own bytes then hold its compact transposed form: nothing new is allocated, and
    the copies run on data already in the CPU caches (a new storage costs a page fault per 4 KiB
    and a second pass over memory).
    """

    def __init__(self, matrices: list[Any]) -> None:
        import torch

        self.scratch = torch.empty(max(matrix.numel() for matrix in matrices), dtype=torch.float32)

    def __call__(self, matrix: Any, gain: Any = None) -> Any:
        import torch

        rows, columns = matrix.shape
        source = torch.as_strided(self.scratch, (rows, columns), (columns, 1))
        source.copy_(matrix)
        return transposed_into(matrix, matrix.storage_offset(), source, gain)  # back over its own bytes


def transposed_into(store: Any, offset: int, matrix: Any, gain: Any = None) -> Any:
    """``matrix`` ``[m, n]`` (times ``gain``: a number, or a ``[m]`` tensor) written into ``store``'s storage
    from element ``offset`` as compact, contiguous ``[n, m]``; returns the ``[m, n]`` view of it.

    The per-row path stacks ``A.t()`` / ``B.t()`` of several adapters for ``bmm``: stored this way
    the stack copies contiguous blocks and ``bmm`` reads its operands as laid out (measured on
    CPU: a mixed 8-adapter LoRA update 35% faster than from ``[r, in]`` storage); ``F.linear`` and
    ``addmm_`` take the transposed view at no cost.

    One strided copy from the stored ``matrix`` (on CPU, writing through the strided view is about
    twice as fast as ``.t().contiguous()``), converting to ``store``'s dtype and device with the same
    result as ``(matrix.to(float32) * gain).to(dtype)``: the product is formed in float32 and rounded once.
    """
    import torch

    rows, columns = matrix.shape
    view = torch.as_strided(store, (rows, columns), (1, rows), offset)
    if matrix.device != store.device:
        matrix = matrix.to(store.device)  # one contiguous transfer, then the strided copy on the device
    if matrix.dtype not in (torch.float32, store.dtype):
        matrix = matrix.to(torch.float32)  # e.g. float64 weights: rounded once, to float32, as before
    if gain is None:
        view.copy_(matrix)
    else:
        torch.mul(matrix.to(torch.float32), gain[:, None] if isinstance(gain, torch.Tensor) else gain, out=view)
    return view


def _check_config(config: dict[str, Any]) -> None:
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise InvalidAdapterError(f"the adapter uses {what} ({key}={config[key]!r}), which the runtime does not "
                                      "serve; retrain or export it as plain LoRA/DoRA")
    if config.get("bias", "none") != "none":
        raise InvalidAdapterError(f"the adapter trains base biases (bias={config['bias']!r}), which the runtime "
                                  "does not serve; use bias='none' (or lora_bias=True)")
    if config.get("init_lora_weights") == "mica":
        raise InvalidAdapterError("MiCA adapters are not supported by the runtime")


def _group_by_module(tensors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    modules: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        parsed = parse_key(key)
        if parsed is None or parsed.part is None:
            what = "LoRA on embedding layers" if "lora_embedding" in key else "this weight"
            raise InvalidAdapterError(f"unsupported adapter weight {key!r} ({what} is not served by the runtime)")
        modules.setdefault(parsed.module, {})[parsed.part] = tensor
    return modules


def _scaling(config: dict[str, Any], module_name: str, rank: int) -> float:
    """PEFT's scaling: the alpha of the first matching ``alpha_pattern`` key, over r or sqrt(r)."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module_name):
            alpha = value
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _dora_factor(module: Any, A: Any, B: Any, magnitude: Any, scaling: float, device: Any) -> Any:
    """DoRA's ``m / ||W + s B A||`` per output row, in float32 (PEFT computes it in the adapter's fp32)."""
    import torch

    weight = _dense_weight(module).to(device=device, dtype=torch.float32)
    lora_weight = B.to(device, torch.float32) @ A.to(device, torch.float32)
    norm = torch.linalg.norm(weight + scaling * lora_weight, dim=1)
    return magnitude.to(device, torch.float32) / norm


def _dense_weight(module: Any) -> Any:
    """The weight ``[out, in]`` the layer really applies.

    bitsandbytes layers are read by pushing the identity through their own
    forward: dequantising ``weight.data`` directly is wrong once bitsandbytes has
    repacked it for its CPU kernels (it does so on the first forward).
    """
    import torch

    weight = module.weight
    if type(weight).__name__ not in ("Params4bit", "Int8Params"):
        return weight
    dtype = getattr(module, "compute_dtype", None) or torch.float32
    eye = torch.eye(module.in_features, dtype=dtype, device=weight.device)
    with torch.no_grad(), routed(None):
        applied = module(eye).float()  # [in, out] = eye @ W.T + bias
    if module.bias is not None:
        applied = applied - module.bias.float()
    return applied.T
