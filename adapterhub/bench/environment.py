"""The machine a benchmark ran on: CPU, threads, accelerator, library versions.

>>> info = describe_machine("cpu")
>>> sorted(info)[:3]
['cpu_count', 'cpu_model', 'device']
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors")


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide the numbers (``None`` if absent)."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine(device: str) -> dict[str, Any]:
    """Everything a reader needs to judge or reproduce the numbers.

    Args:
        device: the resolved device the bench runs on (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    """
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
        "gpu": None,
        "versions": package_versions(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = {"name": props.name, "memory_bytes": int(props.total_memory),
                       "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return info


def device_label(info: dict[str, Any]) -> str:
    """A short folder-safe name for results: ``cpu-amd-epyc-2t`` or ``nvidia-h100-80gb-hbm3``."""
    if info.get("gpu"):
        name = info["gpu"]["name"]
    else:
        name = f"cpu-{info['cpu_model']}-{info['torch_threads']}t"
    safe = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
    return "-".join(part for part in safe.split("-") if part)
