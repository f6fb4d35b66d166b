"""``AdapterHub``: one resident base, hot-swapped and mixed-domain adapters.

>>> from adapterhub import AdapterHub
>>> hub = AdapterHub()                                   # doctest: +SKIP
>>> hub.load("finance"); hub.load("/path/to/peft_dir", name="legal")  # doctest: +SKIP
>>> hub.generate(["Summarise ...", "Is this clause ..."], domains=["finance", "legal"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

from ..base import embedded
from .._transformers import text_config
from ..errors import (AdapterInUseError, AdapterNotFoundError, ConfigError, InvalidNameError, MemoryBudgetError,
                      UnknownDomainError)
from ..methods import method_from_config
from . import mixing, sources
from .batch import UNSET as _UNSET, RowRouting, row_names
from .decoder import DecoderCalls
from .encoder import EncoderCalls
from .heads import HeadBank, default_task, split_payload
from .methods import build_methods, route
from .mixing import Mix
from .slots import Residency, ResidentAdapter, ResidentInfo, SlotsBusyError

class AdapterHub(DecoderCalls, EncoderCalls):
    """One frozen base model serving many adapters, switched per call or mixed per row.

    On a decoder base: ``generate``, ``predict``, ``label_scores``, ``logits``
    (:class:`~adapterhub.runtime.decoder.DecoderCalls`); on an encoder base
    (``AdapterHub("minilm-l6")``): ``classify``, ``tag``, ``analyze``, ``head_logits``
    (:class:`~adapterhub.runtime.encoder.EncoderCalls`), each row with its adapter's own head.

    Args:
        base: an alias (``"smollm2-135m-instruct"``, ``"minilm-l6"``), a local directory, a Hugging
            Face id, or an already loaded :class:`adapterhub.base.Base`.
        quantize: ``None``, ``"nf4"``, ``"fp4"`` or ``"int8"`` (when ``base`` is a name).
        registry: a :class:`~adapterhub.registry.Registry`, a registry root path,
            or ``None`` for the default registry.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (when ``base`` is a name).
        max_resident: most adapters kept loaded; the least recently used is evicted.
        memory_budget_mb: most MiB of adapter weights kept loaded.
        slot_wait_s: how long a call waits for a slot when every slot is held by running calls
            (then :class:`MemoryBudgetError`); a call that needs more slots than the limits allow fails at once.

    Raises:
        ConfigError: bad limits, or quantize/device given with a loaded ``Base``.

    >>> hub = AdapterHub("smollm2-135m-instruct", max_resident=8)  # doctest: +SKIP
    >>> hub.load("legal@2").name  # doctest: +SKIP
    'legal'
    """

    def __init__(self, base: Any = embedded.DEFAULT_ALIAS, *, quantize: str | None = None, registry: Any = None,
                 device: str = "auto", max_resident: int | None = None,
                 memory_budget_mb: float | None = None, slot_wait_s: float = 30.0) -> None:
        from ..base.loading import Base, load_base

        budget = None if memory_budget_mb is None else int(memory_budget_mb * 2**20)
        self._residency = Residency(max_resident=max_resident, budget_bytes=budget)  # checks the limits first
        if isinstance(base, Base):
            if quantize not in (None, base.spec.quantize) or device not in ("auto", base.spec.device):
                raise ConfigError("quantize= and device= apply when the hub loads the base; this Base is already "
                                  f"loaded ({base.spec.quantize or 'unquantised'} on {base.spec.device})")
            self.base = base
        else:
            self.base = load_base(os.fspath(base), quantize=quantize, device=device)
        self._methods = build_methods(self.base)
        self._heads = HeadBank()  # encoder adapters' task heads, by slot
        self._registry_arg = registry
        self._registry: Any = _UNSET
        if not (isinstance(slot_wait_s, (int, float)) and slot_wait_s >= 0):
            raise ConfigError(f"slot_wait_s={slot_wait_s!r} must be a number of seconds >= 0")
        self._lock = threading.RLock()
        self._slot_freed = threading.Condition(self._lock)  # notified whenever a pin is released or a slot freed
        self._slot_wait_s = float(slot_wait_s)
        self._sources: dict[str, str] = {}  # name -> source, kept after eviction so it reloads on next use
        self._default: str | None = None
        self._scope: ContextVar[Any] = ContextVar(f"adapterhub_scope_{id(self)}", default=_UNSET)
        self._device = next(self.base.model.parameters()).device
        weakref.finalize(self, self._residency.release_all, self._methods)

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

        >>> hub.load("/adapters/finance-r16", name="finance").method  # doctest: +SKIP
        'lora'
        """
        with self._lock:
            entry = self._load(ref_or_path, name=name, protect=frozenset())
            return self._info(entry)

    def unload(self, name: str) -> bool:
        """Free an adapter's slot; returns whether it was resident.

        Raises:
            AdapterInUseError: a running call is using it.
        """
        with self._lock:
            entry = self._residency.get(name)
            if entry is not None and entry.pins:
                raise AdapterInUseError(f"adapter {name!r} is in use by a running call; unload it after the call "
                                        "returns")
            self._sources.pop(name, None)
            if self._default == name:
                self._default = None
            if entry is None:
                return False
            self._evict(entry)
            return True

    def resident(self) -> list[ResidentInfo]:
        """Resident adapters (name, method, bytes, last use, ...), most recently used first."""
        with self._lock:
            return self._residency.report()

    def close(self) -> None:
        """Unload every adapter (the base stays loaded and unchanged for other users)."""
        with self._lock:
            for entry in self._residency.entries():
                self._evict(entry)
            self._sources.clear()
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
        if self._registry is _UNSET:
            self._registry = sources.open_registry(self._registry_arg)
        return self._registry

    @property
    def domain(self) -> str | None:
        """The adapter calls use when they name none (``using`` scope, else ``switch``)."""
        scoped = self._scope.get()
        return self._default if scoped is _UNSET else scoped

    def switch(self, name: str | None) -> None:
        """Set the default adapter for calls that name none (``None``: the bare base).

        Loads it first when it is registered but not resident; switching between
        resident adapters only changes which slot rows use (microseconds).

        Raises:
            UnknownDomainError: ``name`` is neither resident nor registered.
        """
        self._default = None if name is None else self._resolve_name(name)

    @contextmanager
    def using(self, name: str | None) -> Iterator[AdapterHub]:
        """Within the block, calls that name no domain use ``name``.

        Scoped by a ``ContextVar``: other threads and asyncio tasks are unaffected.

        >>> with hub.using("legal"):  # doctest: +SKIP
        ...     hub.generate("Is this clause enforceable?")
        """
        token = self._scope.set(None if name is None else self._resolve_name(name))
        try:
            yield self
        finally:
            self._scope.reset(token)

    def stepper(self) -> Any:
        """A :class:`~adapterhub.runtime.stepping.Stepper` over this hub: prefill, decode, merge and drop rows
        of a running batch one token at a time (what a continuous-batching server drives).

        >>> stepper = hub.stepper()  # doctest: +SKIP
        """
        from .stepping import Stepper

        return Stepper(self)

    # --- internals ------------------------------------------------------------------
    def _row_names(self, count: int, domain: Any, domains: Sequence[Any] | None) -> list[str | Mix | None]:
        """One entry per row: an adapter name, a weighted :class:`~adapterhub.runtime.mixing.Mix`, or ``None``."""
        if domains is None:
            return [mixing.as_row(self.domain if domain is _UNSET else domain)] * count
        if domain is not _UNSET:
            raise ConfigError("pass domain= (one adapter for all rows) or domains= (one per row), not both")
        return [mixing.as_row(name) for name in row_names(domains, count)]

    @contextmanager
    def _pinned(self, names: Sequence[str | Mix | None]) -> Iterator[list[Any]]:
        """Resolve (loading if needed) and pin every named adapter for the duration of a call.

        A weighted mix becomes a :class:`~adapterhub.runtime.mixing.MixRow` whose virtual slot
        answers in the layers of its adapters until the call ends.
        """
        components = [part for name in names if isinstance(name, Mix) for part, _ in name.parts]
        resolved: dict[str, ResidentAdapter] = {}
        with self._lock:
            distinct = list(dict.fromkeys(name for name in [*names, *components] if isinstance(name, str)))
            try:
                for name in distinct:  # pinned one by one: waiting for a slot releases the lock
                    entry = self._resolve(name, protect=frozenset(e.name for e in resolved.values()))
                    entry.pins += 1
                    resolved[name] = entry
            except BaseException:
                self._unpin(resolved.values())
                raise
            for entry in resolved.values():
                self._residency.touch(entry)
        try:
            mixes = mixing.resolve(names, resolved, new_slot=self._residency.new_slot)
            with mixing.installed(self._methods, list(mixes.values())):
                yield [None if name is None else mixes[name] if isinstance(name, Mix) else resolved[name]
                       for name in names]
        finally:
            with self._lock:
                self._unpin(resolved.values())

    def _unpin(self, entries: Any) -> None:
        for entry in entries:
            entry.pins -= 1
        self._slot_freed.notify_all()

    def _check_context(self, tokens: int, what: str) -> None:
        """One clear error instead of positions past what the base was trained on (garbage, and slow)."""
        limit = getattr(text_config(self.base.model.config), "max_position_embeddings", None)
        if limit and tokens > limit:
            raise ConfigError(f"{what} needs {tokens} positions but base {self.base.spec.name!r} has a context of "
                              f"{limit} tokens; shorten the input or ask for fewer new tokens")

    def _resolve_name(self, name: str) -> str:
        with self._lock:
            return self._resolve(name, protect=frozenset()).name

    def _resolve(self, name: str, *, protect: frozenset[str]) -> ResidentAdapter:
        entry = self._residency.get(name)
        if entry is not None:
            return entry
        if name in self._sources:  # evicted earlier: reload the same version
            source = self._sources[name]
            payload = sources.fetch(source, registry=self._registry_for(source), base=self.base, name=name)
            return self._install(payload, protect=protect)
        try:
            return self._load(name, name=None, protect=protect)
        except (AdapterNotFoundError, InvalidNameError) as error:
            if sources.is_path(name):
                raise  # a folder: the error says it is missing, not that a domain is unknown
            resident = ", ".join(self._residency.names()) or "none"
            registered = ", ".join(sources.registered_names(self.registry)) or "none"
            raise UnknownDomainError(
                f"unknown domain {name!r}: resident adapters: {resident}; registered: {registered} "
                f"(registry {self.registry.root})", fix=f"load it with hub.load(ref_or_path, name={name!r})",
                cli_fix="`adapterhub registry list` shows the registered adapters (--registry picks another "
                        f"registry); a PEFT folder is written as a path, e.g. ./{name}") from error

    def _load(self, ref: str | os.PathLike, *, name: str | None, protect: frozenset[str]) -> ResidentAdapter:
        name, source = sources.identify(ref, registry=self._registry_for(ref), name=name)
        entry = self._residency.get(name)
        if entry is not None and entry.source == source:
            self._residency.touch(entry)
            return entry
        payload = sources.fetch(source, registry=self._registry_for(source), base=self.base, name=name)
        return self._install(payload, protect=protect)

    def _install(self, payload: sources.AdapterPayload, *, protect: frozenset[str]) -> ResidentAdapter:
        method = self._methods[method_from_config(payload.config)]
        head, config, tensors = split_payload(payload.config, payload.tensors, base=self.base)
        prepared = method.prepare(config, tensors)
        nbytes = prepared.nbytes + (head.nbytes if head is not None else 0)
        task = payload.task if head is None or payload.task.is_encoder_task else default_task(config, head)
        deadline = None
        while True:
            previous = self._residency.get(payload.name)
            if deadline is not None and previous is not None and previous.source == payload.source:
                return previous  # another call loaded it while this one waited
            if previous is not None:  # another version under the same name: replace it
                if previous.pins:
                    raise AdapterInUseError(f"adapter {payload.name!r} is in use by a running call; load the new "
                                            "version after it returns")
                self._evict(previous)
            try:
                victims = self._residency.evictions_for(nbytes, name=payload.name, protect=protect)
                break
            except SlotsBusyError as error:  # running calls hold every slot: wait (bounded) for one to return
                now = time.monotonic()
                deadline = now + self._slot_wait_s if deadline is None else deadline
                if now >= deadline:
                    raise MemoryBudgetError(f"{error} (waited {self._slot_wait_s:g} s for a running call to free a "
                                            "slot; raise slot_wait_s or max_resident)") from None
                self._slot_freed.wait(deadline - now)
        for victim in victims:
            self._evict(victim)
        entry = ResidentAdapter(name=payload.name, slot=self._residency.new_slot(), method=method.name,
                                source=payload.source, nbytes=nbytes, file_bytes=payload.file_bytes,
                                task=task, domain=payload.domain)
        method.install(entry.slot, prepared)
        if head is not None:
            self._heads.install(entry.slot, head)
        self._residency.add(entry)
        self._sources[entry.name] = entry.source
        return entry

    def _evict(self, entry: ResidentAdapter) -> None:
        self._methods[entry.method].remove(entry.slot)
        self._heads.remove(entry.slot)
        self._residency.pop(entry.name)
        self._slot_freed.notify_all()

    def _routing(self, rows: Sequence[ResidentAdapter | None], *, repeat: int = 1) -> RowRouting:
        """How these rows (one resident entry or ``None`` each) reach their adapters."""
        return route(self._methods, [None if entry is None else (entry.method, entry.slot) for entry in rows],
                     repeat=repeat, device=self._device)

    def _registry_for(self, ref: str | os.PathLike) -> Any:
        """The registry, opened only when ``ref`` is a registry reference."""
        return None if sources.is_path(ref) else self.registry

    def _info(self, entry: ResidentAdapter) -> ResidentInfo:
        return next(info for info in self._residency.report() if info.name == entry.name)

    def __repr__(self) -> str:
        return (f"AdapterHub(base={self.base.spec.name!r}, resident={self._residency.names()}, "
                f"domain={self.domain!r})")
