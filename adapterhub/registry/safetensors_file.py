"""The safetensors format, read without trusting it: the header checked as the loader will, tensor byte
ranges (:class:`TensorSpan`), and CPU tensors viewing a private buffer without a copy.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import InvalidAdapterError
from ..memory import OwnedViews
from .files import shorten

MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own header limit
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
"""The safetensors dtypes torch reads, and their sizes in bytes."""


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
        raise InvalidAdapterError(f"{where} is not a valid safetensors file ({shorten(str(error))}); "
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
            raise ValueError(f"tensor {name!r} has unknown dtype {shorten(repr(dtype))}")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r} has shape {shorten(repr(shape))}; dimensions must be integers >= 0")
        if not (type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int and type(offsets[1]) is int
                and 0 <= offsets[0] <= offsets[1]):
            raise ValueError(f"tensor {name!r} has data_offsets {shorten(repr(offsets))}; need [begin, end], "
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
    into it without a copy (one storage: :func:`adapterhub.memory.owned` copies what it keeps);
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
