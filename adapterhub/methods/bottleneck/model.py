"""Bottleneck adapters as plain torch modules, injected into a causal LM for training and evaluation.

:class:`BottleneckModel` plays the part a ``PeftModel`` plays for PEFT methods
(the trainer, checkpoints and evaluation use the same few attributes:
``active_peft_config``, ``get_base_model``, ``disable_adapter``, ``unload``), and
adds ``adapter_state_dict`` / ``load_adapter_state_dict`` in PEFT's key format.
Each adapter is a submodule ``bottleneck`` of the linear layer it follows, run
by a forward hook::

    h = linear(x)                      # [..., H]
    h + up(act(down(dropout(h))))      # down: H -> b, up: b -> H

>>> wrapper = BottleneckModel(model, BottleneckConfig(hidden_size=64))  # doctest: +SKIP
>>> sorted(wrapper.adapter_state_dict())[0]  # doctest: +SKIP
'base_model.model.model.layers.0.mlp.down_proj.bottleneck.down.bias'
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

from ..._transformers import PEFT_KEY_PREFIX
from ...errors import IncompatibleBaseError, InvalidAdapterError
from .config import BottleneckConfig

ATTR = "bottleneck"
ACTIVATIONS = {"relu": torch.nn.functional.relu, "gelu": torch.nn.functional.gelu,
               "silu": torch.nn.functional.silu, "tanh": torch.tanh}


class Bottleneck(torch.nn.Module):
    """``h + up(act(down(dropout(h))))`` with ``up`` initialised to zero (the identity at start).

    Args:
        width: ``H``, the adapted layer's output features.
        size: ``b``, the bottleneck width.
        non_linearity: ``relu``, ``gelu``, ``silu`` or ``tanh``.
        dropout: dropout on the adapter input while training.
    """

    def __init__(self, width: int, size: int, non_linearity: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.down = torch.nn.Linear(width, size)
        self.up = torch.nn.Linear(size, width)
        self.act = ACTIVATIONS[non_linearity]
        self.dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()
        torch.nn.init.normal_(self.down.weight, std=0.02)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(self.dropout(h.to(self.down.weight.dtype))))).to(h.dtype)


class BottleneckModel(torch.nn.Module):
    """A causal LM with bottleneck adapters after every targeted linear layer.

    Args:
        model: the transformers causal LM (frozen; only the adapters train).
        config: where and how big the adapters are.

    Raises:
        IncompatibleBaseError: the model has no module the placement names.
    """

    def __init__(self, model: Any, config: BottleneckConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self._enabled = True
        self._handles: list[Any] = []
        self._modules_adapted: dict[str, Any] = {}
        targets = set(config.target_modules)
        device = next(model.parameters()).device
        for name, module in list(model.named_modules()):
            if name.rsplit(".", 1)[-1] in targets and hasattr(module, "out_features") and not name.endswith(ATTR):
                adapter = Bottleneck(module.out_features, config.bottleneck_size, config.non_linearity, config.dropout)
                module.add_module(ATTR, adapter.to(device))
                self._handles.append(module.register_forward_hook(self._hook))
                self._modules_adapted[name] = module
        if not self._modules_adapted:
            raise IncompatibleBaseError(f"the base has no {' or '.join(sorted(targets))} layers for bottleneck "
                                        f"placement {config.placement!r}; bottleneck adapters support llama-style "
                                        "decoders")

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        return getattr(module, ATTR)(output) if self._enabled else output

    # --- the PeftModel-like surface the trainer and evaluation use ---------------------
    @property
    def active_peft_config(self) -> BottleneckConfig:
        return self.config

    def get_base_model(self) -> Any:
        return self.model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within the block the model computes the bare base."""
        self._enabled = False
        try:
            yield
        finally:
            self._enabled = True

    def unload(self) -> Any:
        """Remove the adapters and hooks; returns the base model unchanged."""
        for handle in self._handles:
            handle.remove()
        for module in self._modules_adapted.values():
            delattr(module, ATTR)
        self._handles, self._modules_adapted = [], {}
        return self.model

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Every adapter tensor under PEFT-style keys (``base_model.model.<module>.bottleneck.down.weight``)."""
        return {f"{PEFT_KEY_PREFIX}{name}.{ATTR}.{key}": tensor.detach()
                for name, module in self._modules_adapted.items()
                for key, tensor in getattr(module, ATTR).state_dict().items()}

    def load_adapter_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy stored tensors (from :meth:`adapter_state_dict` or a saved file) into the adapters.

        Raises:
            InvalidAdapterError: keys missing or left over.
        """
        own = self.adapter_state_dict()
        if set(own) != set(tensors):
            missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
            raise InvalidAdapterError(f"bottleneck weights do not fit the config (missing {missing[:2]}, unexpected "
                                      f"{extra[:2]}); the adapter_config.json and weights do not belong together")
        with torch.no_grad():
            for key, tensor in own.items():
                tensor.copy_(tensors[key])
