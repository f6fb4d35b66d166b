"""An adapter made ready for a slot *before* the residency's lock is taken: its checked payload turned into
its method's prepared weights (and an encoder head), with the bytes they hold.

Preparing (grouping, shape checks, scaling ``B`` by ``alpha / r``, writing into one storage) is most of a
load's time once the file is in RAM, so it runs outside the lock like the read itself: rows of other
adapters keep decoding while it runs. Only placing the result in a slot takes the lock.

>>> staged = stage(payload, methods=residency.methods, base=base)  # doctest: +SKIP
>>> staged.nbytes                                                   # doctest: +SKIP
6389760
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..prompts import TaskSpec
from .heads import default_task, split_payload
from .sources import AdapterPayload


@dataclass(frozen=True)
class StagedAdapter:
    """What a slot receives: the method's prepared weights, the head, and what reports say about it.

    The prepared tensors are only read once placed: on a CPU base the host tier hands the very same
    object to every load of that source (a host hit copies nothing).
    """

    name: str
    source: str
    method: str
    prepared: Any  # the method's prepared form (has .nbytes)
    head: Any  # encoder head weights, or None
    task: TaskSpec
    nbytes: int  # bytes a slot holds for it (prepared weights and head)
    file_bytes: int
    domain: str | None = None
    origin: str = "disk"  # where this load found it: "disk" or "host" (the host tier)
    read_seconds: float = 0.0  # reading, checking and preparing it took this long


def stage(payload: AdapterPayload, *, methods: Mapping[str, Any], base: Any) -> StagedAdapter:
    """``payload`` prepared by its method for a slot on ``base`` (its tensors may be prepared in place).

    Raises:
        IncompatibleBaseError, InvalidAdapterError: what the method's ``prepare`` raises.
    """
    head, config, tensors = split_payload(payload.config, payload.tensors, method=payload.method, base=base)
    prepared = methods[payload.method].prepare(config, tensors)
    nbytes = prepared.nbytes + (head.nbytes if head is not None else 0)
    task = payload.task if head is None or payload.task.is_encoder_task else default_task(config, head)
    return StagedAdapter(name=payload.name, source=payload.source, method=payload.method, prepared=prepared,
                         head=head, task=task, nbytes=nbytes, file_bytes=payload.file_bytes, domain=payload.domain,
                         origin=payload.origin, read_seconds=payload.read_seconds)
