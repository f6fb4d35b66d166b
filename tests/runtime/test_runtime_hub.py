"""AdapterHub's public behaviour: residency, switching, predict, and one clear error per bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from adapterhub.errors import (AdapterInUseError, AdapterNotFoundError, ConfigError, IncompatibleBaseError,
                               InvalidAdapterError, MemoryBudgetError, TaskMismatchError, UnknownDomainError)
from adapterhub.prompts import TaskSpec, score_labels
from adapterhub.runtime import AdapterHub
from adapterhub.runtime.testing import load_peft, make_random_adapters, write_manifest
from adapterhub.base.tiny import make_tiny_llama

SENTIMENT = TaskSpec(type="classification", labels=("positive", "negative", "neutral"),
                     prompt_template="Sentiment ({labels})?\n{text}")
SPECIALTY = TaskSpec(type="classification", labels=("cardiology", "dermatology"),
                     prompt_template="Which specialty: {labels}?\n{text}", system_prompt="You triage.")
TEXTS = ["The quarterly revenue rose.", "Patient reports a rash on both arms.", "Invoices are payable in 30 days."]


@pytest.fixture(scope="module")
def dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-adapters")
    paths = {f"lora-{i}": path for i, path in enumerate(make_random_adapters(tiny_base, root, 3, r=4))}
    paths["prefix-0"] = make_random_adapters(tiny_base, root, method="prefix", num_virtual_tokens=4)[0]
    paths["finance"] = write_manifest(make_random_adapters(tiny_base, root, r=2, prefix="finance", seed=9)[0],
                                      name="finance", domain="finance", task=SENTIMENT, base=tiny_base)
    paths["medical"] = write_manifest(make_random_adapters(tiny_base, root, method="prefix", prefix="medical",
                                                           seed=5)[0],
                                      name="medical", domain="medical", task=SPECIALTY, base=tiny_base)
    return paths


@pytest.fixture
def hub(tiny_base, registry_root):
    with AdapterHub(tiny_base) as hub:
        yield hub


IDS = torch.arange(4, 16)


def test_load_is_idempotent_and_reports_residency(hub, dirs):
    first = hub.load(dirs["lora-0"])
    slot = hub.residency.get("lora-0").slot
    again = hub.load(dirs["lora-0"])
    assert hub.residency.get("lora-0").slot == slot  # not reloaded
    assert first.name == again.name == "lora-0" and first.method == "lora" and first.task == "generation"
    hub.load(dirs["prefix-0"], name="short")
    report = hub.resident()
    assert [info.name for info in report] == ["short", "lora-0"]  # most recently used first
    assert report[1].bytes <= report[1].file_bytes and report[1].source == str(dirs["lora-0"].resolve())


def test_loading_another_adapter_under_a_taken_name_replaces_it(hub, dirs):
    hub.load(dirs["lora-0"], name="x")
    before = hub.logits(IDS, domain="x")
    hub.load(dirs["lora-1"], name="x")
    after = hub.logits(IDS, domain="x")
    assert len(hub.resident()) == 1 and not torch.allclose(before, after)


def test_switch_using_and_bare_base(hub, dirs, tiny_base):
    hub.load(dirs["lora-0"])
    with torch.no_grad():
        bare = tiny_base.model(input_ids=IDS.unsqueeze(0)).logits
    assert torch.allclose(hub.logits(IDS), bare, atol=1e-6)  # default: bare base
    hub.switch("lora-0")
    adapted = hub.logits(IDS)
    assert not torch.allclose(adapted, bare)
    with hub.using(None):
        assert torch.allclose(hub.logits(IDS), bare, atol=1e-6)
        assert torch.allclose(hub.logits(IDS, domain="lora-0"), adapted)
    assert hub.domain == "lora-0"
    hub.switch(None)
    assert torch.allclose(hub.logits(IDS), bare, atol=1e-6)


def test_a_domain_can_be_a_directory(hub, dirs):
    answer = hub.generate("Hello", domain=str(dirs["lora-2"]), max_new_tokens=3)
    assert isinstance(answer, str) and [info.name for info in hub.resident()] == ["lora-2"]


def test_lru_eviction_and_reload_keep_results_exact(tiny_base, dirs):
    with AdapterHub(tiny_base, max_resident=2) as hub:
        expected = {}
        for name in ("lora-0", "lora-1", "lora-2"):
            hub.load(dirs[name])
            expected[name] = hub.logits(IDS, domain=name)
        assert [info.name for info in hub.resident()] == ["lora-2", "lora-1"]  # lora-0 evicted
        assert torch.equal(hub.logits(IDS, domain="lora-0"), expected["lora-0"])  # reloaded on use
        assert sorted(info.name for info in hub.resident()) == ["lora-0", "lora-2"]
        got = hub.logits(IDS.repeat(2, 1), domains=["lora-1", "lora-0"])  # both stay for the call
        # rows in equal runs per adapter take the stacked blocks, whose B copy rounds its own way (~1e-6)
        torch.testing.assert_close(got, torch.cat([expected["lora-1"], expected["lora-0"]]), rtol=0, atol=1e-5)


def test_byte_budget_evicts_and_too_small_a_budget_is_one_clear_error(tiny_base, dirs):
    size = (dirs["lora-0"] / "adapter_model.safetensors").stat().st_size
    with AdapterHub(tiny_base, memory_budget_mb=1.5 * size / 2**20) as hub:
        hub.load(dirs["lora-0"])
        hub.load(dirs["lora-1"])
        assert [info.name for info in hub.resident()] == ["lora-1"]
    with AdapterHub(tiny_base, memory_budget_mb=0.5 * size / 2**20) as hub:
        with pytest.raises(MemoryBudgetError, match="memory_budget_mb"):
            hub.load(dirs["lora-0"])
        hub.load(dirs["prefix-0"])  # small enough: the hub stays usable
        assert hub.generate("Hi", domain="prefix-0", max_new_tokens=2) is not None


def test_a_batch_needing_more_adapters_than_max_resident_fails_clearly(tiny_base, dirs):
    with AdapterHub(tiny_base, max_resident=1) as hub:
        hub.load(dirs["lora-0"])
        hub.load(dirs["lora-1"])
        with pytest.raises(MemoryBudgetError, match="max_resident=1"):
            hub.logits(IDS.repeat(2, 1), domains=["lora-0", "lora-1"])
        assert hub.logits(IDS, domain="lora-0").shape[0] == 1


def test_unknown_domain_lists_resident_names_and_hub_stays_usable(hub, dirs):
    hub.load(dirs["lora-0"])
    for call in (lambda: hub.generate("x", domain="legal"), lambda: hub.switch("legal"),
                 lambda: hub.logits(IDS, domains=["legal"]), lambda: hub.using("legal").__enter__()):
        with pytest.raises(UnknownDomainError, match=r"'legal'.*resident adapters: lora-0"):
            call()
    assert hub.domain is None
    assert hub.logits(IDS, domain="lora-0").shape == (1, len(IDS), hub.base.spec.vocab_size)


def test_load_of_a_missing_directory_is_adapter_not_found(hub, tmp_path):
    with pytest.raises(AdapterNotFoundError, match="does not exist"):
        hub.load(tmp_path / "nothing")


@pytest.mark.parametrize("bad, message", [
    (dict(domains=["lora-0"]), "got 2 inputs but 1 domains"),
    (dict(domains=["lora-0", None, None]), "got 2 inputs but 3 domains"),
    (dict(domains="lora-0"), "one name per row"),
    (dict(domain="lora-0", domains=["lora-0", None]), "not both"),
])
def test_domains_must_match_the_inputs(hub, dirs, bad, message):
    hub.load(dirs["lora-0"])
    with pytest.raises(ConfigError, match=message):
        hub.generate(["a", "b"], **bad)
    with pytest.raises(ConfigError, match=message):
        hub.logits(IDS.repeat(2, 1), **bad)
    assert len(hub.generate(["a", "b"], domains=["lora-0", None], max_new_tokens=2)) == 2


def test_generate_options_transformers_rejects_are_one_config_error(hub, dirs):
    hub.load(dirs["lora-0"])
    with pytest.raises(ConfigError, match="num_return_sequences"):
        hub.generate("a", domain="lora-0", num_return_sequences=3, max_new_tokens=2)  # greedy returns one
    assert isinstance(hub.generate("a", domain="lora-0", max_new_tokens=2), str)


def test_adapter_for_another_architecture_is_incompatible(hub, tmp_path):
    other = make_tiny_llama(tmp_path / "narrow", hidden=32, intermediate=64)
    for options in (dict(r=4), dict(method="prefix")):
        path = make_random_adapters(other, tmp_path / "narrow-adapters", prefix=options.get("method", "lora"),
                                    **options)[0]
        with pytest.raises(IncompatibleBaseError, match="made for"):
            hub.load(path)
    assert hub.resident() == []


def test_adapter_recorded_for_another_base_is_incompatible(hub, dirs, tmp_path, other_tiny_llama_dir):
    from adapterhub import load_base

    copy = shutil.copytree(dirs["lora-0"], tmp_path / "foreign")
    write_manifest(copy, name="foreign", base=load_base(str(other_tiny_llama_dir), device="cpu"))
    with pytest.raises(IncompatibleBaseError, match="made for base"):
        hub.load(copy)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(peft_type="VERA"), "unsupported method"),
    (lambda d: d.update(modules_to_save=["lm_head"]), "modules_to_save"),
    (lambda d: d.update(bias="all"), "base biases"),
    (lambda d: d.update(use_qalora=True), "QA-LoRA"),
])
def test_unsupported_adapters_are_refused_clearly(hub, dirs, tmp_path, change, message):
    copy = shutil.copytree(dirs["lora-0"], tmp_path / "odd")
    config = json.loads((copy / "adapter_config.json").read_text())
    change(config)
    (copy / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidAdapterError, match=message):
        hub.load(copy)


def test_pickle_only_adapters_are_never_loaded(hub, dirs, tmp_path):
    copy = shutil.copytree(dirs["lora-0"], tmp_path / "pickled")
    (copy / "adapter_model.safetensors").rename(copy / "adapter_model.bin")
    with pytest.raises(InvalidAdapterError, match="never loads"):
        hub.load(copy)


@pytest.mark.parametrize("batch_size", [32, 4])  # 4: several chunks of texts per task
def test_label_scores_match_peft_full_forward_scoring(hub, dirs, tiny_base, batch_size):
    hub.load(dirs["finance"])  # LoRA
    hub.load(dirs["medical"])  # prefix
    row_domains = ["finance", "medical", "finance"]
    mixed = hub.label_scores(TEXTS, domains=row_domains, batch_size=batch_size)
    for domain, task in (("finance", SENTIMENT), ("medical", SPECIALTY)):
        alone = hub.label_scores(TEXTS, domain=domain, batch_size=batch_size)
        model = load_peft(tiny_base, dirs[domain])
        with torch.no_grad():  # reference: one full forward per (text, label) row through plain PEFT
            expected = score_labels(lambda ids, mask, _: model(input_ids=ids, attention_mask=mask).logits,
                                    tiny_base.tokenizer, task, TEXTS)
        got = torch.tensor([[row[label] for label in task.labels] for row in alone])
        assert torch.allclose(got, expected, atol=1e-4, rtol=0)
        assert hub.predict(TEXTS, domain=domain) == [task.labels[int(i)] for i in expected.argmax(-1)]
        for row, row_domain in enumerate(row_domains):
            if row_domain == domain:
                assert mixed[row] == pytest.approx(alone[row], abs=1e-4)
    assert hub.predict(TEXTS[0], domain="finance") == max(mixed[0], key=mixed[0].get)


def test_predict_needs_classification_adapters(hub, dirs):
    hub.load(dirs["lora-0"])
    hub.load(dirs["finance"])
    with pytest.raises(TaskMismatchError, match="'lora-0' is a generation adapter"):
        hub.predict(TEXTS[:2], domains=["finance", "lora-0"])
    with pytest.raises(TaskMismatchError, match="bare base"):
        hub.predict("text", domain=None)
    assert hub.predict("text", domain="finance") in SENTIMENT.labels


def test_unload_and_close_free_every_slot(hub, dirs):
    hub.load(dirs["lora-0"])
    hub.load(dirs["prefix-0"])
    hub.switch("lora-0")
    assert hub.unload("lora-0") is True and hub.unload("lora-0") is False
    assert hub.domain is None and [info.name for info in hub.resident()] == ["prefix-0"]
    layers = hub.residency.methods["lora"]._slot_layers
    assert layers == {}
    hub.close()
    assert hub.resident() == [] and hub.residency.methods["prefix"]._slots == {}


def test_two_hubs_share_one_base_without_interfering(tiny_base, dirs):
    with AdapterHub(tiny_base) as first, AdapterHub(tiny_base) as second:
        first.load(dirs["lora-0"], name="a")
        second.load(dirs["lora-1"], name="a")
        assert not torch.allclose(first.logits(IDS, domain="a"), second.logits(IDS, domain="a"))
        expected = first.logits(IDS, domain="a")
    with AdapterHub(tiny_base) as third:
        third.load(dirs["lora-0"], name="a")
        assert torch.equal(third.logits(IDS, domain="a"), expected)


def test_base_options_conflict_with_a_loaded_base(tiny_base):
    with pytest.raises(ConfigError, match="already"):
        AdapterHub(tiny_base, quantize="nf4")
    with pytest.raises(ConfigError, match="max_resident"):
        AdapterHub(tiny_base, max_resident=0)


# --- with a registry ---------------------------------------------------------------------
@pytest.fixture
def registry(registry_root, tiny_base, dirs):
    from adapterhub import Registry

    registry = Registry(registry_root)
    registry.add(dirs["lora-0"], "legal", domain="legal", base=tiny_base)
    registry.add(dirs["lora-1"], "legal", domain="legal", base=tiny_base, tags=["prod"])
    registry.add(dirs["finance"], "finance", domain="finance", task=SENTIMENT, base=tiny_base)
    registry.add(dirs["prefix-0"], "medical", domain="medical", base=tiny_base)
    return registry


def test_registry_references_load_pinned_versions(tiny_base, registry, dirs):
    with AdapterHub(tiny_base, registry=registry) as hub:
        assert hub.load("legal").source == "legal@2"
        assert hub.load("legal@2").source == "legal@2"  # same entry: idempotent
        assert hub.load("legal@1").source == "legal@1"  # another version replaces it under the same name
        with AdapterHub(tiny_base, registry=registry.root) as direct:
            direct.load(dirs["lora-0"], name="v1")
            assert torch.equal(hub.logits(IDS, domain="legal"), direct.logits(IDS, domain="v1"))
        assert hub.load("legal@prod").source == "legal@2"


def test_registered_domains_load_on_first_use_and_reload_after_eviction(tiny_base, registry):
    with AdapterHub(tiny_base, registry=registry, max_resident=1) as hub:
        assert hub.predict("Shares jumped.", domain="finance") in SENTIMENT.labels  # task from the registry
        first = hub.logits(IDS, domain="medical")
        assert [info.name for info in hub.resident()] == ["medical"]  # finance evicted
        hub.switch("finance")
        assert [info.name for info in hub.resident()] == ["finance"]
        assert torch.equal(hub.logits(IDS, domain="medical"), first)  # reloaded from the registry


def test_unknown_domain_lists_registered_names(tiny_base, registry):
    with AdapterHub(tiny_base, registry=registry) as hub:
        hub.load("finance")
        with pytest.raises(UnknownDomainError, match=r"resident adapters: finance; registered: finance, legal, medical"):
            hub.generate("x", domain="tax")
        with pytest.raises(UnknownDomainError, match="unknown domain 'bad name!'"):
            hub.generate("x", domain="bad name!")


def test_registry_entry_for_another_base_is_incompatible(tiny_base, registry, dirs, other_tiny_llama_dir):
    from adapterhub import load_base

    registry.add(dirs["lora-2"], "foreign", base=load_base(str(other_tiny_llama_dir), device="cpu"))
    with AdapterHub(tiny_base, registry=registry) as hub:
        with pytest.raises(IncompatibleBaseError, match="made for base"):
            hub.load("foreign")
        with pytest.raises(IncompatibleBaseError):
            hub.generate("x", domain="foreign")
        assert hub.generate("x", domain="legal", max_new_tokens=2) is not None


def test_a_bare_name_is_a_registry_reference_even_beside_a_folder(tiny_base, registry, dirs, tmp_path, monkeypatch):
    shutil.copytree(dirs["lora-1"], tmp_path / "legal")  # a folder named like a registered adapter
    shutil.copytree(dirs["lora-2"], tmp_path / "tax")  # ... and one named like nothing registered
    monkeypatch.chdir(tmp_path)
    with AdapterHub(tiny_base, registry=registry) as hub:
        assert hub.load("legal").source == "legal@2"  # the registry's, not ./legal
        with pytest.raises(AdapterNotFoundError, match=r"a folder 'tax' exists here .* write it as a path: './tax'"):
            hub.load("tax")
        assert hub.load("./tax").source == str((tmp_path / "tax").resolve())
    with AdapterHub(tiny_base) as hub:
        assert hub.load(tmp_path / "legal").source == str((tmp_path / "legal").resolve())  # PathLike: a folder


def test_an_adapter_in_use_is_its_own_error(hub, dirs):
    hub.load(dirs["lora-0"])
    with hub.residency.pinned(["lora-0"]):  # what a running call holds
        with pytest.raises(AdapterInUseError, match="in use by a running call") as caught:
            hub.unload("lora-0")
        assert not isinstance(caught.value, ConfigError)
        with pytest.raises(AdapterInUseError):
            hub.load(dirs["lora-1"], name="lora-0")  # replacing it
    assert hub.unload("lora-0") is True


def test_label_probabilities_from_python(hub, dirs):
    from adapterhub.scoring import label_probabilities

    hub.load(dirs["finance"])
    scores = hub.label_scores(TEXTS[:2], domain="finance")
    shares = hub.label_scores(TEXTS[:2], domain="finance", normalize=True)
    for row, share in zip(scores, shares):
        assert list(share) == list(SENTIMENT.labels)  # the adapter's label order
        assert sum(share.values()) == pytest.approx(1.0) and share == pytest.approx(label_probabilities(row))
        assert max(share, key=share.get) == max(row, key=row.get)


# --- issue 13: bad call options, over-long inputs, waiting for a slot -------------------------------
@pytest.mark.parametrize("options, message", [
    ({"num_beams": 0}, "num_beams=0 must be a whole number >= 1"),
    ({"num_beams": -2}, "num_beams=-2"),
    ({"num_return_sequences": 0}, "num_return_sequences=0"),
    ({"max_new_tokens": 0}, "max_new_tokens=0"),
    ({"max_new_tokens": 2.5}, "max_new_tokens=2.5"),
])
def test_bad_generate_options_are_one_clear_error(hub, dirs, options, message):
    with pytest.raises(ConfigError, match=message):
        hub.generate("Hello", domain=str(dirs["lora-0"]), **{"max_new_tokens": 2, **options})


def test_batch_size_zero_is_one_clear_error(hub, dirs, tmp_path):
    from adapterhub.training.evaluate import evaluate_file

    with pytest.raises(ConfigError, match="batch_size=0"):
        hub.predict(TEXTS, domain=str(dirs["finance"]), batch_size=0)
    with pytest.raises(ConfigError, match="batch_size=0 must be a whole number >= 1"):
        evaluate_file("finance", tmp_path / "rows.jsonl", batch_size=0)


def test_inputs_longer_than_the_context_are_one_clear_error(hub, dirs, tiny_base):
    limit = tiny_base.model.config.max_position_embeddings
    long_text = "word " * (limit + 10)
    for call in (lambda: hub.generate(long_text, domain=str(dirs["lora-0"]), max_new_tokens=4),
                 lambda: hub.generate("Hello", domain=str(dirs["prefix-0"]), max_new_tokens=limit),
                 lambda: hub.predict(long_text, domain=str(dirs["finance"])),
                 lambda: hub.logits(torch.arange(limit + 1) % 100, domain=None)):
        with pytest.raises(ConfigError, match=f"has a context of {limit} tokens"):
            call()
    assert hub.generate("Hello", domain=str(dirs["lora-0"]), max_new_tokens=2) is not None


def test_cli_num_beams_zero_is_one_line(tiny_llama_dir, registry_root, capsys):
    from adapterhub.cli import main

    assert main(["generate", "Hello", "--base", str(tiny_llama_dir), "--device", "cpu", "--num-beams", "0"]) == 2
    err = capsys.readouterr().err  # (after the base's loading bar, when it shows one)
    assert err.endswith("error: num_beams=0 must be a whole number >= 1\n") and err.count("error:") == 1
    assert "Traceback" not in err


def _hold_first_forward(monkeypatch, started, release):
    """The first routed forward pass blocks until ``release`` is set (a long-running call)."""
    from adapterhub.runtime import generation

    original, calls = generation.forward_logits, []

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            started.set()
            assert release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(generation, "forward_logits", forward)


@pytest.mark.timeout(60)
def test_a_call_waits_for_a_slot_held_by_a_running_call(tiny_base, dirs, monkeypatch):
    import threading

    started, release = threading.Event(), threading.Event()
    _hold_first_forward(monkeypatch, started, release)
    with AdapterHub(tiny_base, max_resident=1, slot_wait_s=30) as hub:
        hub.load(dirs["lora-0"])
        hub.load(dirs["lora-1"])  # evicts lora-0; both sources stay known
        results = {}
        holder = threading.Thread(target=lambda: results.setdefault("a", hub.logits(IDS, domain="lora-1")))
        holder.start()
        assert started.wait(30)
        threading.Timer(0.3, release.set).start()
        results["b"] = hub.logits(IDS, domain="lora-0")  # lora-1 is pinned: wait for the call to return
        holder.join(30)
        assert set(results) == {"a", "b"} and [info.name for info in hub.resident()] == ["lora-0"]


@pytest.mark.timeout(60)
def test_the_wait_for_a_slot_is_bounded(tiny_base, dirs, monkeypatch):
    import threading
    import time

    started, release = threading.Event(), threading.Event()
    _hold_first_forward(monkeypatch, started, release)
    with AdapterHub(tiny_base, max_resident=1, slot_wait_s=0.3) as hub:
        hub.load(dirs["lora-0"])
        holder = threading.Thread(target=lambda: hub.logits(IDS, domain="lora-0"))
        holder.start()
        assert started.wait(30)
        began = time.monotonic()
        with pytest.raises(MemoryBudgetError, match=r"waited 0.3 s"):
            hub.logits(IDS, domain=str(dirs["lora-1"]))
        assert 0.25 < time.monotonic() - began < 10
        release.set()
        holder.join(30)
        assert hub.logits(IDS, domain=str(dirs["lora-1"])).shape[0] == 1  # the slot is free again


@pytest.mark.timeout(120)
def test_many_threads_under_max_resident_all_succeed_and_stay_exact(tiny_base, dirs):
    import threading

    names = ["lora-0", "lora-1", "lora-2", "prefix-0"]
    with AdapterHub(tiny_base) as reference:
        expected = {name: reference.logits(IDS, domain=str(dirs[name])) for name in names}
    failures, results = [], []
    with AdapterHub(tiny_base, max_resident=2, slot_wait_s=60) as hub:
        for name in names:
            hub.load(dirs[name])

        def worker(offset: int) -> None:
            try:
                for step in range(6):
                    name = names[(offset + step) % len(names)]
                    results.append(torch.equal(hub.logits(IDS, domain=name), expected[name]))
            except Exception as error:  # noqa: BLE001 - collected for the assertion
                failures.append(repr(error))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(100)
    assert failures == [] and len(results) == 48 and all(results)
