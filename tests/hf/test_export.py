"""``registry export``: the base's public id instead of a local path, a model card, and a label-scoring script
for plain PEFT whose numbers are adapterhub's."""

from __future__ import annotations

import hashlib
import json
import runpy

import pytest

from adapterhub.cli import main
from adapterhub.hf.export import export_adapter
from adapterhub.registry import Registry
from adapterhub.runtime import AdapterHub
from adapterhub.training import train
from tests.helpers.recipes import tiny_recipe

TEXTS = ["Revenue rose and margins widened.", "Guidance was cut again after a loss."]


@pytest.fixture(scope="module")
def trained(tiny_llama_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    raw = tiny_recipe(folder, tiny_llama_dir, training={"max_steps": 4, "lr": 5e-3},
                      data={"prompt_template": "Sentiment ({labels}) of: {text}\n", "chat": False})
    train(raw, progress=False)
    return Registry(raw["output"]["registry"])


def test_export_names_the_public_base_and_writes_a_card(trained, tmp_path, capsys):
    done = export_adapter("tiny", tmp_path / "out", registry=trained, base_id="acme/tiny-llama",
                          repo_id="acme/tiny-sentiment")
    assert done.base_id == "acme/tiny-llama"
    assert done.files == ["README.md", "adapter_config.json", "adapter_model.safetensors", "adapterhub.json",
                          "label_scoring.py"]
    config_bytes = (done.path / "adapter_config.json").read_bytes()
    assert json.loads(config_bytes)["base_model_name_or_path"] == "acme/tiny-llama"
    manifest = json.loads((done.path / "adapterhub.json").read_text())
    assert manifest["files"]["adapter_config.json"]["sha256"] == hashlib.sha256(config_bytes).hexdigest()
    card = (done.path / "README.md").read_text()
    fingerprint = trained.get("tiny").base_fingerprint
    assert "base_model: acme/tiny-llama" in card and fingerprint in card
    assert "## Label scoring with plain PEFT" in card and "acme/tiny-sentiment" in card
    assert trained.verify("tiny") == []  # the registry's own copy is untouched

    # without a public id: the local path stays, and the command line says how to name one
    assert main(["registry", "--registry", str(trained.root), "export", "tiny", str(tmp_path / "plain")]) == 0
    assert "pass --base-id ORG/NAME" in capsys.readouterr().err
    assert (tmp_path / "plain" / "README.md").is_file()


def test_the_label_scoring_script_matches_hub_label_scores(trained, tiny_base, tiny_llama_dir, tmp_path, monkeypatch):
    done = export_adapter("tiny", tmp_path / "out", registry=trained, base_id="acme/tiny-llama")
    monkeypatch.setenv("BASE_MODEL", str(tiny_llama_dir))  # the public id is not reachable here
    script = runpy.run_path(str(done.path / "label_scoring.py"))
    with AdapterHub(tiny_base, registry=trained) as hub:
        expected = hub.label_scores(TEXTS, domain="tiny")
    for text, ours in zip(TEXTS, expected):
        theirs = script["label_scores"](text)
        assert list(theirs) == list(ours)
        assert theirs == pytest.approx(ours, abs=1e-3)
    assert len({round(v, 3) for v in expected[0].values()}) > 1, "the trained labels score differently"
