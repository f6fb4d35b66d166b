"""The contenders behind one small interface: the bare base, plain PEFT, and (in ``ours.py``) AdapterHub.

Every measured area drives a :class:`Side` only through ``load``/``unload``,
``switch``, ``forward``, ``generate`` and ``resident_bytes``, so ours and the
baseline run exactly the same workload. Each side owns its own copy of the
base model (PEFT wraps its model in place).

>>> side = PeftSide(load_base("smollm2-135m-instruct"))  # doctest: +SKIP
>>> side.ensure(adapters[:8]); side.switch("bench-03")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

from .._transformers import quiet_peft_wrapping
from .adapters import BenchAdapter


class Side:
    """One contender. Subclasses implement the verbs; :meth:`ensure` is shared."""

    label = "side"

    def __init__(self) -> None:
        self.resident: dict[str, BenchAdapter] = {}

    def load(self, adapter: BenchAdapter) -> None:
        """Make ``adapter`` resident (it is not switched to)."""
        raise NotImplementedError

    def unload(self, name: str) -> None:
        """Drop a resident adapter and free its memory."""
        raise NotImplementedError

    def switch(self, name: str) -> None:
        """Make ``name`` the adapter that later un-routed calls use."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Any], names: Sequence[str | None]) -> Any:
        """Logits for ``batch``; row ``i`` goes through adapter ``names[i]``."""
        raise NotImplementedError

    def generate(self, prompts: Sequence[str], names: Sequence[str], *, new_tokens: int) -> Any:
        """Greedy generation of exactly ``new_tokens`` per row; row ``i`` uses adapter ``names[i]``."""
        raise NotImplementedError

    def resident_bytes(self) -> int:
        """Bytes held for the resident adapters (not the base)."""
        raise NotImplementedError

    def ensure(self, adapters: Sequence[BenchAdapter], *, exact: bool = True) -> None:
        """Make ``adapters`` resident, loading the missing ones in order.

        Args:
            adapters: what must be resident.
            exact: also unload every other adapter (else extra ones may stay).
        """
        wanted = {adapter.name for adapter in adapters}
        for name in [name for name in self.resident if exact and name not in wanted]:
            self.unload(name)
            del self.resident[name]
        for adapter in adapters:
            if adapter.name not in self.resident:
                self.load(adapter)
                self.resident[adapter.name] = adapter

    def load_timed(self, adapter: BenchAdapter, timer: Any) -> float:
        """Seconds to make ``adapter`` resident (it must not be resident yet)."""
        seconds = timer.call(lambda: self.load(adapter))
        self.resident[adapter.name] = adapter
        return seconds

    def close(self) -> None:
        """Free the model (the side is unusable afterwards)."""


class BareSide(Side):
    """The base model alone: the reference every forward ratio divides by."""

    label = "bare"

    def __init__(self, base: Any) -> None:
        super().__init__()
        self.base = base

    def forward(self, batch: dict[str, Any], names: Sequence[str | None]) -> Any:
        import torch

        with torch.inference_mode():
            return self.base.model(**batch).logits

    def close(self) -> None:
        self.base = None


class PeftSide(Side):
    """Plain PEFT as a user would drive it: ``PeftModel`` + ``load_adapter`` / ``set_adapter`` / ``adapter_names``.

    The first adapter wraps the base with ``PeftModel.from_pretrained``; later
    ones use ``load_adapter``. Unloading the last one unwraps the base again.
    """

    label = "peft"

    def __init__(self, base: Any) -> None:
        super().__init__()
        self.base = base
        self.model: Any = None  # the PeftModel once an adapter is resident
        self.base.tokenizer.padding_side = "left"  # decoder-only generation pads on the left

    def load(self, adapter: BenchAdapter) -> None:
        from peft import PeftModel

        if self.model is None:
            with quiet_peft_wrapping():
                self.model = PeftModel.from_pretrained(self.base.model, str(adapter.path), adapter_name=adapter.name)
            self.model.eval()
        else:
            self.model.load_adapter(str(adapter.path), adapter_name=adapter.name)

    def unload(self, name: str) -> None:
        if len(self.resident) == 1:
            self.base.model = self.model.unload()
            self.model = None
        else:
            if self.model.active_adapter == name:
                self.model.set_adapter(next(other for other in self.resident if other != name))
            self.model.delete_adapter(name)

    def switch(self, name: str) -> None:
        self.model.set_adapter(name)

    def forward(self, batch: dict[str, Any], names: Sequence[str | None]) -> Any:
        import torch

        with torch.inference_mode():
            if len(set(names)) == 1 and names[0] is not None:
                if self.model.active_adapter != names[0]:
                    self.model.set_adapter(names[0])
                return self.model(**batch).logits
            routed = [name if name is not None else "__base__" for name in names]
            return self.model(**batch, adapter_names=routed).logits

    def generate(self, prompts: Sequence[str], names: Sequence[str], *, new_tokens: int) -> Any:
        import torch

        tokenizer = self.base.tokenizer
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True) for prompt in prompts]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = {key: value.to(self.base.model.device) for key, value in encoded.items()}
        with torch.inference_mode():
            return self.model.generate(**encoded, adapter_names=list(names), max_new_tokens=new_tokens,
                                       min_new_tokens=new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)

    def resident_bytes(self) -> int:
        if self.model is None:
            return 0
        return sum(param.numel() * param.element_size() for name, param in self.model.named_parameters()
                   if ".lora_" in name)

    def close(self) -> None:
        self.model = None
        self.base = None
