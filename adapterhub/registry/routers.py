"""Router entries in the registry: what a router's two files must hold to be stored, loaded and pushed.

A router is stored like an adapter — ``adapter_config.json`` + ``adapter_model.safetensors`` +
``adapterhub.json`` in ``adapters/<name>/<version>/`` — so versions, tags, checksums, export and the Hub
treat it like any other entry. Its config is not PEFT's: it carries ``"adapterhub_router": 1`` and names
the exact adapter refs it chooses between; its manifest's ``method`` is ``"router"`` and its
``source`` is ``{"kind": "router", "adapters": [...]}`` (the lineage). The math lives in
:mod:`adapterhub.runtime.routers`; the registry only checks that the files fit together.

>>> is_router_config({"adapterhub_router": 1}), is_router_config({"peft_type": "LORA"})
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidAdapterError

ROUTER_METHOD = "router"
"""The manifest ``method`` (and index column) of a router entry."""
ROUTER_FORMAT = 2
"""Format written: 2 (relative Mahalanobis gate, low-rank); format 1 (``whiten``, the plain distance) is still read."""
FORMATS = (1, 2)
GATE = "embedding+block"
"""Format 2's gate: it reads the mean of the text's token embeddings beside the block's."""
HEADS = ("prototype", "linear")


def is_router_config(config: Mapping[str, Any]) -> bool:
    """Whether an ``adapter_config.json`` is a router's (it carries ``adapterhub_router``)."""
    return "adapterhub_router" in config


def check_router_files(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], *, where: str) -> None:
    """Raise :class:`InvalidAdapterError` unless a router's config and tensors fit together.

    Needed: ``adapters`` (two or more ``{"name", "ref"}``), ``layer`` (int >= 0), ``head`` (prototype or
    linear), and tensors ``mean`` / ``scale`` ``[hidden]``, ``prototypes`` / ``centres`` ``[adapters, hidden]``,
    and the gate's: format 2 (``"gate": "embedding+block"``) ``gate_mean`` / ``gate_scale`` ``[2 hidden]``,
    ``centres`` ``[adapters, 2 hidden]``, ``within_*`` and ``overall_*`` (``basis`` ``[rank, 2 hidden]``,
    ``values`` ``[rank]``, ``rest`` ``[1]``); format 1 ``centres`` ``[adapters, hidden]`` and ``whiten``
    ``[hidden, hidden]``. A linear head adds ``weight`` ``[adapters, hidden]`` and ``bias`` ``[adapters]``.
    """
    def bad(why: str) -> InvalidAdapterError:
        return InvalidAdapterError(f"{where}: not a valid router ({why}); rebuild it with adapterhub router build")

    version = config.get("adapterhub_router")
    if version not in FORMATS:
        raise bad(f"format {version!r}, this adapterhub reads formats {', '.join(map(str, FORMATS))}")
    adapters = config.get("adapters")
    if not isinstance(adapters, list) or len(adapters) < 2 or not all(
            isinstance(a, Mapping) and isinstance(a.get("name"), str) and isinstance(a.get("ref"), str)
            for a in adapters):
        raise bad("'adapters' must list two or more {name, ref} objects")
    layer = config.get("layer")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise bad(f"'layer' is {layer!r}, not a whole number >= 0")
    if config.get("head") not in HEADS:
        raise bad(f"'head' is {config.get('head')!r}, not one of {', '.join(HEADS)}")
    hidden = (shapes.get("mean") or (None,))[0]
    wanted = {"mean": (hidden,), "scale": (hidden,), "prototypes": (len(adapters), hidden)}
    if version == 1:
        wanted |= {"centres": (len(adapters), hidden), "whiten": (hidden, hidden)}
    else:
        if config.get("gate") != GATE:
            raise bad(f"'gate' is {config.get('gate')!r}, not {GATE!r}")
        gate = None if hidden is None else 2 * hidden  # the token embeddings' mean, then the block's
        rank = (shapes.get("within_values") or (None,))[0]
        wanted |= {"gate_mean": (gate,), "gate_scale": (gate,), "centres": (len(adapters), gate)}
        for part in ("within", "overall"):
            wanted |= {f"{part}_basis": (rank, gate), f"{part}_values": (rank,), f"{part}_rest": (1,)}
    if config["head"] == "linear":
        wanted |= {"weight": (len(adapters), hidden), "bias": (len(adapters),)}
    for key, shape in wanted.items():
        if tuple(shapes.get(key) or ()) != shape or hidden is None:
            raise bad(f"tensor {key!r} has shape {shapes.get(key)}, expected {shape}")
    extra = set(shapes) - set(wanted)
    if extra:
        raise bad(f"unexpected tensors {sorted(extra)}")
