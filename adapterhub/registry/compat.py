"""Does an adapter fit a base model? The fingerprint first, then the method's own shape checks.

Works from the adapter's ``adapter_config.json`` and its tensor shapes alone
(no tensors are loaded), so the registry can check at add time and at load time.
What "fits" means per method lives in :mod:`adapterhub.methods`.

>>> check_compatible(config, shapes, base, fingerprint=None)  # doctest: +SKIP
'lora'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import methods
from ..errors import IncompatibleBaseError, InvalidAdapterError
from ..methods.heads import check_task_fits
from .routers import is_router_config


def check_compatible(config: Mapping[str, Any], tensor_shapes: Mapping[str, tuple[int, ...]], base: Any, *,
                     fingerprint: str | None, method: str | None = None) -> str:
    """Raise unless the adapter fits ``base``; return the name of the method that checked it.

    Args:
        config: the adapter's ``adapter_config.json``.
        tensor_shapes: ``{PEFT weight key: shape}`` from ``adapter_model.safetensors``.
        base: an :class:`adapterhub.Base` (uses ``fingerprint``, ``linear_shapes`` and ``model.config``).
        fingerprint: the base fingerprint recorded with the adapter, if any.
        method: the method name when the caller already read it from ``config``
            (:func:`adapterhub.methods.method_from_config`); read here otherwise.

    Returns:
        The method name (``"lora"``, ...): a loader installs the adapter with it without reading ``config`` again.

    Raises:
        IncompatibleBaseError: another base's fingerprint, a decoder adapter on an encoder base (or the
            reverse), a head that does not read the base's hidden size, a target module the base lacks,
            or a shape that differs (the message names the module and both shapes).
        InvalidAdapterError: a method adapterhub does not know.

    >>> check_compatible({"peft_type": "LORA"}, {}, base, fingerprint="llama-x")  # doctest: +SKIP
    Traceback (most recent call last):
    IncompatibleBaseError: adapter was made for base 'llama-x' ...
    """
    if is_router_config(config):
        raise InvalidAdapterError("this entry is a router, not an adapter: it chooses adapters and is not loaded as "
                                  "one; use it with domain='auto' (hub.use_router(...)) or adapterhub router evaluate")
    check_task_fits(config, tensor_shapes, base)  # first: "decoder adapter on an encoder" says more than a fingerprint
    if fingerprint and fingerprint != base.fingerprint:
        raise IncompatibleBaseError(
            f"adapter was made for base {fingerprint!r} but this base is {base.fingerprint!r}; "
            "load the base it was trained on, or train the adapter again on this one")
    name = method or methods.method_from_config(config)
    methods.get(name).check_fits(config, tensor_shapes, base)
    return name


def check_one_base(records: Any, base: Any = None, *, purpose: str) -> None:
    """Raise :class:`IncompatibleBaseError` unless ``records`` were all made for one base (and ``base``, if given).

    ``purpose`` ends the message: ``"merge only adapters trained on one base"``.
    """
    fingerprints = {record.ref: record.base_fingerprint for record in records}
    if len(set(fingerprints.values())) > 1:
        listed = ", ".join(f"{ref} -> {fp}" for ref, fp in fingerprints.items())
        raise IncompatibleBaseError(f"the adapters were made for different bases ({listed}); {purpose}")
    recorded = next(iter(fingerprints.values()), None)
    if base is not None and recorded and recorded != base.fingerprint:
        raise IncompatibleBaseError(f"the adapters were made for base {recorded!r} but the given base is "
                                    f"{base.fingerprint!r}; pass the base they were trained on")
