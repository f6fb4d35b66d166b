"""What a data-parallel run (``accelerate launch``) shares between its processes: sums, a stop flag and
the main process's answers. In a single process each is the identity, without touching torch.distributed.
"""

from __future__ import annotations

from typing import Any


def sum_over_processes(accelerator: Any, value: float) -> float:
    """``value`` summed over every process of a data-parallel run (itself in a single process)."""
    if accelerator.num_processes == 1:
        return value
    import torch

    total = accelerator.reduce(torch.tensor(float(value), dtype=torch.float64, device=accelerator.device),
                               reduction="sum")
    return float(total.item())


def any_process(accelerator: Any, flag: bool) -> bool:
    """Whether ``flag`` is set in any process (every process gets the same answer)."""
    if accelerator.num_processes == 1:
        return flag
    import torch

    count = torch.tensor([int(flag)], device=accelerator.device)
    return bool(accelerator.reduce(count, reduction="sum").item())


def from_main(accelerator: Any, value: Any) -> Any:
    """The main process's ``value``, in every process (a picklable object)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]
