"""Many synthetic adapters of mixed shapes, and the traffic that asks for them.

The mix the many-adapters bench uses (seeded, so every run writes the same files):
80% rank 8 on ``q_proj`` / ``v_proj``, 15% rank 16 on the attention projections,
5% rank 16 on every linear layer but the LM head. Adapter ``i``'s shape comes from a
seeded draw, its weights from seed ``i``; a folder already written is reused.

Traffic is a list of adapter names, one per request: ``one`` (always the first adapter),
``zipf`` (adapter of popularity rank ``k`` with probability ∝ 1/k^α; which adapter has
which rank is a seeded shuffle) or ``uniform``.

>>> [shape.name for shape in SHAPES]
['r8-qv', 'r16-attn', 'r16-all']
>>> choices(["a", "b", "c"], "one", count=4, seed=0)
['a', 'a', 'a', 'a']
>>> sorted(set(choices(["a", "b", "c"], "uniform", count=60, seed=0)))
['a', 'b', 'c']
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError

TRAFFIC = ("one", "zipf", "uniform")


@dataclass(frozen=True)
class Shape:
    """One kind of synthetic adapter: its share of the mix, rank and adapted modules (``None``: all linear)."""

    name: str
    share: float
    rank: int
    modules: tuple[str, ...] | None


SHAPES = (
    Shape("r8-qv", 0.80, 8, ("q_proj", "v_proj")),
    Shape("r16-attn", 0.15, 16, ("q_proj", "k_proj", "v_proj", "o_proj")),
    Shape("r16-all", 0.05, 16, None),
)


@dataclass(frozen=True)
class ManyAdapter:
    """One written adapter: ``name`` (``many-0000``..), its PEFT ``path``, ``shape`` name and ``file_bytes``."""

    name: str
    path: Path
    shape: str
    file_bytes: int


def shape_of(index: int, *, seed: int = 0) -> Shape:
    """The shape of adapter ``index`` (a seeded draw with :data:`SHAPES`' shares)."""
    draw = random.Random(f"{seed}-{index}").random()
    for shape in SHAPES:
        draw -= shape.share
        if draw < 0:
            return shape
    return SHAPES[-1]


def make_many_adapters(base: Any, root: str | Path, *, count: int, seed: int = 0,
                       progress: bool = False) -> list[ManyAdapter]:
    """``count`` adapters of the mixed shapes for ``base`` under ``root`` (reused when already written).

    >>> adapters = make_many_adapters(base, "work/many", count=1000)  # doctest: +SKIP
    >>> adapters[0].name, adapters[0].shape  # doctest: +SKIP
    ('many-0000', 'r8-qv')
    """
    from tqdm.auto import tqdm

    from .adapters import write_lora_adapter

    folder = Path(root) / f"{base.fingerprint}-mixed-s{seed}"
    written = []
    for index in tqdm(range(count), desc="bench many: adapters", unit="adapter", disable=not progress, leave=False):
        shape, name = shape_of(index, seed=seed), f"many-{index:04d}"
        path = folder / name
        if not (path / "adapter_model.safetensors").is_file():
            write_lora_adapter(base, path, rank=shape.rank, seed=seed * 1_000_003 + index, modules=shape.modules)
        written.append(ManyAdapter(name=name, path=path, shape=shape.name,
                                   file_bytes=(path / "adapter_model.safetensors").stat().st_size))
    return written


def register_many(registry: Any, adapters: Sequence[ManyAdapter], *, base: Any, progress: bool = False) -> float:
    """Add every adapter to ``registry`` in batches (:meth:`Registry.add_many`); returns the seconds it took."""
    import time

    from ..registry.entries import NewEntry

    start = time.perf_counter()
    registry.add_many([NewEntry(adapter.path, adapter.name, domain=adapter.shape, tags=("bench",))
                       for adapter in adapters], base=base, batch=250, progress=progress)
    return time.perf_counter() - start


def choices(names: Sequence[str], traffic: str, *, count: int, seed: int = 0, alpha: float = 1.0) -> list[str]:
    """``count`` adapter names drawn as ``traffic`` says (see the module docstring).

    Raises:
        ConfigError: unknown ``traffic``, no names, or ``alpha <= 0``.
    """
    if traffic not in TRAFFIC:
        raise ConfigError(f"unknown traffic {traffic!r}; choose one of {', '.join(TRAFFIC)}")
    if not names or alpha <= 0:
        raise ConfigError(f"traffic needs at least one adapter and alpha > 0, got {len(names)} and {alpha}")
    draw = random.Random(f"traffic-{seed}")
    if traffic == "one":
        return [names[0]] * count
    if traffic == "uniform":
        return [draw.choice(names) for _ in range(count)]
    ranked = list(names)
    draw.shuffle(ranked)  # which adapter is most popular is not tied to its name or shape
    weights = [1.0 / rank ** alpha for rank in range(1, len(ranked) + 1)]
    return draw.choices(ranked, weights=weights, k=count)
