"""``adapterhub merge``: PEFT merges registered as new versions with lineage, refused across bases, evaluated."""

from __future__ import annotations

import json

import pytest
import torch

from adapterhub.cli import main
from adapterhub.errors import ConfigError, IncompatibleBaseError
from adapterhub.registry import Registry
from adapterhub.training import merge_adapters
from adapterhub.training.trainer import train
from tests.helpers.recipes import tiny_recipe


@pytest.fixture(scope="module")
def parents(tmp_path_factory, tiny_llama_dir):
    """Two tiny classification LoRAs (different seeds and ranks) in one registry: a@1 and b@1."""
    folder = tmp_path_factory.mktemp("merge")
    registry = folder / "registry"
    for name, seed, rank in (("a", 0, 4), ("b", 1, 2)):
        raw = tiny_recipe(folder / name, tiny_llama_dir, name=name, adapter={"method": "lora", "r": rank, "alpha": 8},
                          training={"max_steps": 3, "seed": seed, "lr": 5e-3},
                          output={"registry": str(registry), "run_dir": str(folder / name / "run")})
        train(raw, progress=False)
    return Registry(registry)


def test_cat_merge_records_lineage_and_kept_accuracy(parents, tiny_base):
    result = merge_adapters(["a", "b@1"], weights=[0.7, 0.3], how="cat", name="ab", registry=parents, base=tiny_base)
    record = result.record
    source = record.manifest["source"]
    assert (record.ref, record.method, source["kind"], source["how"], source["weights"]) == \
        ("ab@1", "lora", "merged", "cat", [0.7, 0.3])
    a, b = parents.get("a"), parents.get("b")
    assert [p["ref"] for p in source["parents"]] == ["a@1", "b@1"]
    assert source["parents"][0]["weights_sha256"] == a.manifest["files"]["adapter_model.safetensors"]["sha256"]
    assert source["parents"][1]["base_fingerprint"] == b.base_fingerprint == tiny_base.fingerprint
    assert [row["ref"] for row in result.report] == ["a@1", "b@1"]
    for row in result.report:
        assert row["rows"] == 6 and 0 <= row["merged_accuracy"] <= 1
        assert row["kept"] == pytest.approx(row["merged_accuracy"] / row["parent_accuracy"], abs=1e-3)
    assert record.manifest["metrics"]["merge"] == result.report
    assert record.task == a.task
    assert not any("lora" in name for name, _ in tiny_base.model.named_modules()), "the base is given back unchanged"


def test_the_cat_merge_equals_the_runtime_mix(parents, tiny_base):
    from adapterhub.runtime import AdapterHub

    merge_adapters(["a", "b"], weights=[1.5, -0.5], how="cat", name="ab-cat", registry=parents, base=tiny_base,
                   evaluate=False)
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    with AdapterHub(tiny_base, registry=parents) as hub:
        assert torch.allclose(hub.logits(ids, domain="ab-cat"), hub.logits(ids, domain={"a": 1.5, "b": -0.5}),
                              atol=1e-4)


@pytest.mark.parametrize("how", ["linear", "svd", "ties", "dare_linear", "dare_ties"])
def test_every_how_registers(parents, tiny_base, how):
    if how in ("linear", "ties", "dare_linear", "dare_ties"):  # PEFT needs one rank for these
        with pytest.raises(ConfigError, match="cat or svd"):
            merge_adapters(["a", "b"], how=how, name=f"ab-{how.replace('_', '-')}", registry=parents, base=tiny_base)
        refs = ["a@1", "a@1"]
    else:
        refs = ["a", "b"]
    result = merge_adapters(refs, how=how, name=f"m-{how.replace('_', '-')}", registry=parents, base=tiny_base,
                            evaluate=False)
    assert result.record.manifest["source"]["how"] == how
    assert result.record.manifest["source"]["density"] == (0.5 if how in ("ties", "dare_linear", "dare_ties") else None)


def test_parents_on_different_bases_are_refused(parents, tiny_base, other_tiny_llama_dir, tmp_path):
    from adapterhub import load_base
    from adapterhub.runtime.testing import make_random_adapters

    other = load_base(str(other_tiny_llama_dir), device="cpu")
    path = make_random_adapters(other, tmp_path, r=4)[0]
    parents.add(path, "elsewhere", base=other)
    with pytest.raises(IncompatibleBaseError, match="different bases"):
        merge_adapters(["a", "elsewhere"], name="bad", registry=parents, base=tiny_base)
    assert [r.name for r in parents.list() if r.name == "bad"] == []


def test_non_lora_parents_and_bad_arguments_are_refused(parents, tiny_base, tmp_path):
    from adapterhub.runtime.testing import make_random_adapters

    parents.add(make_random_adapters(tiny_base, tmp_path, method="prefix")[0], "pfx", base=tiny_base)
    with pytest.raises(ConfigError, match="prefix adapter; merges combine LoRA"):
        merge_adapters(["a", "pfx"], name="bad", registry=parents, base=tiny_base)
    with pytest.raises(ConfigError, match="one weight per adapter"):
        merge_adapters(["a", "b"], weights=[1.0], name="bad", registry=parents, base=tiny_base)
    with pytest.raises(ConfigError, match="two or more"):
        merge_adapters(["a"], name="bad", registry=parents, base=tiny_base)


def test_cli_merge_show_and_model_card(parents, tiny_llama_dir, capsys):
    from adapterhub.hf.modelcard import render_model_card

    code = main(["merge", "a", "b", "--weights", "1", "1", "--how", "svd", "--name", "ab-cli", "--registry",
                 str(parents.root), "--base", str(tiny_llama_dir)])
    out = capsys.readouterr().out
    assert code == 0 and "ab-cli@1" in out and "svd merge of a@1 (x1, sha256" in out and "kept" in out
    assert main(["registry", "--root", str(parents.root), "show", "ab-cli"]) == 0
    shown = capsys.readouterr().out
    assert "svd merge of a@1" in shown and "merge: a@1 keeps" in shown
    record = parents.get("ab-cli")
    card = render_model_card(record.manifest, json.loads((record.path / "adapter_config.json").read_text()),
                             repo_id="acme/ab")
    assert "## Lineage" in card and "`a@1`" in card and record.manifest["source"]["parents"][1]["weights_sha256"] in card
    assert main(["merge", "a", "pfx-missing", "--name", "x", "--registry", str(parents.root)]) == 2
