"""Per-row task heads on one encoder forward: each row's logits from its own adapter's head.

One encoder forward (LoRA deltas routed per row by :class:`~adapterhub.runtime.batch.RowSlots`)
gives hidden states ``[B, T, H]`` and the pooled ``[CLS]`` vector ``[B, H]``. Every adapter
brings its own head, held here per slot; :meth:`HeadBank.apply` receives the same row→slot
indices and nothing else (no names, no residency). Three head shapes cover the BERT family::

    pooled   (BERT, sequence):    logits = pooled @ W.T + b                        -> [labels]
    cls_mlp  (RoBERTa, sequence): logits = out(tanh(dense(hidden[:, 0])))           -> [labels]
    tokens   (any, token):        logits = hidden @ W.T + b                         -> [T, labels]

which is what ``AutoModelFor{Sequence,Token}Classification`` computes in eval mode (dropout is
the identity). Rows without a head (bare rows, or rows of a head-less slot) get ``None``.

>>> bank = HeadBank()
>>> bank.install(3, HeadWeights(kind="pooled", weight=eye, bias=zeros))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import methods
from ..errors import IncompatibleBaseError, InvalidAdapterError
from ..memory import owned, tensor_bytes
from ..methods.heads import split_head
from .batch import RowSlots

HEAD_KINDS = ("pooled", "cls_mlp", "tokens")


@dataclass
class HeadWeights:
    """One adapter's head, on the base's device and dtype."""

    kind: str  # one of HEAD_KINDS
    weight: Any  # [labels, hidden]
    bias: Any = None  # [labels]
    dense_weight: Any = None  # [hidden, hidden] (cls_mlp)
    dense_bias: Any = None  # [hidden] (cls_mlp)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.weight, self.bias, self.dense_weight, self.dense_bias)

    @property
    def num_labels(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, hidden: Any, pooled: Any) -> Any:
        """Logits of some rows: ``[n, labels]`` (sequence) or ``[n, T, labels]`` (tokens)."""
        import torch.nn.functional as F

        if self.kind == "tokens":
            return F.linear(hidden, self.weight, self.bias)
        if self.kind == "pooled":
            return F.linear(pooled, self.weight, self.bias)
        first = F.linear(hidden[:, 0], self.dense_weight, self.dense_bias).tanh()
        return F.linear(first, self.weight, self.bias)


class HeadBank:
    """Heads by slot; :meth:`apply` is the per-row math."""

    def __init__(self) -> None:
        self.heads: dict[int, HeadWeights] = {}

    def install(self, slot: int, head: HeadWeights) -> None:
        self.heads[slot] = head

    def remove(self, slot: int) -> None:
        self.heads.pop(slot, None)

    def apply(self, hidden: Any, pooled: Any, rows: RowSlots) -> list[Any]:
        """Each row's logits (float32, on the hidden states' device) or ``None`` where it has no head.

        Args:
            hidden: ``[B, T, H]`` last hidden states.
            pooled: ``[B, H]`` pooler output, or ``None`` when the body has no pooler.
            rows: one slot per row (``BARE``: no adapter).

        Returns:
            ``B`` entries: ``[labels]`` for sequence heads, ``[T, labels]`` for token heads.
        """
        out: list[Any] = [None] * hidden.shape[0]
        for slot, index in rows.groups:  # one small matmul per head present
            head = self.heads.get(slot)
            if head is None:
                continue
            part_hidden = hidden[index]
            part_pooled = None if pooled is None else pooled[index]
            if head.kind == "pooled" and part_pooled is None:
                raise IncompatibleBaseError("a pooled classification head needs a base with a pooler")
            logits = head.logits(part_hidden, part_pooled).float()
            positions = range(index.start, index.stop) if isinstance(index, slice) else index.tolist()
            for offset, row in enumerate(positions):
                out[row] = logits[offset]
        return out


def prepare_head(config: dict[str, Any], head_tensors: dict[str, Any], *, base: Any) -> HeadWeights:
    """Check a saved head against the encoder base and lay it out for :class:`HeadBank`.

    Args:
        config: ``adapter_config.json`` (``task_type`` SEQ_CLS or TOKEN_CLS).
        head_tensors: the head's tensors keyed like ``"classifier.weight"`` (see :func:`split_head`).
        base: the encoder :class:`adapterhub.Base`.

    Raises:
        InvalidAdapterError: a head layout the runtime does not know.
        IncompatibleBaseError: the head does not read the base's hidden size, or needs a pooler it lacks.
    """
    import torch

    dtype, device = getattr(torch, base.spec.dtype), next(base.model.parameters()).device
    hidden = int(base.spec.hidden_size)
    weights = {key.split(".", 1)[1]: value for key, value in head_tensors.items()}  # drop the module name
    take = lambda key: None if key not in weights else owned(weights[key], dtype=dtype, device=device)  # noqa: E731
    token = config.get("task_type") == "TOKEN_CLS"
    if "weight" in weights:
        kind = "tokens" if token else "pooled"
        if kind == "pooled" and getattr(base.model, "pooler", None) is None:
            raise IncompatibleBaseError(f"the adapter's sequence head reads the pooled [CLS] vector but base "
                                        f"{base.spec.name!r} has no pooler")
        head = HeadWeights(kind=kind, weight=take("weight"), bias=take("bias"))
    elif "out_proj.weight" in weights and "dense.weight" in weights and not token:
        head = HeadWeights(kind="cls_mlp", weight=take("out_proj.weight"), bias=take("out_proj.bias"),
                           dense_weight=take("dense.weight"), dense_bias=take("dense.bias"))
    else:
        raise InvalidAdapterError(f"unknown head layout {sorted(head_tensors)}; the runtime serves a linear "
                                  "classifier (BERT, token heads) or dense + out_proj (RoBERTa sequence heads)")
    if head.weight.shape[-1] != hidden:
        raise IncompatibleBaseError(f"the adapter's head reads {head.weight.shape[-1]} features but base "
                                    f"{base.spec.name!r} has hidden size {hidden}")
    return head


def split_payload(config: dict[str, Any], tensors: dict[str, Any], *, method: str,
                  base: Any) -> tuple[HeadWeights | None, dict[str, Any], dict[str, Any]]:
    """``(head, config without modules_to_save, tensors without the head)`` of an encoder adapter of ``method``.

    On a decoder base nothing is split (the method refuses ``modules_to_save`` itself).

    Raises:
        InvalidAdapterError: an encoder adapter of another method than LoRA, or without a head.
    """
    if getattr(base, "kind", "decoder") != "encoder":
        return None, config, tensors
    if not methods.get(method).encoder:
        served = [methods.get(name) for name in methods.names() if methods.get(name).encoder]
        raise InvalidAdapterError(f"the runtime serves {' and '.join(spec.title for spec in served)} adapters on "
                                  f"encoder bases; this one is {config.get('peft_type')} (train it with "
                                  f"adapter.method: {' or '.join(spec.name for spec in served)})")
    head_tensors, rest = split_head(config, tensors)
    if not head_tensors:
        raise InvalidAdapterError("the encoder adapter has no saved head (modules_to_save); nothing to classify with")
    stripped = {key: value for key, value in config.items() if key != "modules_to_save"}
    return prepare_head(config, head_tensors, base=base), stripped, rest


def default_task(config: dict[str, Any], head: HeadWeights) -> Any:
    """The task of an encoder adapter whose manifest names none (a plain PEFT folder).

    Labels are PEFT's defaults (``LABEL_0``, ...); a token head of ``2k + 1`` tags gets entity
    types ``TYPE_0`` ... ``TYPE_{k-1}`` in the ``O, B-X, I-X, ...`` order adapterhub trains.
    """
    from ..prompts import TaskSpec

    count = head.num_labels
    if config.get("task_type") == "TOKEN_CLS":
        if count % 2 != 1:
            raise InvalidAdapterError(f"the token head has {count} tags, not O plus B-/I- pairs; register it with "
                                      "its task (labels) to serve it")
        return TaskSpec(type="token_classification", labels=tuple(f"TYPE_{i}" for i in range(count // 2)))
    return TaskSpec(type="sequence_classification", labels=tuple(f"LABEL_{i}" for i in range(count)))
