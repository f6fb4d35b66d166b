"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder ``<run>/checkpoints/step-000120/`` holds

* ``trainable.safetensors`` — every trainable parameter, by name (the exact adapter state),
* ``optimizer.safetensors`` — every optimizer state tensor, keyed ``"<param index>.<name>"``,
* ``rng.safetensors`` — the torch CPU (and CUDA) random-generator states,
* ``best.safetensors`` — the trainable state of the best validation so far (when tracked),
* ``state.json`` — optimizer hyper-parameters, scheduler state, step counters and history.

Folders are written under a temporary name and renamed, so a crash never
leaves a half-written checkpoint that ``--resume`` would pick up.

>>> latest_checkpoint(Path("runs/finance-20260101-120000"))  # doctest: +SKIP
PosixPath('runs/finance-20260101-120000/checkpoints/step-000064')
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import TrainingError

STATE_FILE = "state.json"
_PREFIX = "step-"


def trainable_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """CPU copies of every trainable parameter, by name: the exact training state of the adapter.

    (For prefix tuning with ``prefix_projection`` this includes the projection MLP, which
    the exported adapter folds away; see :func:`save_adapter_dir`.)
    """
    return {name: param.detach().to("cpu", copy=True).contiguous()
            for name, param in peft_model.named_parameters() if param.requires_grad}


def load_trainable_state(peft_model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Copy tensors saved by :func:`trainable_state` back into the model's parameters."""
    params = {name: param for name, param in peft_model.named_parameters() if param.requires_grad}
    if set(params) != set(tensors):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise TrainingError(f"checkpoint does not fit the model (missing {missing[:2]}, unexpected {extra[:2]}); "
                            "was the recipe's base or adapter section changed since the run started?")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


def save_adapter_dir(peft_model: Any, directory: Path) -> Path:
    """Export a plain PEFT adapter folder: ``adapter_config.json`` + ``adapter_model.safetensors``.

    The config is saved for inference, as PEFT's ``save_pretrained`` does; a prefix trained
    through a projection MLP is saved as the projected key/value prefix it produces, so the
    config says ``prefix_projection: false``.
    """
    import copy

    from peft import get_peft_model_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    own = getattr(peft_model, "adapter_state_dict", None)  # adapterhub's own methods (bottleneck)
    state = own() if own is not None else get_peft_model_state_dict(peft_model)  # first: AdaLoRA tidies rank_pattern
    tensors = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state.items()}
    config = copy.deepcopy(peft_model.active_peft_config)
    config.inference_mode = True
    if getattr(config, "prefix_projection", False):
        config.prefix_projection = False
    config.save_pretrained(str(directory))
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    return directory


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[key] for key in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(checkpoints: Path, step: int, *, peft_model: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], best: dict[str, torch.Tensor] | None = None,
                    keep: int = 2) -> Path:
    """Write ``checkpoints/step-<step>/`` atomically and delete all but the ``keep`` newest.

    Args:
        checkpoints: the run's ``checkpoints`` folder.
        step: optimizer steps completed.
        peft_model, optimizer, scheduler: what to save.
        state: trainer counters and history (JSON-able).
        best: the best adapter tensors so far, if tracked.
        keep: how many checkpoints to keep.

    Returns:
        The checkpoint folder.
    """
    final = checkpoints / f"{_PREFIX}{step:06d}"
    staging = checkpoints / f".tmp-{_PREFIX}{step:06d}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(trainable_state(peft_model), str(staging / "trainable.safetensors"))
    tensors, optimizer_meta = optimizer_tensors(optimizer)
    save_file(tensors, str(staging / "optimizer.safetensors"))
    save_file(rng_tensors(), str(staging / "rng.safetensors"))
    if best is not None:
        save_file(best, str(staging / "best.safetensors"))
    payload = {"step": step, "optimizer": optimizer_meta, "scheduler": scheduler.state_dict(), "trainer": state}
    (staging / STATE_FILE).write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for old in _checkpoint_dirs(checkpoints)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, *, peft_model: Any, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore adapter weights, optimizer, scheduler and RNG; returns ``(trainer state, best tensors)``.

    Call it last in setup: restoring the RNG must be the final thing that touches it.
    """
    try:
        payload = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        load_trainable_state(peft_model, load_file(str(folder / "trainable.safetensors")))
        restore_optimizer(optimizer, load_file(str(folder / "optimizer.safetensors")), payload["optimizer"])
        best_file = folder / "best.safetensors"
        best = load_file(str(best_file)) if best_file.is_file() else None
        scheduler.load_state_dict(payload["scheduler"])
        restore_rng(load_file(str(folder / "rng.safetensors")))
    except (OSError, KeyError, ValueError, SafetensorError) as error:
        raise TrainingError(f"checkpoint {folder} is unreadable ({type(error).__name__}: {error}); "
                            "delete it to resume from the one before, or start a new run") from None
    return payload["trainer"], best


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None``."""
    found = _checkpoint_dirs(run_dir / "checkpoints")
    return found[-1] if found else None


def _checkpoint_dirs(checkpoints: Path) -> list[Path]:
    if not checkpoints.is_dir():
        return []
    return sorted(p for p in checkpoints.iterdir()
                  if p.is_dir() and p.name.startswith(_PREFIX) and (p / STATE_FILE).is_file())


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")
