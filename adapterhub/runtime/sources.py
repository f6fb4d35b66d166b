"""Where adapters come from: a registry reference or a plain PEFT directory.

Everything the runtime needs from storage goes through :func:`fetch` (and
:func:`registered_names` for error messages); the rest of the runtime never
touches files or the registry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterNotFoundError, IncompatibleBaseError, InvalidAdapterError
from ..prompts import TaskSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "adapterhub.json"


@dataclass
class AdapterPayload:
    """One adapter read from storage, not yet prepared for a base."""

    name: str
    source: str  # "legal@2" for registry entries, the absolute directory otherwise
    config: dict[str, Any]
    tensors: dict[str, Any]  # CPU tensors as stored
    file_bytes: int
    task: TaskSpec = field(default_factory=TaskSpec)
    domain: str | None = None


def is_path(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names a directory rather than a registry reference."""
    text = os.fspath(ref)
    return isinstance(ref, os.PathLike) or os.sep in text or text.startswith((".", "~")) or Path(text).is_dir()


def identify(ref: str | os.PathLike, *, registry: Any, name: str | None = None) -> tuple[str, str]:
    """``(name, source)`` of an adapter without reading its weights.

    ``source`` pins what :func:`fetch` will read: the resolved registry reference
    (``"legal@2"``) or the absolute directory.

    Raises:
        AdapterNotFoundError: no such directory, no registry, or no such registry entry.
    """
    if is_path(ref):
        path = Path(ref).expanduser().resolve()
        if not path.is_dir():
            raise AdapterNotFoundError(f"adapter directory {path} does not exist")
        return name or _manifest(path).get("name") or path.name, str(path)
    if registry is None:
        raise AdapterNotFoundError(f"{ref!r} is no directory and no registry is available to resolve it; "
                                   "pass a path to a PEFT adapter directory")
    record = registry.get(str(ref))
    return name or record.name, record.ref


def fetch(source: str, *, registry: Any, base: Any, name: str) -> AdapterPayload:
    """Read the adapter at ``source`` (from :func:`identify`) for ``base``.

    Raises:
        AdapterNotFoundError: the directory or registry entry vanished.
        InvalidAdapterError: the directory is not a safetensors PEFT adapter.
        IncompatibleBaseError: the manifest or registry names another base.
        CorruptFileError: a registry file does not match its checksum.
    """
    if is_path(source):
        return _read_directory(Path(source), base=base, name=name)
    loaded = registry.load(source, base=base)
    record = loaded.record
    size = (record.manifest.get("files", {}).get(WEIGHTS_FILE, {}) or {}).get("size")
    return AdapterPayload(name=name, source=record.ref, config=dict(loaded.config),
                          tensors=loaded.tensors, file_bytes=int(size or _tensors_bytes(loaded.tensors)),
                          task=TaskSpec.from_dict(record.task), domain=record.domain)


def open_registry(registry: Any) -> Any:
    """A Registry from ``registry`` (a Registry, a root path or ``None`` for the default root)."""
    if registry is not None and not isinstance(registry, (str, os.PathLike)):
        return registry
    try:
        from ..registry import Registry
    except ImportError:  # registry not installed in this tree: directories only
        return None
    return Registry(registry)


def registered_names(registry: Any) -> list[str]:
    """Names in ``registry`` (empty when there is none or it cannot be read)."""
    if registry is None:
        return []
    try:
        return sorted({record.name for record in registry.list()})
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return []


def _manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def _read_directory(path: Path, *, base: Any, name: str) -> AdapterPayload:
    from safetensors.torch import load_file

    if not path.is_dir():
        raise AdapterNotFoundError(f"adapter directory {path} does not exist")
    if not (path / CONFIG_FILE).is_file():
        raise InvalidAdapterError(f"{path} has no {CONFIG_FILE}; point to a PEFT adapter directory "
                                  "(the output of save_pretrained)")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickled = " (it holds a pickle adapter_model.bin, which is never loaded)" if (path / "adapter_model.bin").exists() else ""
        raise InvalidAdapterError(f"{path} has no {WEIGHTS_FILE}{pickled}; re-save with safe_serialization=True")
    config = json.loads((path / CONFIG_FILE).read_text())
    manifest = _manifest(path)
    recorded = (manifest.get("base") or {}).get("fingerprint")
    if recorded and base is not None and recorded != base.fingerprint:
        raise IncompatibleBaseError(f"adapter {path} was trained on base {recorded!r}, but this hub serves "
                                    f"{base.fingerprint!r} ({base.spec.name}); load it on its own base")
    return AdapterPayload(name=name, source=str(path),
                          config=config, tensors=load_file(str(weights)), file_bytes=weights.stat().st_size,
                          task=TaskSpec.from_dict(manifest.get("task")), domain=manifest.get("domain"))


def _tensors_bytes(tensors: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
