"""Encoder adapters on one resident encoder equal plain PEFT with each adapter alone (1e-4, fp32).

Every adapter in ``ADAPTERS`` (sequence and token classification, several LoRA settings) is
compared with ``PeftModel.from_pretrained(AutoModelFor{Sequence,Token}Classification(base), dir)``:
alone, in mixed batches of every adapter (classifiers and taggers together), with bare rows,
and after loads and evictions. Then ``classify``/``tag`` results and the refusals.
"""

from __future__ import annotations

import pytest
import torch

from adapterhub import load_base
from adapterhub.base.tiny import make_tiny_bert
from adapterhub.errors import IncompatibleBaseError, TaskMismatchError
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.testing import load_peft_encoder, make_random_adapters, make_random_encoder_adapters

ATOL = 1e-4
SEQ_LABELS = ("positive", "negative", "neutral")
TYPES = ("DRUG", "DISEASE")
ADAPTERS = {  # name -> make_random_encoder_adapters options
    "seq-r4-all": dict(task_type="SEQ_CLS", r=4),
    "seq-r8-qv": dict(task_type="SEQ_CLS", r=8, target_modules=["query", "value"], labels=("yes", "no")),
    "seq-rslora": dict(task_type="SEQ_CLS", r=4, lora_alpha=3, use_rslora=True, target_modules=["key", "dense"]),
    "tok-r4-all": dict(task_type="TOKEN_CLS", r=4, labels=TYPES),
    "tok-r2-patterns": dict(task_type="TOKEN_CLS", r=2, labels=("ORG", "MONEY", "PERCENT"),
                            rank_pattern={"value": 5}, alpha_pattern={"query": 7}),
    "tok-dora": dict(task_type="TOKEN_CLS", r=4, labels=TYPES, use_dora=True, target_modules=["query", "value"]),
}
NAMES = list(ADAPTERS)
TEXTS = ["Aspirin and metformin were started for type 2 diabetes.", "Apple reported revenue of $4.2 billion, up 8%.",
         "The patient with COPD denies chest pain.", "Shares rose.", "No fever, mild headache, productive cough.",
         "Goldman Sachs said 70 cents a share."]


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory):
    return load_base(str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))), device="cpu")


@pytest.fixture(scope="module")
def adapter_dirs(bert_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder-adapters")
    return {name: make_random_encoder_adapters(bert_base, root, prefix=name, seed=10 * index, **options)[0]
            for index, (name, options) in enumerate(ADAPTERS.items())}


def _num_labels(name):
    options = ADAPTERS[name]
    labels = options.get("labels", SEQ_LABELS if options["task_type"] == "SEQ_CLS" else TYPES)
    return len(labels) if options["task_type"] == "SEQ_CLS" else 1 + 2 * len(labels)


@pytest.fixture(scope="module")
def references(bert_base, adapter_dirs):
    return {name: load_peft_encoder(bert_base, path, task_type=ADAPTERS[name]["task_type"],
                                    num_labels=_num_labels(name)) for name, path in adapter_dirs.items()}


@pytest.fixture(scope="module")
def hub(bert_base, adapter_dirs):
    with AdapterHub(bert_base) as hub:
        for name, path in adapter_dirs.items():
            hub.load(path, name=name)
        yield hub


def reference_logits(model, texts, tokenizer):
    encoded = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**encoded).logits


@pytest.mark.parametrize("name", NAMES)
def test_each_adapter_alone_equals_peft(hub, references, bert_base, name):
    ours = hub.head_logits(TEXTS, domain=name)
    expected = reference_logits(references[name], TEXTS, bert_base.tokenizer)
    for row, logits in enumerate(ours):
        torch.testing.assert_close(logits, expected[row], atol=ATOL, rtol=0)


@pytest.mark.parametrize("rotation", range(3))
def test_mixed_batch_of_every_adapter_and_bare_rows(hub, references, bert_base, rotation):
    domains = [*NAMES[rotation:], *NAMES[:rotation], None, NAMES[0]][:len(TEXTS) + 2]
    texts = (TEXTS * 2)[:len(domains)]
    ours = hub.head_logits(texts, domains=domains)
    for row, (text, name) in enumerate(zip(texts, domains)):
        if name is None:
            assert ours[row] is None
            continue
        expected = reference_logits(references[name], texts, bert_base.tokenizer)[row]
        torch.testing.assert_close(ours[row], expected, atol=ATOL, rtol=0)


def test_bare_rows_leave_the_body_untouched(hub, bert_base):
    """A batch mixing adapters and bare rows: the bare rows' hidden states are the plain body's."""
    from adapterhub.runtime.encoder import body_forward, encode_texts

    encoded = encode_texts(bert_base.tokenizer, TEXTS[:2])
    with torch.no_grad():
        plain, _ = body_forward(bert_base.model, encoded.input_ids, encoded.attention_mask)
        entries = [hub.residency.get(NAMES[0]), None]
        with hub.residency.routing(entries).applied():
            routed, _ = body_forward(bert_base.model, encoded.input_ids, encoded.attention_mask)
    torch.testing.assert_close(routed[1], plain[1], atol=0, rtol=0)
    assert (routed[0] - plain[0]).abs().max() > 1e-3


def test_classify_and_tag_results(hub, references, bert_base):
    result = hub.classify(TEXTS[0], domain="seq-r4-all")
    assert list(result["scores"]) == list(SEQ_LABELS) and result["label"] in SEQ_LABELS
    assert abs(sum(result["scores"].values()) - 1) < 1e-4
    probabilities = reference_logits(references["seq-r4-all"], TEXTS[:1], bert_base.tokenizer)[0].softmax(-1)
    assert result["label"] == SEQ_LABELS[int(probabilities.argmax())]
    for text, entities in zip(TEXTS, hub.tag(TEXTS, domain="tok-r4-all")):
        for entity in entities:
            assert text[entity["start"]:entity["end"]] == entity["text"] and entity["label"] in TYPES
            assert 0 < entity["score"] <= 1
    mixed = hub.analyze(TEXTS[:2], domains=["seq-r8-qv", "tok-r2-patterns"])
    assert mixed[0]["label"] in ("yes", "no") and isinstance(mixed[1], list)


def test_calls_refuse_the_wrong_adapter_kind(hub):
    with pytest.raises(TaskMismatchError, match="token_classification"):
        hub.tag("x", domain="seq-r4-all")
    with pytest.raises(TaskMismatchError, match="sequence_classification"):
        hub.classify("x", domain="tok-r4-all")
    with pytest.raises(TaskMismatchError, match="bare base"):
        hub.classify(["x", "y"], domains=["seq-r4-all", None])
    with pytest.raises(TaskMismatchError, match="decoder base"):
        hub.generate("x", domain="seq-r4-all")


def test_eviction_and_reload_keep_heads_exact(bert_base, adapter_dirs, references):
    with AdapterHub(bert_base, max_resident=2) as small:
        for name in NAMES[:4]:
            small.load(adapter_dirs[name], name=name)
        assert len(small.resident()) == 2
        small.load(adapter_dirs[NAMES[0]], name=NAMES[0])  # back again, evicting the oldest
        ours = small.head_logits(TEXTS[:2], domain=NAMES[0])
    expected = reference_logits(references[NAMES[0]], TEXTS[:2], bert_base.tokenizer)
    torch.testing.assert_close(ours[1], expected[1], atol=ATOL, rtol=0)


def test_decoder_adapter_on_encoder_base_and_reverse_are_refused(bert_base, tiny_base, adapter_dirs, tmp_path):
    [decoder_dir] = make_random_adapters(tiny_base, tmp_path, r=2, target_modules=["q_proj"])
    with AdapterHub(bert_base) as hub, pytest.raises(IncompatibleBaseError, match="decoder .* adapter .* encoder"):
        hub.load(decoder_dir, name="decoder")
    with AdapterHub(tiny_base) as hub, pytest.raises(IncompatibleBaseError, match="encoder adapter .* decoder"):
        hub.load(adapter_dirs["seq-r4-all"], name="encoder")


def test_head_of_another_width_is_refused(bert_base, tmp_path):
    wide = load_base(str(make_tiny_bert(tmp_path / "wide", hidden=48)), device="cpu")
    [path] = make_random_encoder_adapters(wide, tmp_path / "adapters", target_modules=["query"])
    with AdapterHub(bert_base) as hub, pytest.raises(IncompatibleBaseError):
        hub.load(path, name="wide")
