"""``adapterhub generate``, ``predict`` and ``chat`` on the tiny base with plain PEFT directories."""

from __future__ import annotations

import io
import json

import pytest

from adapterhub.cli import main
from adapterhub.prompts import TaskSpec
from adapterhub.runtime.testing import make_random_adapters, write_manifest

SENTIMENT = TaskSpec(type="classification", labels=("positive", "negative"), prompt_template="{labels}?\n{text}")


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-adapters")
    lora = make_random_adapters(tiny_base, root, r=4, prefix="legal")[0]
    finance = write_manifest(make_random_adapters(tiny_base, root, r=2, prefix="finance", seed=3)[0],
                             name="finance", domain="finance", task=SENTIMENT, base=tiny_base)
    return {"legal": lora, "finance": finance}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_with_a_domain_directory_and_json(capsys, tiny_llama_dir, adapters, registry_root):
    code, out, _ = run(capsys, "generate", "--base", tiny_llama_dir, "--domain", adapters["legal"],
                       "--max-new-tokens", 4, "--json", "Is this clause valid?", "Second prompt")
    assert code == 0
    answers = json.loads(out)
    assert [a["prompt"] for a in answers] == ["Is this clause valid?", "Second prompt"]
    assert all(isinstance(a["answer"], str) for a in answers)


def test_generate_on_the_bare_base_is_greedy_and_repeatable(capsys, tiny_llama_dir, registry_root):
    first = run(capsys, "generate", "--base", tiny_llama_dir, "--max-new-tokens", 5, "Hello")
    second = run(capsys, "generate", "--base", tiny_llama_dir, "--max-new-tokens", 5, "Hello")
    assert first[0] == 0 and first[1] == second[1]


def test_predict_prints_one_label_per_text(capsys, tiny_llama_dir, adapters, registry_root):
    code, out, _ = run(capsys, "predict", "--base", tiny_llama_dir, "--domain", adapters["finance"],
                       "Shares jumped.", "Revenue fell.")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in SENTIMENT.labels for line in lines)


def test_predict_reports_each_labels_score_and_share(capsys, tiny_llama_dir, adapters, registry_root):
    texts = ["Shares jumped.", "Revenue fell."]
    code, out, _ = run(capsys, "predict", "--base", tiny_llama_dir, "--domain", adapters["finance"], "--json", *texts)
    results = json.loads(out)
    assert code == 0 and [r["text"] for r in results] == texts
    for result in results:
        assert set(result["scores"]) == set(result["probabilities"]) == set(SENTIMENT.labels)
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    code, out, _ = run(capsys, "predict", "--base", tiny_llama_dir, "--domain", adapters["finance"], "--scores", texts[0])
    label, text, shares = out.strip().split("\t")
    assert label == results[0]["label"] and text == texts[0] and shares.startswith(f"{label}=")


@pytest.mark.parametrize("argv, message", [
    (["predict", "--domain", "nope", "text"], "unknown domain 'nope'"),
    (["generate", "--domain", "/no/such/adapter", "hi"], "adapter directory /no/such/adapter does not exist"),
    (["predict", "--domain", "./no/such/dir", "text"], "no/such/dir does not exist"),
])
def test_bad_domains_are_one_error_line(capsys, tiny_llama_dir, registry_root, argv, message):
    code, _, err = run(capsys, *argv, "--base", tiny_llama_dir)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and message in last and "Traceback" not in err
    assert "unknown domain" not in last or "nope" in last  # a missing folder is not an unknown domain


def test_an_unknown_domain_names_the_cli_fix_not_the_python_one(capsys, tiny_llama_dir, registry_root):
    code, _, err = run(capsys, "predict", "--base", tiny_llama_dir, "--domain", "sports", "text")
    assert code == 2 and "`adapterhub registry list`" in err and "./sports" in err
    assert "hub.load" not in err and "name=" not in err


def test_predict_on_a_generation_adapter_is_a_task_mismatch(capsys, tiny_llama_dir, adapters, registry_root):
    code, _, err = run(capsys, "predict", "--base", tiny_llama_dir, "--domain", adapters["legal"], "text")
    assert code == 2 and "generation adapter" in err
    assert f"`adapterhub generate --domain {adapters['legal']}`" in err and "hub.generate" not in err


def test_python_callers_keep_the_python_fix(tiny_base, adapters, registry_root):
    from adapterhub import AdapterHub
    from adapterhub.errors import TaskMismatchError, UnknownDomainError

    hub = AdapterHub(tiny_base, registry=registry_root)
    with pytest.raises(UnknownDomainError, match=r"hub\.load\(ref_or_path, name='sports'\)") as caught:
        hub.predict("text", domain="sports")
    assert "adapterhub registry list" in caught.value.cli_message and "hub.load" not in caught.value.cli_message
    with pytest.raises(TaskMismatchError, match=r"use hub\.generate"):
        hub.predict("text", domain=str(adapters["legal"]))


def test_chat_switches_domains_and_survives_errors(capsys, monkeypatch, tiny_llama_dir, adapters, registry_root):
    script = "\n".join([
        "hello", f"/domain {adapters['legal']}", "/domains", "hi there", "/domain nope", "/base",
        "/domain none", "/domain", "/help", "/quit", "never read",
    ])
    monkeypatch.setattr("sys.stdin", io.StringIO(script + "\n"))
    code, out, err = run(capsys, "chat", "--base", tiny_llama_dir, "--max-new-tokens", 3)
    assert code == 0
    assert "domain: legal" in out and "resident" in out and "lora" in out
    assert "error: unknown domain 'nope'" in err
    assert "fingerprint" in out and "domain: none (bare base)" in out and "/domains" in out


def test_chat_ends_on_end_of_input(capsys, monkeypatch, tiny_llama_dir, registry_root):
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert run(capsys, "chat", "--base", tiny_llama_dir, "--max-new-tokens", 2)[0] == 0
