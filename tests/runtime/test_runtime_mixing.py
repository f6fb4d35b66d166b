"""Weighted mixes at run time equal PEFT's ``cat`` merge of the same adapters with the same weights."""

from __future__ import annotations

import pytest
import torch

from adapterhub.errors import ConfigError
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.mixing import Mix, format_mix, parse_mix
from adapterhub.runtime.testing import make_random_adapters

ATOL = 1e-4
ADAPTERS = {
    "finance": dict(r=4),
    "legal": dict(r=8, lora_alpha=5, target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={"v_proj": 2},
                  alpha_pattern={"down_proj": 3}),
    "medical": dict(r=2, lora_alpha=7),
    "adalora": dict(method="adalora", r=4),
    "prefix": dict(method="prefix", num_virtual_tokens=3),
    "ia3": dict(method="ia3"),
    "dora": dict(r=2, use_dora=True, target_modules=["q_proj"]),
}
MIXES = [
    {"finance": 0.7, "legal": 0.3},
    {"legal": 1.5, "medical": -0.5, "finance": 0.25},
    {"medical": 1.0},
]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixing")
    return {name: make_random_adapters(tiny_base, root, prefix=name, seed=40 + i, **options)[0]
            for i, (name, options) in enumerate(ADAPTERS.items())}


TASK = {"type": "classification", "labels": ["positive", "negative", "neutral"], "chat": False,
        "prompt_template": "Sentiment: {text}\n"}


@pytest.fixture(scope="module")
def hub(tiny_base, adapter_dirs):
    from adapterhub.runtime.testing import write_manifest

    write_manifest(adapter_dirs["legal"], task=TASK)  # the heaviest adapter of MIXES[1]: its task answers
    with AdapterHub(tiny_base) as hub:
        for name, path in adapter_dirs.items():
            hub.load(path, name=name)
        yield hub


def cat_merge(tiny_base, adapter_dirs, mix):
    """A fresh PEFT model holding PEFT's own cat merge of ``mix`` (as the active adapter)."""
    from peft import PeftModel

    from adapterhub.base import load_base

    fresh = load_base(tiny_base.spec.path, device="cpu", progress=False)
    names = list(mix)
    model = PeftModel.from_pretrained(fresh.model, str(adapter_dirs[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapter_dirs[name]), adapter_name=name)
    model.add_weighted_adapter(names, list(mix.values()), "mix", combination_type="cat")
    model.set_adapter("mix")
    return model.eval()


@pytest.mark.parametrize("mix", MIXES, ids=[format_mix(m) for m in MIXES])
def test_a_mix_equals_the_peft_cat_merge(hub, tiny_base, adapter_dirs, mix):
    ids = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = cat_merge(tiny_base, adapter_dirs, mix)(input_ids=ids).logits
    assert torch.allclose(hub.logits(ids, domain=mix), expected, atol=ATOL)
    assert torch.allclose(hub.logits(ids, domain=format_mix(mix)), expected, atol=ATOL)  # the service's string form


def test_mixes_per_row_beside_adapters_and_the_bare_base(hub, tiny_base, adapter_dirs):
    rows = [MIXES[0], "prefix", None, MIXES[1], "ia3", MIXES[0], "finance", "finance:0.7+legal:0.3"]
    ids = torch.randint(0, 300, (len(rows), 12), generator=torch.Generator().manual_seed(2))
    got = hub.logits(ids, domains=rows)
    for i, row in enumerate(rows):
        alone = hub.logits(ids[i], domain=row)[0]
        assert torch.allclose(got[i], alone, atol=ATOL), (i, row)
    assert torch.allclose(got[7], hub.logits(ids[7], domain=MIXES[0])[0], atol=1e-6)  # string = dict
    merged = cat_merge(tiny_base, adapter_dirs, MIXES[1])
    with torch.no_grad():
        assert torch.allclose(got[3], merged(input_ids=ids[3:4]).logits[0], atol=ATOL)
    # nothing stays behind: the virtual slots are gone from every layer after the call
    assert all(set(layer.weights) <= {hub.residency.get(info.name).slot for info in hub.resident()}
               for method in ("lora", "adalora") for slot in hub.residency.methods[method]._slot_layers
               for layer in hub.residency.methods[method].slot_layers(slot))


def test_a_mix_may_hold_adalora_and_equals_the_sum_of_deltas(hub):
    ids = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(3))
    bare = hub.logits(ids, domain=None)
    one = hub.logits(ids, domain={"adalora": 1.0})
    assert torch.allclose(one, hub.logits(ids, domain="adalora"), atol=ATOL)
    zero = hub.logits(ids, domain={"adalora": 0.0, "finance": 0.0})
    assert torch.allclose(zero, bare, atol=ATOL)


def test_generation_takes_mixes_per_row(hub):
    prompts = ["The quarterly revenue of the company rose", "Patient reports chest pain"]
    mixed = hub.generate(prompts, domains=[MIXES[0], "medical"], max_new_tokens=5)
    assert mixed == [hub.generate(prompts[0], domain=MIXES[0], max_new_tokens=5),
                     hub.generate(prompts[1], domain="medical", max_new_tokens=5)]


@pytest.mark.parametrize("member", ["prefix", "ia3"])
def test_non_lora_members_are_refused_clearly(hub, member):
    with pytest.raises(ConfigError, match=f"{member!r} is a .* adapter and cannot join the weighted mix"):
        hub.logits(torch.arange(4), domain={"finance": 0.5, member: 0.5})


def test_dora_members_are_refused(hub):
    with pytest.raises(ConfigError, match="DoRA"):
        hub.logits(torch.arange(4), domain={"finance": 0.5, "dora": 0.5})


def test_mix_strings_parse_and_format():
    assert parse_mix("finance@2:0.7+hf://acme/legal:0.3") == Mix((("finance@2", 0.7), ("hf://acme/legal", 0.3)))
    assert parse_mix("legal") is None and parse_mix("hf://acme/legal@main") is None
    for bad in ["finance:0.7+legal", "a:1+a:2"]:
        with pytest.raises(ConfigError):
            parse_mix(bad)
    with pytest.raises(ConfigError, match="finite number"):
        Mix.of({"finance": "lots"})
    assert str(parse_mix(format_mix({"a": 0.25, "b": 1.0}))) == "a:0.25+b:1"


def test_predict_scores_a_mix_like_the_peft_cat_merge(hub, tiny_base, adapter_dirs):
    from adapterhub.prompts import TaskSpec
    from adapterhub.training.evaluate import label_score_matrix

    texts = ["Revenue rose and margins widened.", "Guidance was cut again."]
    got = hub.label_scores(texts, domains=[MIXES[1], "finance:0.25+legal:1.5+medical:-0.5"])
    expected = label_score_matrix(cat_merge(tiny_base, adapter_dirs, MIXES[1]), tiny_base.tokenizer,
                                  TaskSpec.from_dict(TASK), texts)
    for row, scores in zip(expected.tolist(), got):
        assert list(scores) == TASK["labels"] and list(scores.values()) == pytest.approx(row, abs=1e-4)
    assert hub.predict(texts[0], domain=MIXES[1]) == max(got[0], key=got[0].get)
