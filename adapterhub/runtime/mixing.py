"""Weighted mixes of resident LoRA-family adapters, computed per row at run time.

A row may name a mix instead of one adapter: ``{"finance": 0.7, "legal": 0.3}``
in Python, or the string ``"finance:0.7+legal:0.3"`` — the form the HTTP
service takes as its ``model`` (adapter names never contain ``:`` or ``+``; a
reference may carry a version, ``"finance@2:0.7+legal:0.3"``). In every LoRA layer
the mix adds, for the row's input ``x``::

    delta(x) = sum_i w_i * s_i * B_i @ A_i @ x        (s_i: adapter i's own scaling)

which is exactly what PEFT computes for the ``cat`` merge of those adapters with
those weights (``add_weighted_adapter(..., combination_type="cat")``: ``A`` stacks
``w_i * s_i * A_i``, ``B`` stacks ``B_i``, scaling 1). Nothing is merged or stored:
for the duration of one call a :class:`MixedWeights` in each layer reads the
resident adapters' own tensors. Prefix, IA³ and bottleneck adapters, DoRA and
``lora_bias`` cannot join a mix (they are not sums of low-rank deltas).

>>> parse_mix("finance:0.7+legal:0.3")
Mix(parts=(('finance', 0.7), ('legal', 0.3)))
>>> parse_mix("finance") is None, parse_mix("hf://acme/legal") is None
(True, True)
>>> str(Mix.of({"finance": 0.7, "legal": 0.3}))
'finance:0.7+legal:0.3'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

from .. import methods
from ..errors import ConfigError
from ..prompts import TaskSpec
from .batch import UNSET, row_names
from .slots import ResidentAdapter

MIXABLE = tuple(name for name in methods.names() if methods.get(name).mixable)
"""Methods whose adapters can join a weighted mix (their layers add low-rank deltas; each spec's ``mixable``)."""


@dataclass(frozen=True)
class Mix:
    """Adapter names (or references) and their weights, in the order given."""

    parts: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, value: Mapping[str, Any] | Mix) -> Mix:
        """A mix from ``{name: weight}``.

        Raises:
            ConfigError: empty, a name that is not a string, or a weight that is not a finite number.
        """
        if isinstance(value, Mix):
            return value
        if not value:
            raise ConfigError("a weighted mix needs at least one adapter, e.g. {'finance': 0.7, 'legal': 0.3}")
        parts = []
        for name, weight in value.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"a weighted mix maps adapter names to weights; got the key {name!r}")
            try:
                number = float(weight)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(weight, bool) or not math.isfinite(number):
                raise ConfigError(f"weight {weight!r} of {name!r} in a mix must be a finite number, "
                                  "e.g. {'finance': 0.7, 'legal': 0.3}")
            parts.append((name, number))
        return cls(tuple(parts))

    def __str__(self) -> str:
        return format_mix(dict(self.parts))


def parse_mix(text: str) -> Mix | None:
    """The mix a ``"name:weight+name:weight"`` string names, or ``None`` when it names one adapter.

    Every term must end in ``:<number>``; a plain name or an ``hf://`` reference is not a mix.

    Raises:
        ConfigError: a string that looks like a mix (``+`` between terms) but has a term without a weight.

    >>> parse_mix("medical@3:1")
    Mix(parts=(('medical@3', 1.0),))
    """
    terms = text.split("+")
    parts: dict[str, float] = {}
    for term in terms:
        name, sep, weight = term.strip().rpartition(":")
        try:
            value = float(weight) if sep and name else None
        except ValueError:
            value = None
        if value is None:
            if len(terms) == 1:
                return None
            raise ConfigError(f"{text!r} looks like a weighted mix but {term!r} has no ':weight'; write "
                              "'finance:0.7+legal:0.3'")
        if name in parts:
            raise ConfigError(f"{name!r} appears twice in the mix {text!r}; give each adapter once")
        parts[name] = value
    return Mix.of(parts)


def format_mix(weights: Mapping[str, float]) -> str:
    """The string form of a mix (what :func:`parse_mix` reads back).

    >>> format_mix({"finance": 0.7, "legal": 0.3})
    'finance:0.7+legal:0.3'
    """
    return "+".join(f"{name}:{weight:g}" for name, weight in weights.items())


def as_row(value: Any) -> RowDomain:
    """One row's ``domain``: ``None``, an adapter name, a :class:`Mix` (from a dict or a mix string), or a held pin.

    A held pin (a :class:`~adapterhub.runtime.slots.ResidentAdapter` or :class:`MixLease` from
    ``Residency.pin`` / ``pin_mix``) is used as it is: the call does not pin it again.

    Raises:
        ConfigError: any other type, or a malformed mix.
    """
    if value is None or isinstance(value, (Mix, ResidentAdapter, MixLease)):
        return value
    if isinstance(value, Mapping):
        return Mix.of(value)
    if isinstance(value, str):
        return parse_mix(value) or value
    raise ConfigError(f"a domain is an adapter name, a {{name: weight}} mix or None, not {type(value).__name__}")


def call_rows(count: int, domain: Any, domains: Sequence[Any] | None, *, default: Any) -> list[RowDomain]:
    """One entry per row of a call from its ``domain=`` / ``domains=`` arguments (see :func:`as_row`).

    Args:
        count: rows in the call.
        domain: one domain for every row, or :data:`~adapterhub.runtime.batch.UNSET` (then ``default``).
        domains: one domain per row, or ``None``.
        default: the hub's current domain, used when neither is given.

    Raises:
        ConfigError: both ``domain`` and ``domains`` given, or ``domains`` of another length than ``count``.

    >>> call_rows(2, UNSET, None, default="legal")
    ['legal', 'legal']
    """
    if domains is None:
        return [as_row(default if domain is UNSET else domain)] * count
    if domain is not UNSET:
        raise ConfigError("pass domain= (one adapter for all rows) or domains= (one per row), not both")
    return [as_row(name) for name in row_names(domains, count)]


def row_label(row: RowDomain) -> str | None:
    """How error messages name a row's domain: the adapter name, the mix string, or ``None`` (bare base).

    >>> row_label(parse_mix("finance:0.7+legal:0.3"))
    'finance:0.7+legal:0.3'
    """
    return None if row is None else row if isinstance(row, str) else str(row) if isinstance(row, Mix) else row.name


@dataclass
class MixRow:
    """A mix resolved for one call: resident entries and weights, and the virtual slot its rows use."""

    mix: Mix
    parts: list[tuple[ResidentAdapter, float]]
    slot: int
    method: str = "lora"  # its rows are routed like LoRA rows (through the layers)
    task: TaskSpec = field(default_factory=TaskSpec)

    @property
    def name(self) -> str:
        """The mix string (what error messages and reports name the mix by)."""
        return str(self.mix)

    def __repr__(self) -> str:
        return f"'{self.mix}'"


@dataclass(repr=False)
class MixLease(MixRow):
    """A weighted mix held by a caller (``Residency.pin_mix``): a :class:`MixRow` whose adapters stay pinned,
    and whose virtual slot stays installed, until ``Residency.unpin`` releases it."""

    installed: ExitStack = field(default_factory=ExitStack)  # the virtual slot in every layer its adapters touch

    @classmethod
    def holding(cls, row: MixRow, installed: ExitStack) -> MixLease:
        """``row`` held until release: ``installed`` closes then (its adapters are pinned by the caller)."""
        return cls(**vars(row), installed=installed)


RowDomain = Union[str, Mix, ResidentAdapter, MixLease, None]
"""One row of a call as the caller names it: an adapter name, a weighted mix, a held pin, or ``None``."""


def resolve(rows: Sequence[Any], resolved: Mapping[str, Any], *, new_slot: Any) -> dict[Mix, MixRow]:
    """A :class:`MixRow` for every distinct mix among ``rows``, from the resident entries by name.

    Args:
        rows: each row's name, :class:`Mix` or ``None``.
        resolved: resident entries (pinned for the call) by name.
        new_slot: gives a fresh, unique slot id.

    Raises:
        ConfigError: a mix holds an adapter that cannot mix (see :func:`check_mixable`).
    """
    mixes: dict[Mix, MixRow] = {}
    for mix in dict.fromkeys(row for row in rows if isinstance(row, Mix)):
        entries = [resolved[name] for name, _ in mix.parts]
        check_mixable(mix, entries)
        parts = [(entry, weight) for entry, (_, weight) in zip(entries, mix.parts)]
        mixes[mix] = MixRow(mix=mix, parts=parts, slot=new_slot(), task=mix_task(parts))
    return mixes


def check_mixable(mix: Mix, entries: Sequence[Any]) -> None:
    """Raise unless every adapter of ``mix`` is of a LoRA-family method.

    Raises:
        ConfigError: a prefix, IA³ or bottleneck adapter in the mix.
    """
    for (name, _), entry in zip(mix.parts, entries):
        if entry.method not in MIXABLE:
            raise ConfigError(f"{name!r} is a {entry.method} adapter and cannot join the weighted mix '{mix}': mixes "
                              f"add low-rank deltas, so only {' and '.join(MIXABLE)} adapters mix. Give it a row of "
                              "its own instead (domains=[...])")


def mix_task(parts: Sequence[tuple[Any, float]]) -> TaskSpec:
    """The task a mix answers with: that of its heaviest adapter (the first one on ties)."""
    heaviest = max(range(len(parts)), key=lambda i: (abs(parts[i][1]), -i))
    return parts[heaviest][0].task


class MixedWeights:
    """A LoRA layer's view of one mix: ``sum_i w_i * (x @ A_i.T) @ B_i.T`` from the adapters' own tensors.

    Quacks like :class:`~adapterhub.methods.lora.layer.LoraWeights`; ``A``/``B`` (the
    ``cat`` form) are built only if the layer's gathered path asks for them.
    """

    def __init__(self, parts: list[tuple[Any, float]]) -> None:
        self.parts = parts  # (LoraWeights, weight)
        self.bias = None
        self.dora_gain = None
        self.scale = None  # each part's own scaling is in its folded B (or applied with its weight)
        self._cat: tuple[Any, Any] | None = None

    @property
    def nbytes(self) -> int:
        return 0

    @property
    def folded_B(self) -> Any:
        return self.B

    @property
    def A(self) -> Any:  # [sum r, in]
        return self._concatenated()[0]

    @property
    def B(self) -> Any:  # [out, sum r]
        return self._concatenated()[1]

    def _concatenated(self) -> tuple[Any, Any]:
        import torch

        if self._cat is None:
            self._cat = (torch.cat([w.A for w, _ in self.parts]),
                         torch.cat([w.folded_B * weight for w, weight in self.parts], dim=1))
        return self._cat

    def add_to(self, x: Any, out: Any, base_bias: Any) -> None:
        import torch.nn.functional as F

        flat = out.view(-1, out.shape[-1])
        for weights, weight in self.parts:
            hidden = F.linear(x if x.dtype == weights.A.dtype else x.to(weights.A.dtype), weights.A)
            hidden = hidden.view(-1, weights.A.shape[0])
            weight = weight if weights.scale is None else weight * weights.scale
            if flat.dtype == hidden.dtype:
                flat.addmm_(hidden, weights.B.t(), alpha=weight)
            else:
                flat.add_((hidden @ weights.B.t() * weight).to(flat.dtype))


@contextmanager
def installed(methods: Mapping[str, Any], rows: Sequence[MixRow]) -> Iterator[None]:
    """Within the block, each mix's virtual slot answers in every layer one of its adapters touches.

    Raises:
        ConfigError: an adapter of a mix uses DoRA or ``lora_bias`` (not a sum of low-rank deltas).
    """
    placed: list[tuple[Any, int]] = []
    try:
        for row in rows:
            per_layer: dict[int, tuple[Any, list[tuple[Any, float]]]] = {}
            for entry, weight in row.parts:
                for layer in methods[entry.method].slot_layers(entry.slot):
                    weights = layer.weights[entry.slot]
                    if weights.bias is not None or weights.dora_gain is not None:
                        raise ConfigError(f"{entry.name!r} uses DoRA or lora_bias and cannot join the weighted mix "
                                          f"'{row.mix}'; only plain LoRA and AdaLoRA adapters mix")
                    per_layer.setdefault(id(layer), (layer, []))[1].append((weights, weight))
            for layer, parts in per_layer.values():
                layer.weights[row.slot] = MixedWeights(parts)
                placed.append((layer, row.slot))
        yield
    finally:
        for layer, slot in placed:
            layer.weights.pop(slot, None)
