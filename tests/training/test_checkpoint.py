"""Checkpoints: optimizer, scheduler and RNG survive a safetensors/JSON round trip exactly; folders are atomic."""

from __future__ import annotations

import pytest
import torch

from adapterhub.training import checkpoint
from adapterhub.errors import TrainingError


def _setup():
    from transformers import get_scheduler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 2))
    model[2].weight.requires_grad_(False)  # a frozen parameter is not part of the trainable state
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.01)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=10)
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler):
    loss = model(torch.randn(5, 4)).pow(2).sum()  # randn and dropout both draw from the RNG
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def test_round_trip_continues_exactly(tmp_path):
    model, optimizer, scheduler = _setup()
    for _ in range(3):
        _step(model, optimizer, scheduler)
    best = checkpoint.trainable_state(model)
    folder = checkpoint.save_checkpoint(tmp_path, 3, peft_model=model, optimizer=optimizer, scheduler=scheduler,
                                        state={"step": 3, "history": [1.5]}, best=best)
    expected = [_step(model, optimizer, scheduler) for _ in range(3)]

    fresh, fresh_optimizer, fresh_scheduler = _setup()
    with torch.no_grad():  # scramble what the checkpoint must restore: trainable weights and the RNG
        fresh[0].weight.add_(1.0)
    torch.manual_seed(99)
    state, restored_best = checkpoint.load_checkpoint(folder, peft_model=fresh, optimizer=fresh_optimizer,
                                                      scheduler=fresh_scheduler)
    assert state == {"step": 3, "history": [1.5]}
    assert restored_best.keys() == best.keys() and all(torch.equal(restored_best[k], best[k]) for k in best)
    assert [_step(fresh, fresh_optimizer, fresh_scheduler) for _ in range(3)] == expected
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    assert {p.suffix for p in folder.iterdir()} == {".safetensors", ".json"}


def test_keeps_the_newest_and_never_a_partial_folder(tmp_path):
    model, optimizer, scheduler = _setup()
    for step in (2, 4, 6):
        checkpoint.save_checkpoint(tmp_path / "checkpoints", step, peft_model=model, optimizer=optimizer,
                                   scheduler=scheduler, state={}, keep=2)
    (tmp_path / "checkpoints" / ".tmp-step-000008").mkdir()  # a crash while writing step 8
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        ".tmp-step-000008", "step-000004", "step-000006"]
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-000006"
    assert checkpoint.latest_checkpoint(tmp_path / "nowhere") is None


def test_damaged_checkpoints_and_mismatched_models_are_errors(tmp_path):
    model, optimizer, scheduler = _setup()
    folder = checkpoint.save_checkpoint(tmp_path, 1, peft_model=model, optimizer=optimizer, scheduler=scheduler,
                                        state={})
    (folder / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="is unreadable"):
        checkpoint.load_checkpoint(folder, peft_model=model, optimizer=optimizer, scheduler=scheduler)
    with pytest.raises(TrainingError, match="does not fit the model"):
        checkpoint.load_trainable_state(model, {"other.weight": torch.zeros(1)})


def test_prefix_with_projection_exports_as_a_plain_prefix(tmp_path, tiny_base):
    import json

    from peft import PrefixTuningConfig, get_peft_model

    model = get_peft_model(tiny_base.model, PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM",
                                                               prefix_projection=True, encoder_hidden_size=8))
    folder = checkpoint.save_adapter_dir(model, tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["prefix_projection"] is False and config["inference_mode"] is True
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
