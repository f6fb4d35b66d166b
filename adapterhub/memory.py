"""Memory: how much this process has used (the peak resident set size, measured honestly), fresh
buffers, and how adapter weights are stored (compact copies, transposed placement, owned buffers).

>>> peak_rss_bytes() > 0
True
"""

from __future__ import annotations

import mmap
import resource
from typing import Any

LARGE_PAGE_BYTES = 2 * 2**20  # what x86-64 and arm64 Linux back with one transparent huge page


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's own memory so far.

    Reads ``VmHWM`` on Linux: ``getrusage``'s ``ru_maxrss`` survives ``fork`` + ``exec``, so
    a child started by a big process reports its parent's peak instead of its own.
    Falls back to ``ru_maxrss`` where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def fresh_buffer(nbytes: int) -> Any:
    """``nbytes`` of new, zero-filled, private, writable memory (an anonymous ``mmap``), freed with its last user.

    Large buffers ask the kernel for transparent huge pages (``MADV_HUGEPAGE``; only advice, ignored
    where unsupported): filling tens of MB of fresh memory otherwise takes one page fault per 4 KiB,
    which on a VM costs about as much as copying the bytes. Nothing is kept or reused between calls.

    >>> len(fresh_buffer(16))
    16
    """
    buffer = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20))
    if nbytes >= LARGE_PAGE_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buffer.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return buffer


def fresh_tensor(numel: int, *, dtype: Any, device: Any) -> Any:
    """An uninitialised 1-D tensor of ``numel`` elements; on CPU in :func:`fresh_buffer` memory (huge pages)."""
    import torch

    if torch.device(device).type != "cpu" or numel == 0:
        return torch.empty(numel, dtype=dtype, device=device)
    size = torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(fresh_buffer(numel * size), dtype=dtype, count=numel)


class OwnedViews(dict):
    """``{name: tensor}`` viewing one private, writable buffer that was read for its holder alone.

    Whoever holds it owns that memory: the tensors may be kept as they are, or overwritten (the
    LoRA runtime stores its transposed weights in the very bytes it read). A plain ``dict`` of
    tensors promises nothing of the kind.
    """


def tensor_bytes(*tensors: Any) -> int:
    """Bytes held by the given tensors (``None`` entries are skipped)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def owned(tensor: Any, *, dtype: Any, device: Any) -> Any:
    """``tensor`` as ``dtype`` on ``device`` in its own compact storage.

    Tensors deserialised from one buffer may be views into it; keeping such a
    view would keep the whole file alive, so those are copied.
    """
    converted = tensor.to(device=device, dtype=dtype)
    if converted.untyped_storage().nbytes() != converted.numel() * converted.element_size() \
            or not converted.is_contiguous():
        converted = converted.contiguous().clone()
    return converted


class NewStorage:
    """Places prepared matrices one after another in one new storage (one allocation for an adapter)."""

    def __init__(self, numel: int, *, dtype: Any, device: Any) -> None:
        self.store = fresh_tensor(numel, dtype=dtype, device=device)
        self.offset = 0

    def __call__(self, matrix: Any, gain: Any = None) -> Any:
        view = written_into(self.store, self.offset, matrix, gain)
        self.offset += matrix.numel()
        return view


def in_place(matrix: Any, gain: Any = None) -> Any:
    """``matrix`` left in the memory it was read into (times ``gain`` there, in float32 like
    :func:`written_into`): nothing new is allocated and nothing is copied."""
    import torch

    return matrix if gain is None else matrix.mul_(gain[:, None] if isinstance(gain, torch.Tensor) else gain)


def written_into(store: Any, offset: int, matrix: Any, gain: Any = None) -> Any:
    """``matrix`` ``[m, n]`` (times ``gain``: a number, or a ``[m]`` tensor) written into ``store``'s storage
    from element ``offset`` as contiguous ``[m, n]``; returns that view.

    LoRA keeps PEFT's own layout (``lora_A`` ``[r, in]``, ``lora_B`` ``[out, r]``, contiguous) on purpose:
    from transposed storage ``F.linear`` / ``addmm_`` call another BLAS kernel (MKL ``SGEMM(N,N)`` instead
    of PEFT's ``SGEMM(T,N)``) that sums in another order for ranks 2-8, and for every rank on a few rows
    (decode); the 1-ulp differences grew to 3.8e-4 in the real base's logits. Converts to ``store``'s
    dtype and device with the same result as ``(matrix.to(float32) * gain).to(dtype)``: the product is
    formed in float32 and rounded once.
    """
    import torch

    rows, columns = matrix.shape
    view = torch.as_strided(store, (rows, columns), (columns, 1), offset)
    if matrix.device != store.device:
        matrix = matrix.to(store.device)
    if matrix.dtype not in (torch.float32, store.dtype):
        matrix = matrix.to(torch.float32)  # e.g. float64 weights: rounded once, to float32, as before
    if gain is None:
        view.copy_(matrix)
    else:
        torch.mul(matrix.to(torch.float32), gain[:, None] if isinstance(gain, torch.Tensor) else gain, out=view)
    return view
