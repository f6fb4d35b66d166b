"""Task models on an encoder base: ``AutoModelFor{Sequence,Token}Classification`` over the same weights.

Training an encoder adapter needs the task model PEFT will later load it into, with a fresh head of
the task's classes; it is loaded the way the :class:`~adapterhub.base.Base` was (dtype, device,
quantisation), from the same files, so the fingerprint stays the base's.

>>> model = load_task_model(base, task_type="TOKEN_CLS", labels=["O", "B-DRUG", "I-DRUG"])  # doctest: +SKIP
>>> model.config.id2label[1]  # doctest: +SKIP
'B-DRUG'
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import BaseModelError

TASK_TYPES = ("SEQ_CLS", "TOKEN_CLS")


def load_task_model(base: Any, *, task_type: str, labels: Sequence[str]) -> Any:
    """A classification model over ``base``'s weights with a new, randomly initialised head.

    Args:
        base: an encoder :class:`~adapterhub.base.Base`.
        task_type: ``"SEQ_CLS"`` or ``"TOKEN_CLS"`` (PEFT's names).
        labels: the head's classes in order (``id2label``).

    Returns:
        The transformers model, frozen body included (PEFT decides what trains).

    Raises:
        BaseModelError: ``base`` is not an encoder, or ``task_type`` is unknown.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from .loading import _bnb_config
    from .quantized import set_cpu_packing

    if base.kind != "encoder":
        raise BaseModelError(f"{task_type} models need an encoder base; {base.spec.name!r} is a {base.kind}")
    if task_type not in TASK_TYPES:
        raise BaseModelError(f"unknown task_type {task_type!r}; use one of {', '.join(TASK_TYPES)}")
    model_class = AutoModelForTokenClassification if task_type == "TOKEN_CLS" else AutoModelForSequenceClassification
    spec = base.spec
    dtype = getattr(torch, spec.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "num_labels": len(labels),
                              "id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}}
    if spec.quantize is not None:
        kwargs["quantization_config"] = _bnb_config(spec.quantize, True, dtype, spec.device)
        kwargs["device_map"] = {"": spec.device}
    model = model_class.from_pretrained(spec.path, **kwargs)
    if spec.quantize is None:
        model.to(spec.device)
    else:
        set_cpu_packing(model, False)  # trained and evaluated on bitsandbytes' unpacked kernel (base.quantized)
    return model
