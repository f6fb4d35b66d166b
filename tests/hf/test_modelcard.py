"""The model card pushed beside an adapter: Hub front matter and a useful body."""

from __future__ import annotations

import pytest
import yaml

from adapterhub.hf.modelcard import card_metadata, hub_base_model, render_model_card

MANIFEST = {
    "name": "legal", "version": 3, "domain": "legal", "method": "lora", "tags": ["prod"],
    "base": {"fingerprint": "llama-30-abc", "name": "smollm2-135m-instruct"},
    "task": {"type": "classification", "labels": ["termination", "governing_law"],
             "prompt_template": "Clause type?\n{text}", "system_prompt": "You are a lawyer.", "chat": True},
    "metrics": {"accuracy": 0.912345, "eval_loss": 0.25}, "recipe": {"method": "lora", "r": 8, "epochs": 2},
    "description": "Contract clause types.",
}
CONFIG = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["v_proj", "q_proj"],
          "base_model_name_or_path": "/home/me/.cache/adapterhub/models/smollm2-135m-instruct"}


def split_card(card: str) -> tuple[dict, str]:
    _, front, body = card.split("---\n", 2)
    return yaml.safe_load(front), body


def test_front_matter_is_what_the_hub_indexes():
    metadata, _ = split_card(render_model_card(MANIFEST, CONFIG, repo_id="acme/legal-lora"))
    assert metadata == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "library_name": "peft",
                        "pipeline_tag": "text-generation", "tags": ["adapterhub", "peft", "lora", "legal", "prod"]}


def test_body_has_metrics_recipe_task_and_usage():
    _, body = split_card(render_model_card(MANIFEST, CONFIG, repo_id="acme/legal-lora"))
    assert "| accuracy | 0.9123 |" in body and "| eval_loss | 0.25 |" in body
    assert yaml.safe_load(body.split("```yaml\n")[1].split("```")[0]) == MANIFEST["recipe"]
    assert "`termination`, `governing_law`" in body and "Clause type?\n{text}" in body
    assert "adapterhub pull acme/legal-lora" in body and "hf://acme/legal-lora@<revision>" in body
    assert 'PeftModel.from_pretrained(base, "acme/legal-lora")' in body
    assert 'from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in body
    assert "# legal\n" in body and "A LoRA adapter (r=8, alpha=16, targets: q_proj, v_proj)" in body


@pytest.mark.parametrize("base_name, config_base, expected", [
    ("smollm2-135m-instruct", None, "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("acme/base-7b", None, "acme/base-7b"),
    ("/tmp/tiny-llama", None, None),
    (None, "acme/from-config", "acme/from-config"),
    ("/tmp/tiny-llama", "/tmp/tiny-llama", None),
    (None, None, None),
])
def test_hub_base_model(base_name, config_base, expected):
    config = {"base_model_name_or_path": config_base} if config_base else {}
    assert hub_base_model({"base": {"name": base_name}}, config) == expected


def test_imported_generation_adapter_without_metrics_or_base():
    manifest = {"name": "plain", "version": 1, "domain": None, "method": "lora", "task": {"type": "generation"},
                "base": {"fingerprint": None, "name": None}, "metrics": {}, "recipe": None}
    card = render_model_card(manifest, repo_id="acme/plain")
    metadata, body = split_card(card)
    assert "base_model" not in metadata and metadata["tags"] == ["adapterhub", "peft", "lora"]
    assert "No metrics were recorded" in body and "No training recipe" in body and "Free text generation" in body
    assert card_metadata(manifest)["library_name"] == "peft"
