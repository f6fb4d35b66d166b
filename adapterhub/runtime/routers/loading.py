"""Open a router entry for one base, refusing clearly when it no longer matches the registry.

A router is pinned to the exact adapter versions it was built on (``finance@1`` and the sha256 of its
weights). When one of them was removed, or its name now has a newer version, the router refuses
(:class:`~adapterhub.errors.StaleRouterError`) until it is rebuilt: it was never trained on the new one.
"""

from __future__ import annotations

from typing import Any

from ...errors import AdapterNotFoundError, IncompatibleBaseError, RoutingError, StaleRouterError
from ...registry.routers import ROUTER_METHOD
from .model import Router


def open_router(registry: Any, ref: str, *, base: Any = None) -> Router:
    """The router ``ref`` names, checked against ``base`` and the registry's current adapters.

    Raises:
        AdapterNotFoundError: no such entry.
        RoutingError: the entry is an adapter, not a router.
        IncompatibleBaseError: built on another base.
        StaleRouterError: one of its adapters was removed or replaced by a newer version.
    """
    record = registry.get(ref)
    if record.method != ROUTER_METHOD:
        raise RoutingError(f"{record.ref} is a {record.method} adapter, not a router",
                           fix="build one with adapterhub.build_router(name, adapters=[...]) and pass its name")
    loaded = registry.load(record.ref)
    fingerprint = record.base_fingerprint
    if base is not None and fingerprint and fingerprint != base.fingerprint:
        raise IncompatibleBaseError(f"router {record.ref} was built on base {fingerprint!r} but this base is "
                                    f"{base.fingerprint!r}; rebuild it on this base")
    router = Router(ref=record.ref, config=loaded.config, tensors=loaded.tensors)
    check_current(registry, router)
    return router


def check_current(registry: Any, router: Router) -> None:
    """Raise :class:`StaleRouterError` unless every adapter the router chooses is still the version it was built on."""
    for entry in router.config["adapters"]:
        rebuild = f"rebuild it: adapterhub router build {router.ref.split('@')[0]} --adapters " + \
            " ".join(router.names)
        try:
            pinned = registry.get(entry["ref"])
        except AdapterNotFoundError:
            raise StaleRouterError(f"router {router.ref} was built on {entry['ref']}, which is no longer in the "
                                   f"registry", fix=rebuild) from None
        latest = registry.get(entry["name"])
        sha = pinned.manifest.get("files", {}).get("adapter_model.safetensors", {}).get("sha256")
        if latest.version != pinned.version or (entry.get("weights_sha256") and sha != entry["weights_sha256"]):
            raise StaleRouterError(f"router {router.ref} was built on {entry['ref']} but {entry['name']} is now "
                                   f"{latest.ref}; it never saw the new version", fix=rebuild)
