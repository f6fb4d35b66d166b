"""Where adapters come from: a registry reference or a plain PEFT directory.

Everything the runtime needs from storage goes through :func:`identify` and
:func:`fetch` (and :func:`registered_names` for error messages); the rest of
the runtime never touches files or the registry. Both paths read the weights
once, check the adapter against the base (``compat.check_compatible``) and
hand over CPU tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import AdapterNotFoundError, UnknownDomainError
from ..hf.sync import is_hub_ref, pull
from ..registry.files import parse_json, read_regular
from ..registry.manifest import MANIFEST_FILE, WEIGHTS_FILE
from ..prompts import TaskSpec


@dataclass
class AdapterPayload:
    """One adapter read from storage, checked against the base but not yet prepared."""

    name: str
    source: str  # "legal@2" for registry entries, the absolute directory otherwise
    method: str  # the method that checked it against the base (``compat.check_compatible``)
    config: dict[str, Any]
    tensors: dict[str, Any]  # CPU tensors as stored
    file_bytes: int
    task: TaskSpec = field(default_factory=TaskSpec)
    domain: str | None = None
    origin: str = "disk"  # where this read found it: "disk" or "host" (the host tier, runtime/host_tier.py)
    read_seconds: float = 0.0  # how long getting it took


def is_path(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` is written as a folder rather than a registry reference.

    A folder is an ``os.PathLike`` or text with a path separator, a leading ``.``
    or ``~``, or an absolute path; a bare name (``legal``, ``legal@2``) is always a
    registry reference, even when a folder of that name exists here.

    >>> is_path("legal"), is_path("./legal"), is_path("~/adapters/legal"), is_path("hf://acme/legal")
    (False, True, True, False)
    """
    if isinstance(ref, os.PathLike):
        return True
    if is_hub_ref(ref):
        return False
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    return any(sep in ref for sep in separators) or ref.startswith((".", "~")) or os.path.isabs(ref)


def identify(ref: str | os.PathLike, *, registry: Any, name: str | None = None) -> tuple[str, str]:
    """``(name, source)`` of an adapter without reading its weights.

    ``source`` pins what :func:`fetch` will read: the resolved registry reference
    (``"legal@2"``) or the absolute directory.

    Raises:
        AdapterNotFoundError: no such directory, no registry, or no such registry entry.
        InvalidNameError: ``ref`` is not a valid registry reference.
    """
    if is_path(ref):
        path = Path(ref).expanduser().resolve()
        if not path.is_dir():
            raise AdapterNotFoundError(f"adapter directory {path} does not exist")
        manifest = path / MANIFEST_FILE
        recorded = parse_json(read_regular(manifest), where=str(manifest)).get("name") if manifest.is_file() else None
        return name or (recorded if isinstance(recorded, str) else None) or path.name, str(path)
    if registry is None:
        raise AdapterNotFoundError(f"{ref!r} is a registry reference but no registry is available to resolve it; "
                                   f"to load a folder, write it as a path: './{ref}'")
    if is_hub_ref(ref):  # hf://org/repo[@rev]: pulled into the registry once per commit
        record = pull(os.fspath(ref), registry=registry)
        return name or record.name, record.ref
    try:
        record = registry.get(str(ref))
    except AdapterNotFoundError as error:
        if Path(ref).is_dir():
            raise AdapterNotFoundError(f"{error}; a folder {ref!r} exists here — a bare name always means the "
                                       f"registry, so to load the folder write it as a path: './{ref}'") from None
        raise
    return name or record.name, record.ref


def fetch(source: str, *, registry: Any, base: Any, name: str) -> AdapterPayload:
    """Read the adapter at ``source`` (from :func:`identify`) and check it fits ``base``.

    Raises:
        AdapterNotFoundError: the registry entry vanished.
        InvalidAdapterError: the directory is not a safetensors PEFT adapter of a supported method.
        IncompatibleBaseError: it was made for another base (fingerprint, modules or shapes).
        IntegrityError: a registry file does not match its checksum.
    """
    from ..registry.compat import check_compatible

    if not is_path(source):
        loaded = registry.load(source, base=base)  # checked against the base there; it names the method
        record = loaded.record
        size = record.manifest["files"][WEIGHTS_FILE]["size"]
        return AdapterPayload(name=name, source=record.ref, method=loaded.method, config=dict(loaded.config),
                              tensors=loaded.tensors, file_bytes=int(size), task=record.task, domain=record.domain)
    from safetensors.torch import load

    from ..registry.manifest import read_adapter_dir, recorded_fields

    adapter = read_adapter_dir(source)
    manifest = recorded_fields(adapter.manifest or {}, where=str(adapter.path / MANIFEST_FILE))
    method = check_compatible(adapter.config, adapter.tensor_shapes, base, method=adapter.method,
                              fingerprint=(manifest.get("base") or {}).get("fingerprint"))
    weights = adapter.files[WEIGHTS_FILE]
    return AdapterPayload(name=name, source=str(adapter.path), method=method, config=adapter.config,
                          tensors=load(weights), file_bytes=len(weights), task=TaskSpec.from_dict(manifest.get("task")),
                          domain=manifest.get("domain"))


def open_registry(registry: Any) -> Any:
    """A Registry from ``registry`` (a Registry, a root path or ``None`` for the default root)."""
    from ..registry.store import Registry

    return registry if isinstance(registry, Registry) else Registry(registry)


def registered_names(registry: Any) -> list[str]:
    """Names in ``registry`` (empty when there is none or it cannot be read)."""
    if registry is None:
        return []
    try:
        return sorted({record.name for record in registry.list()})
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return []


def unknown_domain(name: str, *, resident: Sequence[str], registry: Any) -> UnknownDomainError:
    """The error for a domain that is neither resident nor registered, listing both (and the registry's root)."""
    registered = ", ".join(registered_names(registry)) or "none"
    return UnknownDomainError(
        f"unknown domain {name!r}: resident adapters: {', '.join(resident) or 'none'}; registered: {registered} "
        f"(registry {registry.root})", fix=f"load it with hub.load(ref_or_path, name={name!r})",
        cli_fix="`adapterhub registry list` shows the registered adapters (--registry picks another "
                f"registry); a PEFT folder is written as a path, e.g. ./{name}")
