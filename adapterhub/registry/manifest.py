"""What one registry entry is: names and references, the ``adapterhub.json`` manifest,
checksums, and the validated reading of a plain PEFT adapter directory.

Nothing here touches the index or moves files; :mod:`adapterhub.registry` does.

>>> parse_ref("legal@3")
('legal', 3)
>>> parse_ref("legal")
('legal', 'latest')
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import methods
from ..errors import ConfigError, IntegrityError, InvalidAdapterError, InvalidNameError
from ..prompts import TaskSpec

FORMAT = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "adapterhub.json"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SOURCE_KINDS = ("trained", "imported", "pulled", "merged")  # merged: source also lists parents, weights, how
LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CONVERT_HINT = ("load it with PEFT in a trusted environment and save it again with "
                 "model.save_pretrained(out_dir, safe_serialization=True), then import out_dir")


def validate_name(name: Any, *, what: str = "adapter name") -> str:
    """Return ``name`` if it is a safe adapter/tag/domain name, else raise.

    Allowed: 1-100 characters of letters, digits, ``.``, ``_`` and ``-``,
    starting with a letter or digit, without ``..``.

    Raises:
        InvalidNameError: empty, path separators, ``..``, spaces, ``@`` or other characters.

    >>> validate_name("legal-v2")
    'legal-v2'
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no spaces, path separators, '@' or '..'), e.g. 'legal-contracts'")
    return name


def validate_tag(tag: Any) -> str:
    """Like :func:`validate_name`, and not all digits nor ``latest`` (those mean versions).

    >>> validate_tag("prod")
    'prod'
    """
    validate_name(tag, what="tag")
    if tag.isdigit() or tag == LATEST:
        raise InvalidNameError(f"invalid tag {tag!r}: plain numbers and 'latest' already select versions; "
                               "pick a word such as 'prod' or 'candidate'")
    return tag


def parse_ref(ref: Any) -> tuple[str, int | str]:
    """Split ``name``, ``name@N``, ``name@latest`` or ``name@tag`` into ``(name, selector)``.

    The selector is an ``int`` version, ``"latest"`` or a tag.

    Raises:
        InvalidNameError: malformed reference.
    """
    if not isinstance(ref, str):
        raise InvalidNameError(f"invalid adapter reference {ref!r}: use 'name', 'name@3', 'name@latest' or 'name@tag'")
    name, sep, selector = ref.partition("@")
    validate_name(name)
    if not sep:
        return name, LATEST
    if selector.isdigit() and int(selector) > 0:
        return name, int(selector)
    if selector == LATEST:
        return name, LATEST
    try:
        return name, validate_tag(selector)
    except InvalidNameError:
        raise InvalidNameError(f"invalid adapter reference {ref!r}: after '@' put a version >= 1, "
                               "'latest' or a tag, e.g. 'legal@3' or 'legal@prod'") from None


def file_entry(data: bytes) -> dict[str, Any]:
    """The manifest's record of one file: ``{"sha256": hex, "size": int}``."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def check_file(data: bytes, expected: Mapping[str, Any], *, where: str, ref: str) -> None:
    """Raise :class:`IntegrityError` naming ``where`` unless ``data`` matches its manifest entry."""
    fix = f"remove it with `adapterhub registry rm {ref}` and import the adapter again"
    if len(data) != expected["size"]:
        raise IntegrityError(f"{ref}: {where} is {len(data)} bytes but {expected['size']} were recorded "
                             f"(truncated or modified); {fix}")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise IntegrityError(f"{ref}: {where} does not match its recorded sha256 (tampered or corrupted); {fix}")


def safetensors_shapes(data: bytes, *, where: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors blob's header, checking the layout is complete.

    Raises:
        InvalidAdapterError: not a safetensors file, or truncated.
    """
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
        shapes, end = {}, 8 + length
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if end + meta["data_offsets"][1] > len(data):
                raise ValueError(f"tensor {name!r} runs past the end of the file")
            shapes[name] = tuple(int(d) for d in meta["shape"])
    except (struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise InvalidAdapterError(f"{where} is not a valid safetensors file ({error}); "
                                  f"save the adapter again with save_pretrained") from None
    if not shapes:
        raise InvalidAdapterError(f"{where} holds no tensors; save a trained adapter with save_pretrained")
    return shapes


def parse_json(data: bytes, *, where: str) -> dict[str, Any]:
    """Decode a JSON object or raise :class:`InvalidAdapterError` naming ``where`` and the position."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidAdapterError(f"{where} is not valid JSON ({error}); fix or re-save the file") from None
    if not isinstance(value, dict):
        raise InvalidAdapterError(f"{where} must hold a JSON object, found {type(value).__name__}")
    return value


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
    files = {name: (path / name).read_bytes() for name in ADAPTER_FILES}
    config = parse_json(files[CONFIG_FILE], where=str(path / CONFIG_FILE))
    method = methods.method_from_config(config)
    shapes = safetensors_shapes(files[WEIGHTS_FILE], where=str(weights))
    methods.get(method).check_files(config, shapes, where=str(weights))
    manifest = None
    if (path / MANIFEST_FILE).is_file():
        manifest = parse_json((path / MANIFEST_FILE).read_bytes(), where=str(path / MANIFEST_FILE))
    return SourceAdapter(path=path, config=config, method=method, files=files, tensor_shapes=shapes, manifest=manifest)


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
                 recipe: Mapping[str, Any] | None, origin: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest for a new entry (``version`` is filled in when it is allocated).

    Fields not given fall back to an ``adapterhub.json`` found in the source directory.
    """
    previous = source.manifest or {}
    if base is not None:
        base_info = {"fingerprint": base.fingerprint, "name": getattr(getattr(base, "spec", None), "name", None)}
    else:
        base_info = dict(previous.get("base") or {"fingerprint": None,
                                                   "name": source.config.get("base_model_name_or_path")})
    origin = dict(origin) if origin is not None else {"kind": "imported", "path": str(source.path.resolve())}
    if origin.get("kind") not in SOURCE_KINDS:
        raise ConfigError(f"source kind {origin.get('kind')!r} is not one of {', '.join(SOURCE_KINDS)}")
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
    }


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the manifest plus ``ref`` and ``path`` (for ``--json``)."""
        return {**self.manifest, "ref": self.ref, "path": str(self.path), "tags": list(self.tags)}


@dataclass(frozen=True)
class LoadedAdapter:
    """A verified adapter in memory: its record, ``adapter_config.json`` and CPU tensors."""

    record: AdapterRecord
    config: dict[str, Any]
    tensors: dict[str, Any] = field(repr=False)  # name -> torch.Tensor on CPU


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
