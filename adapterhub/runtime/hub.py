"""``AdapterHub``: one resident base, hot-swapped and mixed-domain adapters.

>>> from adapterhub import AdapterHub
>>> hub = AdapterHub()                                   # doctest: +SKIP
>>> hub.load("finance"); hub.load("/path/to/peft_dir", name="legal")  # doctest: +SKIP
>>> hub.generate(["Summarise ...", "Is this clause ..."], domains=["finance", "legal"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Iterator

from ..base import embedded
from ..errors import ConfigError
from .batch import UNSET
from .decoder import DecoderCalls
from .encoder import EncoderCalls
from .residency import Residency
from .routers import RoutingCalls
from .slots import ResidentInfo, check_limits
from .structured import StructuredCalls

if TYPE_CHECKING:
    from .stepping import Stepper


class AdapterHub(DecoderCalls, EncoderCalls, StructuredCalls, RoutingCalls):
    """One frozen base model serving many adapters, switched per call or mixed per row.

    On a decoder base: ``generate``, ``predict``, ``label_scores``, ``logits``
    (:class:`~adapterhub.runtime.decoder.DecoderCalls`); on an encoder base
    (``AdapterHub("minilm-l6")``): ``classify``, ``tag``, ``analyze``, ``head_logits``
    (:class:`~adapterhub.runtime.encoder.EncoderCalls`), each row with its adapter's own head;
    ``extract`` and the adapters' serving contracts: :class:`~adapterhub.runtime.structured.StructuredCalls`.
    Which adapters are loaded, and the pins that keep them there during a call, are
    :attr:`residency` (:class:`~adapterhub.runtime.residency.Residency`). ``domain="auto"`` rows are
    routed by the router :meth:`use_router` sets (:class:`~adapterhub.runtime.routers.RoutingCalls`).

    Args:
        base: an alias (``"smollm2-135m-instruct"``, ``"minilm-l6"``), a local directory, a Hugging
            Face id, or an already loaded :class:`adapterhub.base.Base`.
        quantize: ``None``, ``"nf4"``, ``"fp4"`` or ``"int8"`` (when ``base`` is a name).
        registry: a :class:`~adapterhub.registry.Registry`, a registry root path,
            or ``None`` for the default registry.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (when ``base`` is a name).
        packed_4bit: a 4-bit base on a CPU with AVX512-BF16: ``None`` lets bitsandbytes' packed bf16 kernel
            serve the layers whose widths it takes (same predictions as unpacked on the shipped adapters,
            about 2x faster), ``False`` dequantises every forward (see README "4-bit").
        max_resident: most adapters kept loaded; the least recently used is evicted.
        memory_budget_mb: most MiB of adapter weights kept loaded.
        host_budget_mb: most MiB of read, checked adapters kept in host RAM below the slots (the host tier):
            reloading an evicted adapter from there is a copy, not a disk read (``None``: no host tier).
        slot_wait_s: how long a call waits for a slot when every slot is held by running calls
            (then :class:`MemoryBudgetError`); a call that needs more slots than the limits allow fails at once.

    Raises:
        ConfigError: bad limits, or quantize/device given with a loaded ``Base``.

    >>> hub = AdapterHub("smollm2-135m-instruct", max_resident=8)  # doctest: +SKIP
    >>> hub.load("legal@2").name  # doctest: +SKIP
    'legal'
    """

    def __init__(self, base: Any = embedded.DEFAULT_ALIAS, *, quantize: str | None = None, registry: Any = None,
                 device: str = "auto", packed_4bit: bool | None = None, max_resident: int | None = None,
                 memory_budget_mb: float | None = None, host_budget_mb: float | None = None,
                 slot_wait_s: float = 30.0) -> None:
        from ..base.loading import Base, load_base

        limits = {"max_resident": max_resident, "memory_budget_mb": memory_budget_mb, "slot_wait_s": slot_wait_s,
                  "host_budget_mb": host_budget_mb}
        check_limits(**limits)  # before a base is loaded for them
        if isinstance(base, Base):
            if quantize not in (None, base.spec.quantize) or device not in ("auto", base.spec.device) \
                    or packed_4bit is not None:
                raise ConfigError("quantize=, device= and packed_4bit= apply when the hub loads the base; this Base "
                                  "is already "
                                  f"loaded ({base.spec.quantize or 'unquantised'} on {base.spec.device})")
            self.base = base
        else:
            self.base = load_base(os.fspath(base), quantize=quantize, device=device, packed_4bit=packed_4bit)
        self.residency = Residency(self.base, registry=registry, **limits)
        self._default: str | None = None
        self._scope: ContextVar[Any] = ContextVar(f"adapterhub_scope_{id(self)}", default=UNSET)

    # --- residency -----------------------------------------------------------------
    def load(self, ref_or_path: str | os.PathLike, *, name: str | None = None) -> ResidentInfo:
        """Make an adapter resident (idempotent) and return its entry.

        Args:
            ref_or_path: a registry reference (``"legal"``, ``"legal@2"``, ``"legal@prod"``)
                or a PEFT adapter directory.
            name: the name calls use (default: the registry name, the manifest's name
                or the directory's name).

        Raises:
            AdapterNotFoundError: no such directory or registry entry.
            IncompatibleBaseError: the adapter was made for another base.
            InvalidAdapterError: the method or one of its options is not served.
            MemoryBudgetError: it does not fit the residency limits.
            AdapterInUseError: another version under ``name`` is in use by a running call.

        >>> hub.load("/adapters/finance-r16", name="finance").method  # doctest: +SKIP
        'lora'
        """
        return self.residency.load(ref_or_path, name=name)

    def unload(self, name: str) -> bool:
        """Free an adapter's slot; returns whether it was resident.

        Raises:
            AdapterInUseError: a running call is using it.
        """
        unloaded = self.residency.unload(name)
        if self._default == name:
            self._default = None
        return unloaded

    def resident(self, *, tier: str = "device") -> list[ResidentInfo]:
        """Resident adapters (name, tier, method, bytes, pins, hits, last use, ...), most recently used first.

        Args:
            tier: ``"device"`` (in a slot: what calls use), ``"host"`` (the host tier) or ``"all"``.

        >>> [(info.name, info.tier) for info in hub.resident(tier="all")]  # doctest: +SKIP
        [('legal', 'device'), ('finance', 'host')]
        """
        return self.residency.report(tier=tier)

    def close(self) -> None:
        """Unload every adapter (the base stays loaded and unchanged for other users)."""
        self.residency.close()
        self._default = None

    def __enter__(self) -> AdapterHub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- choosing adapters ----------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def registry(self) -> Any:
        """The :class:`~adapterhub.registry.Registry` names and references resolve in (opened on first use)."""
        return self.residency.registry

    @property
    def domain(self) -> str | None:
        """The adapter calls use when they name none (``using`` scope, else ``switch``)."""
        scoped = self._scope.get()
        return self._default if scoped is UNSET else scoped

    def switch(self, name: str | None) -> None:
        """Set the default adapter for calls that name none (``None``: the bare base).

        Loads it first when it is registered but not resident; switching between
        resident adapters only changes which slot rows use (microseconds).

        Raises:
            UnknownDomainError: ``name`` is neither resident nor registered.
        """
        self._default = None if name is None else self.residency.resolve(name).name

    @contextmanager
    def using(self, name: str | None) -> Iterator[AdapterHub]:
        """Within the block, calls that name no domain use ``name``.

        Scoped by a ``ContextVar``: other threads and asyncio tasks are unaffected.

        >>> with hub.using("legal"):  # doctest: +SKIP
        ...     hub.generate("Is this clause enforceable?")
        """
        token = self._scope.set(None if name is None else self.residency.resolve(name).name)
        try:
            yield self
        finally:
            self._scope.reset(token)

    def stepper(self) -> Stepper:
        """A :class:`~adapterhub.runtime.stepping.Stepper` over this hub: prefill, decode, merge and drop rows
        of a running batch one token at a time (what a continuous-batching server drives).

        >>> stepper = hub.stepper()  # doctest: +SKIP
        """
        from .stepping import Stepper

        return Stepper(self)

    def __repr__(self) -> str:
        return (f"AdapterHub(base={self.base.spec.name!r}, resident={[info.name for info in self.resident()]}, "
                f"domain={self.domain!r})")
