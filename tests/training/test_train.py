"""Training end to end on the tiny model: register → reload round trip, resume, failures, methods, CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.errors import DataError, HubError, TrainingError
from adapterhub.training import load_recipe
from adapterhub.registry import Registry
from adapterhub.training.trainer import Trainer, train
from tests.helpers.recipes import tiny_recipe, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _registry(raw) -> Registry:
    return Registry(raw["output"]["registry"])


def test_train_register_reload_round_trip(tmp_path, tiny_llama_dir):
    from adapterhub import load_base
    from adapterhub.training.evaluate import evaluate_file

    raw = tiny_recipe(tmp_path, tiny_llama_dir, tags=["demo"], description="tiny sentiment",
                      training={"max_steps": 4}, data={"test": str(tmp_path / "validation.jsonl")})
    result = train(raw, progress=False)
    record = result.record
    assert result.run_dir == tmp_path / "run" and result.metrics == record.manifest["metrics"]
    assert (record.ref, record.domain, record.method, record.tags) == ("tiny@1", "tiny", "lora", ("demo",))
    assert record.task == load_recipe(raw).task
    manifest = record.manifest
    assert manifest["source"]["kind"] == "trained" and manifest["description"] == "tiny sentiment"
    assert manifest["recipe"]["data"]["train"]["path"] == str(tmp_path / "train.jsonl")
    metrics = manifest["metrics"]
    assert {"validation", "test", "train"} <= set(metrics) and metrics["train"]["steps"] == 4
    assert {"loss", "perplexity", "accuracy", "macro_f1", "f1"} <= set(metrics["validation"])

    run = tmp_path / "run"
    assert json.loads((run / "metrics.json").read_text())["metrics"] == metrics
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert load_recipe(run / "recipe.yaml").to_dict() == load_recipe(raw).to_dict()
    saved = {p.suffix for p in run.rglob("*") if p.is_file()}
    assert saved <= {".json", ".safetensors", ".yaml", ".png"}, "no pickles, ever"
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "confusion_matrix.png", "confusion_matrix_test.png",
                                                     "loss.png", "metrics.json", "recipe.yaml"]
    assert sorted(p.name for p in (run / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "adapterhub.json"]  # checkpoints pruned on success

    reloaded = evaluate_file(record.ref, tmp_path / "validation.jsonl", registry=_registry(raw),
                             base=load_base(str(tiny_llama_dir), device="cpu"))
    assert reloaded["accuracy"] == metrics["validation"]["accuracy"]
    assert reloaded["loss"] == pytest.approx(metrics["validation"]["loss"], abs=1e-4)
    assert train(raw | {"output": {**raw["output"], "run_dir": str(tmp_path / "run2")}},
                 progress=False).record.ref == "tiny@2"


@pytest.mark.parametrize("adapter, expected_config", [
    ({"method": "prefix", "num_virtual_tokens": 4, "prefix_projection": True},
     {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4, "prefix_projection": False}),
    ({"method": "lora", "use_dora": True, "use_rslora": True, "target_modules": ["q_proj", "v_proj"]},
     {"peft_type": "LORA", "use_dora": True, "use_rslora": True}),
])
def test_other_methods_reload_with_the_metrics_they_trained_with(tmp_path, tiny_llama_dir, adapter, expected_config):
    """A prefix trained through a projection MLP is exported as the plain prefix it produces: same scores."""
    from adapterhub import load_base
    from adapterhub.training.evaluate import evaluate_file

    raw = tiny_recipe(tmp_path, tiny_llama_dir, adapter=adapter, training={"max_steps": 3, "lr": 1e-2})
    record = train(raw, progress=False).record
    config = json.loads((record.path / "adapter_config.json").read_text())
    assert {key: config[key] for key in expected_config} == expected_config
    assert record.method == ("prefix" if adapter["method"] == "prefix" else "lora")
    reloaded = evaluate_file(record.ref, tmp_path / "validation.jsonl", registry=_registry(raw),
                             base=load_base(str(tiny_llama_dir), device="cpu"))
    assert reloaded["loss"] == pytest.approx(record.manifest["metrics"]["validation"]["loss"], abs=1e-4)


@pytest.mark.parametrize("options, same_losses", [
    ({"training": {"gradient_checkpointing": True}}, True),  # recomputation must not change a single loss
    ({"training": {"share_prompt_prefix": True}}, True),  # nor computing a shared prompt start once
    ({"data": {"packing": True}}, False),  # packed batches are drawn unsorted, so they differ from length-grouped ones
    ({"training": {"gradient_accumulation_steps": 2, "batch_size": 2, "scheduler": "linear", "warmup_steps": 1}}, False),
], ids=["checkpointing", "shared-prefix", "packing", "accumulation"])
def test_training_options(tmp_path, tiny_llama_dir, options, same_losses):
    dropout = 0.0 if "share_prompt_prefix" in options.get("training", {}) else 0.1  # one mask vs one per row
    common = {"training": {"max_steps": 3, "batch_size": 4, "share_prompt_prefix": False},
              "adapter": {"dropout": dropout}, "output": {"register_on_success": False}}
    plain = tiny_recipe(tmp_path / "plain", tiny_llama_dir, **common)
    changed = tiny_recipe(tmp_path / "changed", tiny_llama_dir, **common)
    for section, values in options.items():
        changed[section] = {**changed[section], **values}
    train(plain, progress=False)
    train(changed, progress=False)
    ours, theirs = _losses(tmp_path / "changed" / "run")[0], _losses(tmp_path / "plain" / "run")[0]
    assert len(ours) == 3 and all(math.isfinite(loss) for loss in ours)
    if same_losses:
        assert ours == pytest.approx(theirs, rel=1e-4)


def _losses(run: Path) -> tuple[list[float], list[float]]:
    history = json.loads((run / "metrics.json").read_text())["history"]
    return [row["loss"] for row in history["train"]], [row["loss"] for row in history["validation"]]


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(tmp_path, tiny_llama_dir, monkeypatch):
    settings = {"adapter": {"dropout": 0.2},  # dropout draws random numbers: the RNG state must resume too
                "training": {"max_steps": 6, "eval_every": 2, "save_every": 100, "batch_size": 3},
                "data": {"packing": True, "max_length": 256}}
    straight = tiny_recipe(tmp_path / "straight", tiny_llama_dir, train_rows=14, **settings)
    train(straight, progress=False)

    interrupted = tiny_recipe(tmp_path / "interrupted", tiny_llama_dir, train_rows=14, **settings)
    original_step = Trainer.train_step

    def step_then_ctrl_c(self):
        row = original_step(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return row

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    with pytest.raises(TrainingError, match=r"interrupted at step 3/6; nothing was registered.*--resume"):
        train(interrupted, progress=False)
    assert _registry(interrupted).list() == []
    assert (tmp_path / "interrupted" / "run" / "checkpoints" / "step-000003" / "optimizer.safetensors").is_file()
    monkeypatch.undo()
    record = train(interrupted, resume=True, progress=False).record

    assert record.ref == "tiny@1"
    assert _losses(tmp_path / "interrupted" / "run") == _losses(tmp_path / "straight" / "run")
    ours = load_file(tmp_path / "interrupted" / "run" / "adapter" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "straight" / "run" / "adapter" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_resume_refuses_a_changed_recipe_and_a_missing_run(tmp_path, tiny_llama_dir, monkeypatch):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 2},
                      output={"register_on_success": False, "prune_checkpoints": False})
    train(raw, progress=False)
    changed = raw | {"training": {**raw["training"], "lr": 5e-4}}
    with pytest.raises(TrainingError, match=r"recipe changed since the run started \(training.lr\)"):
        train(changed, resume=True, progress=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match="no run of 'other' with a checkpoint"):
        train(raw | {"name": "other", "output": {"register_on_success": False}}, resume=True, progress=False)
    with pytest.raises(TrainingError, match="already has checkpoints; continue it with --resume"):
        train(raw, progress=False)


def test_nan_loss_aborts_and_registers_nothing(tmp_path, tiny_llama_dir, monkeypatch):
    from adapterhub.training.lm_loss import SupervisedLM

    raw = tiny_recipe(tmp_path, tiny_llama_dir)
    monkeypatch.setattr(SupervisedLM, "forward",
                        lambda self, **inputs: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingError, match=r"loss became nan at step 1; nothing was registered\. Lower training.lr"):
        train(raw, progress=False)
    assert _registry(raw).list() == []


def test_bad_data_fails_before_anything_is_written(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir)
    write_jsonl(tmp_path / "train.jsonl", [{"text": "Flat quarter.", "label": "neutral"}])
    with pytest.raises(DataError, match=r"label\(s\) \['neutral'\]"):
        train(raw, progress=False)
    assert not (tmp_path / "run").exists() and _registry(raw).list() == []


def test_early_stopping_and_best_step(tmp_path, tiny_llama_dir):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={
        "max_steps": 10, "eval_every": 1, "early_stopping": {"patience": 2, "min_delta": 1.0e9}})
    metrics = train(raw, progress=False).record.manifest["metrics"]["train"]
    assert (metrics["steps"], metrics["stopped_early"], metrics["best_step"]) == (3, True, 1)


@pytest.mark.parametrize(("metric", "validation_passes"), [("accuracy", 2), ("loss", 3)])
def test_the_best_validation_is_not_scored_twice(tmp_path, tiny_llama_dir, monkeypatch, metric, validation_passes):
    """With label metrics at every evaluation, the exported (best) adapter's validation figures are
    the ones measured during training; watching the loss, the final pass adds the label metrics."""
    from adapterhub.training import evaluate

    passes = []
    real = evaluate.evaluate_split
    monkeypatch.setattr(evaluate, "evaluate_split", lambda *a, **k: passes.append(a[3].origin) or real(*a, **k))
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={
        "max_steps": 4, "eval_every": 2, "early_stopping": {"metric": metric}})
    result = train(raw, progress=False)
    assert sum("validation" in origin for origin in passes) == validation_passes, passes
    history = json.loads((result.run_dir / "metrics.json").read_text())["history"]["validation"]
    best = next(row for row in history if row["step"] == result.metrics["train"]["best_step"])
    assert result.metrics["validation"]["loss"] == best["loss"]
    assert "accuracy" in result.metrics["validation"]


def test_push_to_hub_goes_through_hubsync(tmp_path, tiny_llama_dir, monkeypatch):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 1}, output={"push_to_hub": "me/tiny"})
    pushed = []
    monkeypatch.setitem(sys.modules, "adapterhub.hf.sync",
                        types.SimpleNamespace(push=lambda ref, repo, registry: pushed.append((ref, repo))))
    train(raw, progress=False)
    assert pushed == [("tiny@1", "me/tiny")]

    def offline(ref, repo, registry):
        raise HubError("the Hub is unreachable")

    monkeypatch.setitem(sys.modules, "adapterhub.hf.sync", types.SimpleNamespace(push=offline))
    again = raw | {"output": {**raw["output"], "run_dir": str(tmp_path / "run2")}}
    with pytest.raises(HubError, match=r"tiny@2 was registered, but output.push_to_hub failed: the Hub is "
                                       r"unreachable; push it later with adapterhub.hf.push\('tiny@2', 'me/tiny'\)"
                       ) as caught:
        train(again, progress=False)
    assert caught.value.cli_message.endswith("push it later with `adapterhub push tiny@2 me/tiny`")


def test_qlora_on_a_4bit_base(tmp_path, tiny_llama_dir):
    pytest.importorskip("bitsandbytes")
    raw = tiny_recipe(tmp_path, tiny_llama_dir, base={"quantize": "nf4"}, training={"max_steps": 2},
                      adapter={"target_modules": ["q_proj", "v_proj"]})
    record = train(raw, progress=False).record
    assert record.method == "lora" and record.manifest["metrics"]["train"]["steps"] == 2


def test_evaluate_on_a_quantised_serving_base(tmp_path, tiny_llama_dir, capsys, monkeypatch):
    """An fp32-trained adapter scored on the base loaded in 4 bits: the figures differ from fp32 serving
    only through the base, and the output says which base it was."""
    pytest.importorskip("bitsandbytes")
    from adapterhub.cli import main
    from adapterhub.training.evaluate import evaluate_file

    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 2})
    registry = _registry(raw)
    train(raw, progress=False)
    data = tmp_path / "validation.jsonl"
    full = evaluate_file("tiny", data, registry=registry)
    four_bit = evaluate_file("tiny", data, registry=registry, quantize="nf4")
    assert (full["quantize"], four_bit["quantize"]) == (None, "nf4")
    assert four_bit["count"] == full["count"] and four_bit["loss"] != full["loss"]
    monkeypatch.setenv("ADAPTERHUB_REGISTRY", str(registry.root))
    assert main(["evaluate", "tiny", "--data", str(data), "--quantize", "nf4"]) == 0
    assert "(base loaded nf4)" in capsys.readouterr().out


def test_cli_train_new_check_and_evaluate(tmp_path, tiny_llama_dir, capsys):
    from adapterhub.cli import main

    raw = tiny_recipe(tmp_path, tiny_llama_dir)
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(json.dumps(raw))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "adapterhub", "train", str(recipe_file), "--set", "training.max_steps=2",
                           "--no-progress", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ref"] == "tiny@1" and result["metrics"]["train"]["steps"] == 2

    assert main(["recipe", "check", str(recipe_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["rows"] == 16
    assert main(["recipe", "check", str(recipe_file), "--set", "data.labels=[a, b]"]) == 2
    assert "not in data.labels" in capsys.readouterr().err
    os.environ["ADAPTERHUB_REGISTRY"] = raw["output"]["registry"]
    try:
        assert main(["evaluate", "tiny", "--data", str(tmp_path / "validation.jsonl"), "--base", str(tiny_llama_dir),
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["count"] == 6
    finally:
        del os.environ["ADAPTERHUB_REGISTRY"]
    starter = tmp_path / "new" / "recipe.yaml"
    assert main(["recipe", "new", str(starter)]) == 0 and "adapterhub train " + str(starter) in starter.read_text()
    assert main(["recipe", "new", str(starter)]) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.realbase
def test_real_base_smoke(tmp_path):
    """A few steps of the shipped finance recipe on the real 135M base, registered and evaluated."""
    rows = [json.loads(line) for line in (REPO / "recipes/data/finance/validation.jsonl").read_text().splitlines()]
    small = write_jsonl(tmp_path / "validation.jsonl", rows[:6])
    record = train(REPO / "recipes" / "finance.yaml", progress=False, overrides=[
        "training.max_steps=2", "training.batch_size=2", "training.eval_base=false", f"data.validation={small}",
        "data.test=null", f"output.registry={tmp_path / 'registry'}", f"output.run_dir={tmp_path / 'run'}",
        "output.register_anyway=true"]).record  # two steps is a smoke test: no accuracy to beat chance with
    assert record.ref == "finance@1" and record.base_fingerprint.startswith("llama-30L-576h")
    assert record.manifest["metrics"]["validation"]["count"] == 6


def test_two_cli_trainings_started_in_one_second_get_their_own_run_folders(tmp_path, tiny_llama_dir, capsys,
                                                                            monkeypatch):
    from adapterhub.cli import main
    from adapterhub.training import run_dir as runs

    raw = tiny_recipe(tmp_path, tiny_llama_dir)
    raw["output"].pop("run_dir", None)
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *args: "20261127-120000")  # one second for both
    folders = []
    for _ in range(2):
        assert main(["train", str(recipe_file), "--set", "training.max_steps=1", "--no-progress", "--json"]) == 0
        folders.append(json.loads(capsys.readouterr().out)["run_dir"])
    assert folders == ["runs/tiny-20261127-120000", "runs/tiny-20261127-120000-2"]


def test_a_run_folder_adapter_keeps_the_task_it_was_trained_for(tmp_path, tiny_llama_dir, tiny_base):
    """``hub.load("runs/<run>/adapter")`` serves the classifier with its labels, as the registered one does."""
    from adapterhub import AdapterHub

    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 2},
                      output={"register_on_success": False, "prune_checkpoints": False})
    result = train(raw, progress=False)
    assert result.record is None and (result.run_dir / "checkpoints").is_dir()  # kept when asked
    manifest = json.loads((result.run_dir / "adapter" / "adapterhub.json").read_text())
    assert manifest["task"]["labels"] == ["positive", "negative"] and manifest["base"]["fingerprint"]
    assert manifest["metrics"]["validation"]["count"] == 6
    hub = AdapterHub(tiny_base, registry=tmp_path / "no-registry")
    info = hub.load(result.run_dir / "adapter", name="tiny")
    assert info.task == "classification"
    assert hub.predict(["Revenue rose."], domain="tiny")[0] in ("positive", "negative")


def test_the_training_bar_stays_finished_and_evaluation_shows_progress(tmp_path, tiny_llama_dir, capsys):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 2}, data={"test": str(tmp_path / "validation.jsonl")})
    train(raw, progress=True)
    renders = [part.strip() for part in capsys.readouterr().err.replace("\r", "\n").split("\n") if part.strip()]
    first_eval = next(i for i, text in enumerate(renders) if text.startswith("evaluate validation (tiny)"))
    assert not any(text.startswith("train tiny") for text in renders[first_eval:]), "training bar redrawn later"
    assert any(text.startswith("evaluate test (tiny)") and "6/6" in text for text in renders)  # one pass: loss + labels


@pytest.mark.parametrize("when", ["ctrl-c during the final evaluation", "second ctrl-c during the final evaluation"])
def test_ctrl_c_after_training_registers_nothing(tmp_path, tiny_llama_dir, monkeypatch, when):
    """Issue 13: a first Ctrl-C while evaluating was swallowed and the adapter registered anyway."""
    raw = tiny_recipe(tmp_path, tiny_llama_dir, training={"max_steps": 2})
    original = Trainer.final_metrics

    def interrupted_metrics(self):
        metrics = original(self)
        if when.startswith("second"):
            raise KeyboardInterrupt  # what the restored handler raises on a second Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)  # noted by the handler; the evaluation itself finishes
        return metrics

    monkeypatch.setattr(Trainer, "final_metrics", interrupted_metrics)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when pytest runs as a background job
    with pytest.raises(TrainingError, match="interrupted after training, before registering; nothing was registered"):
        train(raw, progress=False)
    assert _registry(raw).list() == []
    assert signal.getsignal(signal.SIGINT) is before  # the handler was restored


def test_qlora_can_keep_chosen_layers_in_full_precision(tmp_path, tiny_llama_dir):
    """base.keep_full_precision: those linear layers stay torch.nn.Linear under the 4-bit base; the rest are 4-bit."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from adapterhub.errors import RecipeError

    raw = tiny_recipe(tmp_path, tiny_llama_dir, base={"quantize": "nf4", "keep_full_precision": ["down_proj"],
                                                      "double_quant": False},
                      training={"max_steps": 1}, output={"register_on_success": False})
    trainer = Trainer(load_recipe(raw), run_dir=tmp_path / "kept", progress=False)
    trainer.setup()
    try:
        kinds = {name.rsplit(".", 1)[-1]: type(module.base_layer) for name, module in trainer.peft_model.named_modules()
                 if hasattr(module, "base_layer") and name.endswith(("down_proj", "up_proj"))}
        assert kinds["down_proj"] is torch.nn.Linear and issubclass(kinds["up_proj"], bnb.nn.Linear4bit)
        trainer.train_step()
    finally:
        trainer.cleanup()
    with pytest.raises(RecipeError, match="base.keep_full_precision needs base.quantize"):
        load_recipe(tiny_recipe(tmp_path, tiny_llama_dir, base={"keep_full_precision": ["down_proj"]}))
