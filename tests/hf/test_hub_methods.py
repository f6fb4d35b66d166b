"""AdaLoRA, IA³, LoHa and bottleneck adapters go to the Hub and come back unchanged; bottleneck cards warn about PEFT."""

from __future__ import annotations

import pytest
import torch

from adapterhub.hf import pull, push
from adapterhub.runtime.testing import make_random_adapters


@pytest.mark.parametrize("options", [dict(method="adalora", r=4), dict(method="ia3"), dict(method="loha", r=4),
                                     dict(method="bottleneck", placement="pfeiffer", reduction_factor=8)],
                         ids=lambda options: options["method"])
def test_push_pull_round_trip_serves_the_same_rows(hub_env, registry, fresh, tiny_base, tmp_path, options):
    from adapterhub.runtime import AdapterHub

    method = options["method"]
    path = make_random_adapters(tiny_base, tmp_path, **options)[0]
    registry.add(path, method, domain="finance", base=tiny_base)
    pushed = push(method, f"alice/{method}", registry=registry)
    pulled = pull(f"alice/{method}", base=tiny_base, registry=fresh)
    assert (pulled.method, pulled.manifest["source"]["commit"]) == (method, pushed.commit)
    assert pulled.manifest["files"] == registry.get(method).manifest["files"]
    ids = torch.tensor([[3, 17, 29, 41, 5]])
    with AdapterHub(tiny_base, registry=registry) as ours, AdapterHub(tiny_base, registry=fresh) as theirs:
        assert torch.equal(ours.logits(ids, domain=method), theirs.logits(ids, domain=method))


def test_bottleneck_model_card_says_peft_cannot_load_it(tiny_base, registry, tmp_path):
    import json

    from adapterhub.hf.modelcard import render_model_card

    path = make_random_adapters(tiny_base, tmp_path, method="bottleneck")[0]
    record = registry.add(path, "bn", base=tiny_base)
    card = render_model_card(record.manifest, json.loads((record.path / "adapter_config.json").read_text()),
                             repo_id="acme/bn")
    assert "plain PEFT\ncannot load" in card and "PeftModel.from_pretrained" not in card
    assert "bottleneck adapter (houlsby, reduction_factor=16" in card and "library_name: adapterhub" in card
