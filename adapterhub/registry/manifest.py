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
import math
import os
import re
import stat
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from .. import methods
from ..errors import ConfigError, IntegrityError, InvalidAdapterError, InvalidNameError
from ..memory import OwnedViews, fresh_buffer
from ..prompts import TaskSpec

FORMAT = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "adapterhub.json"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SOURCE_KINDS = ("trained", "imported", "pulled", "merged")  # merged: source also lists parents, weights, how
LATEST = "latest"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # always fullmatch: "$" would accept a trailing newline
MAX_JSON_BYTES = 8 * 2**20  # adapter_config.json / adapterhub.json: far above any real one
MAX_JSON_DEPTH = 32
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own header limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
"""The safetensors dtypes torch reads, and their sizes in bytes."""
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
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid {what} {_short(repr(name), 120)}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no spaces, path separators, '@' or '..'), e.g. 'legal-contracts'")
    return name


def validate_tag(tag: Any) -> str:
    """Like :func:`validate_name`, and not all digits nor ``latest`` (those mean versions).

    >>> validate_tag("prod")
    'prod'
    """
    validate_name(tag, what="tag")
    if tag.isdigit() or tag == LATEST:  # ASCII only: validate_name allows nothing else
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
    if selector.isascii() and selector.isdigit() and int(selector) > 0:
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


def read_regular(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (symlinks followed); never blocks on a FIFO or reads a device.

    Raises:
        FileNotFoundError: nothing at ``path``.
        NotARegularFileError: a directory, FIFO, socket or device (an ``OSError``).
        OSError: ``limit`` given and the file is larger, or it cannot be read.
    """
    return read_observed(path, limit=limit).data


@dataclass(frozen=True)
class ObservedRead:
    """A regular file's bytes with the ``fstat`` of the open file just before and just after reading them.

    ``data`` is ``bytes``, or with ``writable=True`` a private writable buffer (an anonymous ``mmap``:
    ``len``, slicing to ``bytes``, hashing and the buffer protocol work alike).
    """

    data: Any
    before: os.stat_result
    after: os.stat_result  # differs from ``before`` when the file was written while it was read
    started_ns: int  # wall clock (``time.time_ns``) when reading began


def read_observed(path: Path, *, limit: int | None = None, writable: bool = False) -> ObservedRead:
    """:func:`read_regular`, also returning what the file's ``fstat`` said around the read (same errors).

    ``writable=True`` reads into a private writable buffer, so tensors can view the bytes in place
    (:func:`safetensors_tensors`) without a copy; the buffer holds what was read, never the file itself.
    """
    info = os.stat(path)  # before opening: opening a FIFO would block
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else \
            "a special file"
        raise NotARegularFileError(f"{path} is {kind}, not a regular file")
    if limit is not None and info.st_size > limit:
        raise OSError(f"{path} is {info.st_size} bytes, more than the {limit} this file may have")
    started = time.time_ns()
    with open(path, "rb") as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):  # replaced between the stat and the open
            raise NotARegularFileError(f"{path} is no longer a regular file")
        data = _read_writable(handle, before.st_size) if writable else handle.read()
        after = os.fstat(handle.fileno())
    return ObservedRead(data=data, before=before, after=after, started_ns=started)


def _read_writable(handle: Any, size: int) -> Any:
    """The rest of ``handle`` in a :func:`~adapterhub.memory.fresh_buffer` of ``size`` bytes (``bytes`` if the
    file's size changed meanwhile: what was read, whose identity changed anyway)."""
    if size <= 0:
        return handle.read()
    buffer = fresh_buffer(size)
    view = memoryview(buffer)
    try:
        got = 0
        while got < size:
            count = handle.readinto(view[got:])
            if not count:
                break
            got += count
    finally:
        view.release()
    if got < size:
        return buffer[:got]  # shrank while read
    rest = handle.read()
    return buffer[:] + rest if rest else buffer  # grew while read, or complete


class NotARegularFileError(OSError):
    """A path that should hold a file holds a directory, FIFO, socket or device."""


class TensorSpan(NamedTuple):
    """Where one tensor lies in a safetensors file: dtype, shape and its byte range in the whole file."""

    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file (past the 8-byte length and the header)
    stop: int


def safetensors_shapes(data: Any, *, where: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors blob, after checking its whole layout (see :func:`safetensors_layout`).

    Raises:
        InvalidAdapterError: not a safetensors file, truncated, or its layout is broken.
    """
    return {name: span.shape for name, span in safetensors_layout(data, where=where).items()}


def safetensors_layout(data: Any, *, where: str) -> dict[str, TensorSpan]:
    """Every tensor's :class:`TensorSpan` in a safetensors blob, after checking its whole layout.

    Checked as the safetensors loader will: a header of sane length that is a JSON
    object without duplicate keys; per tensor a known dtype, a shape of non-negative
    integers and ``[begin, end]`` offsets whose span is shape × dtype size; tensors
    laid end to end from offset 0, without overlaps or gaps, covering the data exactly
    (no trailing bytes).

    Raises:
        InvalidAdapterError: not a safetensors file, truncated, or any of the above broken.
    """
    try:
        layout = _safetensors_layout(data)
    except (struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as error:
        raise InvalidAdapterError(f"{where} is not a valid safetensors file ({_short(str(error))}); "
                                  f"save the adapter again with save_pretrained") from None
    if not layout:
        raise InvalidAdapterError(f"{where} holds no tensors; save a trained adapter with save_pretrained")
    return layout


def _safetensors_layout(data: Any) -> dict[str, TensorSpan]:
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes is too short for a header")
    (length,) = struct.unpack_from("<Q", data, 0)
    if length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise ValueError(f"header length {length} does not fit the {len(data)}-byte file")
    header = json.loads(bytes(memoryview(data)[8:8 + length]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and
                                     all(isinstance(v, str) for v in metadata.values())):
        raise ValueError("__metadata__ must map strings to strings")
    spans, layout = [], {}
    start = 8 + length
    for name, meta in header.items():
        if type(meta) is not dict or not meta.keys() <= _SPAN_KEYS:
            raise ValueError(f"tensor {name!r} is not described by dtype, shape and data_offsets")
        dtype, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
        if type(dtype) is not str or dtype not in DTYPE_BYTES:
            raise ValueError(f"tensor {name!r} has unknown dtype {_short(repr(dtype))}")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r} has shape {_short(repr(shape))}; dimensions must be integers >= 0")
        if not (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int and type(offsets[1]) is int
                and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"tensor {name!r} has data_offsets {_short(repr(offsets))}; need [begin, end], "
                             "0 <= begin <= end")
        begin, stop = offsets
        if stop - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ValueError(f"tensor {name!r} spans {stop - begin} bytes but shape {shape} of {dtype} "
                             f"needs {math.prod(shape) * DTYPE_BYTES[dtype]}")
        spans.append((begin, stop, name))
        layout[name] = TensorSpan(dtype, tuple(shape), start + begin, start + stop)
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else f"leaves a gap of {begin - end} bytes"
            raise ValueError(f"tensor {name!r} {what}")
        end = stop
    if 8 + length + end != len(data):
        raise ValueError(f"the tensors cover {end} data bytes but the file has {len(data) - 8 - length} "
                         "(truncated, or extra bytes at the end)")
    return layout


_SPAN_KEYS = frozenset({"dtype", "shape", "data_offsets"})


class SafetensorsViews(OwnedViews):
    """``{name: tensor}`` viewing one private, writable buffer that was read for its holder alone.

    Whoever holds it owns that memory: the tensors may be kept as they are, or overwritten (the
    runtime's LoRA stores its transposed weights in the very bytes it read). A plain ``dict`` of
    tensors promises nothing of the kind.
    """


def safetensors_tensors(data: Any, layout: Mapping[str, TensorSpan]) -> dict[str, Any]:
    """CPU tensors of a safetensors blob whose layout :func:`safetensors_layout` checked.

    From a writable buffer (``read_observed(..., writable=True)``): :class:`SafetensorsViews`, views
    into it without a copy (one storage: :func:`adapterhub.runtime.methods.owned` copies what it keeps);
    a tensor whose offset does not suit its dtype's alignment gets its own copy. From read-only
    bytes, or on a big-endian machine, the safetensors loader makes them (a copy each, a plain dict).
    """
    import torch

    if sys.byteorder != "little" or memoryview(data).readonly:
        from safetensors.torch import load

        return load(bytes(data))
    whole = torch.frombuffer(data, dtype=torch.uint8) if len(data) else torch.empty(0, dtype=torch.uint8)
    typed: dict[str, Any] = {}
    tensors = SafetensorsViews()
    for name, (dtype_name, shape, start, stop) in layout.items():
        dtype = _TORCH_DTYPES[dtype_name]
        size = DTYPE_BYTES[dtype_name]
        if start % size:  # not aligned for its dtype: its own (aligned) copy
            tensors[name] = whole[start:stop].clone().view(dtype).view(shape)
            continue
        flat = typed.get(dtype_name)
        if flat is None:
            flat = typed[dtype_name] = whole[:len(data) - len(data) % size].view(dtype)
        tensors[name] = torch.as_strided(flat, shape, _contiguous_strides(shape), start // size)
    return tensors


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


class _TorchDtypes(dict):
    """``DTYPE_BYTES`` names -> torch dtypes, filled on first use (torch is imported lazily)."""

    def __missing__(self, name: str) -> Any:
        import torch

        self.update({"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "F8_E4M3": torch.float8_e4m3fn,
                     "F8_E5M2": torch.float8_e5m2, "U16": torch.uint16, "I16": torch.int16, "F16": torch.float16,
                     "BF16": torch.bfloat16, "U32": torch.uint32, "I32": torch.int32, "F32": torch.float32,
                     "U64": torch.uint64, "I64": torch.int64, "F64": torch.float64})
        return self[name]


_TORCH_DTYPES = _TorchDtypes()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate keys in the header")
    return result


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters, so no message repeats a whole hostile input."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def json_depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests lists/dicts at most ``limit`` deep (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def parse_json(data: bytes, *, where: str) -> dict[str, Any]:
    """Decode a JSON object or raise :class:`InvalidAdapterError` naming ``where`` and the position.

    Objects nested deeper than :data:`MAX_JSON_DEPTH` or larger than :data:`MAX_JSON_BYTES` are refused.
    """
    if len(data) > MAX_JSON_BYTES:
        raise InvalidAdapterError(f"{where} is {len(data)} bytes, more than the {MAX_JSON_BYTES} a config or "
                                  "manifest may have; fix or re-save the file")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidAdapterError(f"{where} is not valid JSON ({error}); fix or re-save the file") from None
    except RecursionError:
        value = None
        depth_ok = False
    else:
        depth_ok = json_depth_ok(value)
    if not depth_ok:
        raise InvalidAdapterError(f"{where} nests more than {MAX_JSON_DEPTH} levels deep; fix or re-save the file")
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
    files = {name: _read_source(path / name) for name in ADAPTER_FILES}
    config = parse_json(files[CONFIG_FILE], where=str(path / CONFIG_FILE))
    method = methods.method_from_config(config)
    shapes = safetensors_shapes(files[WEIGHTS_FILE], where=str(weights))
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
                 recipe: Mapping[str, Any] | None, origin: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest for a new entry (``version`` is filled in when it is allocated).

    Fields not given fall back to an ``adapterhub.json`` found in the source directory.
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
            raise bad("domain", f"is {_short(repr(domain), 60)}, not a valid domain name (1-100 letters, digits, "
                      "'.', '_' or '-')") from None
    if manifest.get("task") is not None:
        if not isinstance(manifest["task"], Mapping):
            raise bad("task", f"must be an object, not {type(manifest['task']).__name__}")
        try:
            fields["task"] = task_to_dict(manifest["task"])
        except ConfigError as error:
            raise bad("task", f"is invalid ({_short(str(error))})") from None
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
