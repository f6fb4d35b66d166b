"""Serving contracts in the registry: recorded by ``set-contract`` (and training) as new immutable versions with
the same verified files; manifests without one are unchanged; ``registry show`` and the model card show them."""

from __future__ import annotations

import json

import pytest

from adapterhub.cli import main
from adapterhub.errors import ContractError, InvalidAdapterError
from adapterhub.hf.modelcard import render_model_card
from adapterhub.registry import Registry
from adapterhub.registry.contract import Contract, ServeDefaults, set_contract, trained_contract
from adapterhub.registry.manifest import MANIFEST_FILE, WEIGHTS_FILE, read_adapter_dir, recorded_fields

SCHEMA = {"type": "object", "properties": {"subject": {"enum": ["physics", "history"]}}, "required": ["subject"]}


@pytest.fixture
def registry(registry_root, lora_dir) -> Registry:
    registry = Registry(registry_root)
    registry.add(lora_dir, "legal", tags=["prod"])
    return registry


def test_entries_without_a_contract_keep_their_manifest(registry):
    record = registry.get("legal@1")
    assert "contract" not in json.loads((record.path / MANIFEST_FILE).read_text())
    assert record.contract is None


def test_set_contract_is_a_new_version_with_the_same_verified_files(registry):
    before = (registry.get("legal@1").path / MANIFEST_FILE).read_bytes()
    record = set_contract(registry, "legal@prod", {"temperature": 0.2, "stop": ["###"], "schema": SCHEMA,
                                                   "evaluated_on": {"none": {"accuracy": 0.9}}},
                          template={"system_prompt": "Answer in JSON."})
    assert record.ref == "legal@2" and registry.get("legal@prod").version == 1  # no tag moved
    assert (registry.get("legal@1").path / MANIFEST_FILE).read_bytes() == before  # @1 untouched: immutable
    old, new = registry.get("legal@1").manifest, record.manifest
    assert new["files"] == old["files"] and new["source"]["contract_of"] == "legal@1"
    assert new["task"]["system_prompt"] == "Answer in JSON."
    assert record.contract == Contract.model_validate({"temperature": 0.2, "stop": ["###"], "schema": SCHEMA,
                                                       "evaluated_on": {"none": {"accuracy": 0.9}}})
    assert registry.verify() == []
    again = set_contract(registry, "legal@2", {"temperature": None, "evaluated_on": {"nf4": {"accuracy": 0.8}}})
    assert again.contract.temperature is None and set(again.contract.evaluated_on) == {"none", "nf4"}
    assert again.contract.stop == ["###"]  # merged over the previous contract


def test_exported_contract_travels_and_is_validated(registry, tmp_path):
    set_contract(registry, "legal@1", {"max_tokens": 12})
    folder = registry.export("legal@2", tmp_path / "out")
    assert Registry(tmp_path / "other").add(folder, "legal").contract.max_tokens == 12
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["contract"] = {"max_tokens": "many"}
    with pytest.raises(InvalidAdapterError, match="contract"):
        recorded_fields(manifest, where="x")


@pytest.mark.parametrize("changes, words", [
    ({"schema": {"type": "array", "uniqueItems": True}}, "uniqueItems"),
    ({"temperature": 5}, "temperature"),
    ({"evaluated_on": {"q3": {"accuracy": 1}}}, "q3"),
    ({"stop": [""]}, "stop"),
])
def test_invalid_contract_is_one_clear_error_and_writes_nothing(registry, changes, words):
    with pytest.raises(ContractError, match=words):
        set_contract(registry, "legal@1", changes)
    assert [r.ref for r in registry.list()] == ["legal@1"]


def test_trained_contract_records_the_serve_section_and_scores():
    serve = ServeDefaults.model_validate({"schema": SCHEMA, "temperature": 0})
    contract = trained_contract(serve, {"test": {"accuracy": 0.91, "count": 40, "confusion": [[1]]}}, "nf4")
    assert contract == {"temperature": 0.0, "schema": SCHEMA, "evaluated_on": {"nf4": {"accuracy": 0.91, "count": 40}}}
    assert trained_contract(ServeDefaults(), {}, None) is None


def test_cli_set_contract_and_show(registry, tmp_path, capsys):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    code = main(["registry", "set-contract", "legal@1", "--temperature", "0", "--stop", "###", "--schema", str(schema),
                 "--evaluated", "nf4:accuracy=0.88", "--system-prompt", "Be brief."])
    out, err = capsys.readouterr()
    assert code == 0 and "legal@2" in out, err
    assert main(["registry", "show", "legal@2"]) == 0
    shown = capsys.readouterr().out
    for words in ("contract temperature", "###", "contract evaluated on nf4", "accuracy=0.88", "Be brief."):
        assert words in shown
    assert main(["registry", "set-contract", "legal@1", "--evaluated", "nf4:accuracy"]) != 0
    assert "QUANT:METRIC=NUMBER" in capsys.readouterr().err


def test_model_card_shows_the_contract(registry):
    record = set_contract(registry, "legal@1", {"schema": SCHEMA, "evaluated_on": {"none": {"accuracy": 0.9}}})
    config = json.loads(read_adapter_dir(record.path).files["adapter_config.json"])
    card = render_model_card(record.manifest, config, repo_id="acme/legal")
    assert "## Serving contract" in card and '"subject"' in card and '"evaluated_on"' in card
    assert "## Serving contract" not in render_model_card(registry.get("legal@1").manifest, config, repo_id="a/b")
    assert (record.path / WEIGHTS_FILE).read_bytes() == (registry.get("legal@1").path / WEIGHTS_FILE).read_bytes()
