"""What one registry entry is: the ``adapterhub.json`` manifest, checksums, and the validated
reading of a plain PEFT adapter directory.

Nothing here touches the index or moves files; :mod:`adapterhub.registry` does. Names and references
live in :mod:`.refs`, file reads in :mod:`.files`, the safetensors format in :mod:`.safetensors_file`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import methods
from ..errors import ConfigError, IntegrityError, InvalidAdapterError, InvalidNameError
from ..prompts import TaskSpec
from .contract import parse_contract
from .files import MAX_JSON_BYTES, json_depth_ok, parse_json, read_regular, shorten
from .refs import validate_name
from .routers import ROUTER_METHOD, check_router_files, is_router_config
from .safetensors_file import safetensors_shapes

FORMAT = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "adapterhub.json"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SOURCE_KINDS = ("trained", "imported", "pulled", "merged", "router")  # merged: source also lists parents, weights,
# how; router: the adapters it chooses between (adapterhub.registry.routers)
_CONVERT_HINT = ("load it with PEFT in a trusted environment and save it again with "
                 "model.save_pretrained(out_dir, safe_serialization=True), then import out_dir")


def file_entry(data: bytes) -> dict[str, Any]:
    """The manifest's record of one file: ``{"sha256": hex, "size": int}``."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def check_file(data: bytes, expected: Mapping[str, Any], *, where: str, ref: str) -> None:
    """Raise :class:`IntegrityError` naming ``where`` unless ``data`` matches its manifest entry."""
    if len(data) != expected["size"]:
        raise IntegrityError(f"{ref}: {where} is {len(data)} bytes but {expected['size']} were recorded "
                             "(truncated or modified)", ref=ref)
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise IntegrityError(f"{ref}: {where} does not match its recorded sha256 (tampered or corrupted)", ref=ref)


@dataclass(frozen=True)
class SourceAdapter:
    """A validated plain PEFT adapter directory, read into memory once."""

    path: Path
    config: dict[str, Any]
    method: str
    files: dict[str, bytes]  # CONFIG_FILE and WEIGHTS_FILE contents
    tensor_shapes: dict[str, tuple[int, ...]]
    manifest: dict[str, Any] | None  # an adapterhub.json found beside the files (e.g. from export)


def read_adapter_dir(path: str | Path) -> SourceAdapter:
    """Read and validate a PEFT adapter directory (never unpickling anything).

    Raises:
        InvalidAdapterError: missing directory or config, malformed JSON, pickle-only
            weights, no/invalid safetensors, unsupported method, or tensors that do not fit the method.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InvalidAdapterError(f"adapter directory {str(path)!r} does not exist; pass the folder that "
                                  "save_pretrained wrote (with adapter_config.json)")
    if not (path / CONFIG_FILE).is_file():
        raise InvalidAdapterError(f"{path} has no {CONFIG_FILE}, so it is not a PEFT adapter directory; "
                                  "save the adapter with model.save_pretrained(dir)")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InvalidAdapterError(f"{path} holds only pickle weights ({', '.join(pickles)}), which adapterhub never "
                                      f"loads (unpickling can run code); to convert, {_CONVERT_HINT}")
        raise InvalidAdapterError(f"{path} has no {WEIGHTS_FILE}; save the adapter with "
                                  "model.save_pretrained(dir, safe_serialization=True)")
    files = {name: _read_source(path / name) for name in ADAPTER_FILES}
    config = parse_json(files[CONFIG_FILE], where=str(path / CONFIG_FILE))
    shapes = safetensors_shapes(files[WEIGHTS_FILE], where=str(weights))
    if is_router_config(config):  # a router entry (adapterhub.registry.routers): same files, its own checks
        method = ROUTER_METHOD
        check_router_files(config, shapes, where=str(path / CONFIG_FILE))
    else:
        method = methods.method_from_config(config)
        methods.get(method).check_files(config, shapes, where=str(weights))
    manifest = None
    if (path / MANIFEST_FILE).is_file():
        manifest = parse_json(_read_source(path / MANIFEST_FILE), where=str(path / MANIFEST_FILE))
    return SourceAdapter(path=path, config=config, method=method, files=files, tensor_shapes=shapes, manifest=manifest)


def _read_source(path: Path) -> bytes:
    limit = None if path.name == WEIGHTS_FILE else MAX_JSON_BYTES
    try:
        return read_regular(path, limit=limit)
    except OSError as error:
        raise InvalidAdapterError(f"cannot read {path}: {error.strerror or error}; pass a folder of regular files "
                                  "as save_pretrained writes them") from None


def task_to_dict(task: Any) -> dict[str, Any]:
    """Normalise a :class:`TaskSpec`, its dict or ``None`` (free generation) to the manifest's task dict.

    Raises:
        ConfigError: the task is neither, or does not validate.

    >>> task_to_dict(None)["type"]
    'generation'
    """
    if task is not None and not isinstance(task, (TaskSpec, Mapping)):
        raise ConfigError(f"task must be a TaskSpec, a dict or None, not {type(task).__name__}")
    return TaskSpec.from_dict(dict(task) if isinstance(task, Mapping) else task).to_dict()


def new_manifest(source: SourceAdapter, name: str, *, domain: str | None, task: Any, tags: list[str],
                 description: str, base: Any, metrics: Mapping[str, Any] | None,
                 recipe: Mapping[str, Any] | None, origin: Mapping[str, Any] | None,
                 contract: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest for a new entry (``version`` is filled in when it is allocated).

    Fields not given fall back to an ``adapterhub.json`` found in the source directory. ``contract``
    (:mod:`.contract`) is stored only when there is one, so entries without stay as they always were.
    """
    previous = recorded_fields(source.manifest or {}, where=str(source.path / MANIFEST_FILE))
    if base is not None:
        base_info = {"fingerprint": base.fingerprint, "name": getattr(getattr(base, "spec", None), "name", None)}
    else:
        recorded_name = source.config.get("base_model_name_or_path")
        base_info = dict(previous.get("base") or {"fingerprint": None,
                                                   "name": recorded_name if isinstance(recorded_name, str) else None})
    origin = dict(origin) if origin is not None else {"kind": "imported", "path": str(source.path.resolve())}
    if origin.get("kind") not in SOURCE_KINDS:
        raise ConfigError(f"source kind {origin.get('kind')!r} is not one of {', '.join(SOURCE_KINDS)}")
    contract = dict(contract) if contract is not None else previous.get("contract")
    return {
        "format": FORMAT, "name": name, "version": None,
        "domain": domain if domain is not None else previous.get("domain"),
        "method": source.method,
        "task": task_to_dict(task if task is not None else previous.get("task")),
        "base": base_info,
        "metrics": dict(metrics if metrics is not None else previous.get("metrics") or {}),
        "recipe": dict(recipe) if recipe is not None else previous.get("recipe"),
        "source": origin,
        "files": {file: file_entry(source.files[file]) for file in ADAPTER_FILES},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tags": list(tags),
        "description": description or previous.get("description") or "",
        **({"contract": parse_contract(contract, where=name).to_manifest_all()} if contract else {}),
    }


_TEXT_LIMIT = 2000


def recorded_fields(manifest: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """The fields of an ``adapterhub.json`` found beside adapter files (ours, or a Hub repo's), validated
    as strictly as the same values given by hand; the name and version in it are never used.

    Raises:
        InvalidAdapterError: a field of the wrong type or shape (the message names the field and the fix).
    """
    fields: dict[str, Any] = {}

    def bad(name: str, why: str) -> InvalidAdapterError:
        return InvalidAdapterError(f"{where}: field {name!r} {why}; fix the manifest or delete it "
                                   "(then pass the values by hand)")

    domain = manifest.get("domain")
    if domain is not None:
        try:
            fields["domain"] = validate_name(domain, what="domain")
        except InvalidNameError:
            raise bad("domain", f"is {shorten(repr(domain), 60)}, not a valid domain name (1-100 letters, digits, "
                      "'.', '_' or '-')") from None
    if manifest.get("task") is not None:
        if not isinstance(manifest["task"], Mapping):
            raise bad("task", f"must be an object, not {type(manifest['task']).__name__}")
        try:
            fields["task"] = task_to_dict(manifest["task"])
        except ConfigError as error:
            raise bad("task", f"is invalid ({shorten(str(error))})") from None
    base = manifest.get("base")
    if base is not None:
        if not (isinstance(base, Mapping) and set(base) <= {"fingerprint", "name"}
                and all(value is None or (isinstance(value, str) and len(value) <= 200) for value in base.values())):
            raise bad("base", "must be an object with string 'fingerprint' and 'name'")
        fields["base"] = {"fingerprint": base.get("fingerprint"), "name": base.get("name")}
    for key in ("metrics", "recipe"):
        value = manifest.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise bad(key, f"must be an object, not {type(value).__name__}")
        if not json_depth_ok(value, 8):
            raise bad(key, "nests more than 8 levels deep")
        fields[key] = dict(value)
    for key, value in (manifest.get("metrics") or {}).items():
        if not (isinstance(value, (int, float, str, Mapping)) or value is None):
            raise bad("metrics", f"has {key!r} = {type(value).__name__}; metrics are numbers, strings or objects")
    description = manifest.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > _TEXT_LIMIT:
            raise bad("description", f"must be a string of at most {_TEXT_LIMIT} characters")
        fields["description"] = description
    if manifest.get("contract") is not None:
        try:
            fields["contract"] = parse_contract(manifest["contract"], where=where).to_manifest_all()
        except ConfigError as error:
            raise bad("contract", f"is invalid ({shorten(str(error))})") from None
    return fields


@dataclass(frozen=True)
class AdapterRecord:
    """One immutable registered version, as the index describes it (cheap: no file reads).

    ``manifest`` is the entry's ``adapterhub.json`` with ``tags`` set to the tags
    that point at this version now.
    """

    name: str
    version: int
    domain: str | None
    method: str
    path: Path  # the version directory: a plain PEFT dir + adapterhub.json
    manifest: dict[str, Any] = field(compare=False, repr=False)
    tags: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``"name@version"``, the reference that always means this exact entry."""
        return f"{self.name}@{self.version}"

    @property
    def task(self) -> Any:
        """The :class:`TaskSpec` (generation or classification with labels and template)."""
        return TaskSpec.from_dict(self.manifest.get("task"))

    @property
    def created(self) -> str:
        return self.manifest["created"]

    @property
    def base_fingerprint(self) -> str | None:
        return (self.manifest.get("base") or {}).get("fingerprint")

    @property
    def description(self) -> str:
        return self.manifest.get("description") or ""

    @property
    def contract(self) -> Any:
        """The serving :class:`~adapterhub.registry.contract.Contract`, or ``None`` (none recorded)."""
        from .contract import record_contract

        return record_contract(self.manifest)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the manifest plus ``ref`` and ``path`` (for ``--json``)."""
        return {**self.manifest, "ref": self.ref, "path": str(self.path), "tags": list(self.tags)}


@dataclass(frozen=True)
class LoadedAdapter:
    """A verified adapter in memory: its record, ``adapter_config.json`` and CPU tensors."""

    record: AdapterRecord
    config: dict[str, Any]
    tensors: dict[str, Any] = field(repr=False)  # name -> torch.Tensor on CPU
    method: str | None = None  # the method that checked it against the base (``load(base=...)``), else None


def lineage(manifest: Mapping[str, Any]) -> str | None:
    """One line naming a merged entry's parents, weights and method (``None`` for other entries).

    >>> lineage({"source": {"kind": "merged", "how": "cat", "weights": [0.7, 0.3], "density": None,
    ...          "parents": [{"ref": "finance@1", "weights_sha256": "ab12cd34ef"}, {"ref": "medical@2"}]}})
    'cat merge of finance@1 (x0.7, sha256 ab12cd34) + medical@2 (x0.3)'
    """
    source = manifest.get("source") or {}
    if source.get("kind") != "merged":
        return None
    weights = source.get("weights") or []
    parts = []
    for index, parent in enumerate(source.get("parents") or []):
        notes = [f"x{weights[index]:g}"] if index < len(weights) else []
        if parent.get("weights_sha256"):
            notes.append(f"sha256 {parent['weights_sha256'][:8]}")
        parts.append(f"{parent.get('ref')} ({', '.join(notes)})" if notes else str(parent.get("ref")))
    density = f", density {source['density']:g}" if source.get("density") is not None else ""
    return f"{source.get('how')} merge of {' + '.join(parts)}{density}"
