"""Push and pull against the small Hub-compatible server in tests/helpers/hubserver.py (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tests.helpers.hub import TOKEN, front_matter
from tests.helpers.hubserver import HubServer

from adapterhub import errors
from adapterhub.hf.sync import HubRef, is_hub_ref, parse_hub_ref
from adapterhub.hf import pull, push
from adapterhub.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
FINANCE_TASK = {"type": "classification", "labels": ["positive", "negative", "neutral"],
                "prompt_template": "Sentiment of this headline: {text}", "chat": False}


@pytest.fixture(scope="module")
def other_tiny_base(other_tiny_llama_dir):
    from adapterhub import load_base

    return load_base(str(other_tiny_llama_dir), device="cpu")


@pytest.fixture
def finance(registry, lora_dir, tiny_base):
    return registry.add(lora_dir, "finance", domain="finance", base=tiny_base, task=FINANCE_TASK,
                        metrics={"accuracy": 0.75, "macro_f1": 0.7}, recipe={"method": "lora", "r": 4},
                        description="Headline sentiment for equity news.")


def adapter_logits(base_dir: Path, adapter_dir: Path) -> torch.Tensor:
    """Logits of the tiny llama with the adapter in ``adapter_dir`` loaded by plain PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter_dir)).eval()
    with torch.no_grad():
        return model(torch.tensor([[5, 17, 42, 7, 99, 3]])).logits


def peft_files(adapter_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in adapter_dir.iterdir() if path.is_file()}


# --- references ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, revision, expected", [
    ("acme/legal-lora", None, HubRef("acme/legal-lora")),
    ("acme/legal-lora@v2", None, HubRef("acme/legal-lora", "v2")),
    ("hf://acme/legal-lora@refs/pr/3", None, HubRef("acme/legal-lora", "refs/pr/3")),
    ("hf://acme/legal-lora", "dev", HubRef("acme/legal-lora", "dev")),
    ("acme/legal-lora@dev", "dev", HubRef("acme/legal-lora", "dev")),
])
def test_parse_hub_ref(text, revision, expected):
    assert parse_hub_ref(text, revision=revision) == expected


@pytest.mark.parametrize("text, revision", [
    ("legal", None), ("hf://datasets/acme/legal", None), ("hf://acme/legal/adapter_config.json", None),
    ("acme/legal@", None), ("acme/legal@v1", "v2"), ("a/b/c/d", None),
])
def test_parse_hub_ref_rejects(text, revision):
    with pytest.raises(errors.InvalidNameError) as caught:
        parse_hub_ref(text, revision=revision)
    assert repr(text) in str(caught.value)


def test_is_hub_ref():
    assert is_hub_ref("hf://acme/x@main") and not is_hub_ref("legal@3") and not is_hub_ref(None)


# --- push -----------------------------------------------------------------------------------------
def test_push_uploads_peft_files_manifest_and_card_in_one_commit(hub_env, registry, finance):
    result = push("finance", "alice/finance-lora", registry=registry)

    head = hub_env.head("alice/finance-lora")
    assert result.commit == head.oid and result.url.endswith(f"/alice/finance-lora/commit/{head.oid}")
    assert [m for m, p in hub_env.requests if p.endswith("/commit/main")] == ["POST"]
    assert sorted(head.files) == [".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
                                  "adapterhub.json", "label_scoring.py"]  # a classifier: plain-PEFT label scores
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        assert head.files[file] == (finance.path / file).read_bytes()
    assert json.loads(head.files["adapterhub.json"])["files"] == finance.manifest["files"]
    metadata = front_matter(head.files["README.md"])
    assert metadata["library_name"] == "peft" and metadata["pipeline_tag"] == "text-generation"
    assert {"adapterhub", "finance", "lora"} <= set(metadata["tags"])
    body = head.files["README.md"].decode()
    assert "| accuracy | 0.75 |" in body and "PeftModel.from_pretrained" in body and "adapterhub pull" in body


def test_push_same_content_twice_makes_no_new_commit(hub_env, registry, finance):
    first = push("finance@1", "alice/finance-lora", registry=registry)
    second = push("finance@1", "alice/finance-lora", registry=registry)
    assert first.commit == second.commit
    assert len(hub_env.repos["alice/finance-lora"].commits) == 2  # repo creation + one push


def test_push_to_new_branch_of_private_repo_then_pull_that_branch(hub_env, registry, fresh, finance):
    result = push("finance", "alice/finance-lora", revision="candidate", private=True,
                           commit_message="try r=4", registry=registry)
    repo = hub_env.repos["alice/finance-lora"]
    assert repo.private and repo.branches["candidate"] == result.commit != repo.branches["main"]
    assert repo.commits[result.commit].message == "try r=4"
    assert pull("alice/finance-lora@candidate", registry=fresh).manifest["source"]["commit"] == result.commit


def test_token_from_the_login_file(hub_env, fresh, lora_dir, tmp_path, monkeypatch):
    hub_env.add_repo("alice/private-lora", peft_files(lora_dir), private=True)
    monkeypatch.delenv("HF_TOKEN")
    (tmp_path / "hf-home").mkdir(exist_ok=True)
    (tmp_path / "hf-home" / "token").write_text(TOKEN + "\n")  # what `hf auth login` writes
    assert pull("alice/private-lora", registry=fresh).ref == "private-lora@1"


# --- round trip -----------------------------------------------------------------------------------
def test_round_trip_gives_identical_logits_and_carries_the_manifest(hub_env, registry, fresh, finance, tiny_base,
                                                                    tiny_llama_dir):
    pushed = push("finance", "alice/finance-lora", registry=registry)
    pulled = pull("alice/finance-lora", base=tiny_base, registry=fresh)

    assert pulled.ref == "finance-lora@1" and pulled.domain == "finance" and pulled.method == "lora"  # name: the repo's
    assert pulled.manifest["source"] == {"kind": "pulled", "repo_id": "alice/finance-lora", "commit": pushed.commit}
    assert pulled.manifest["task"]["labels"] == FINANCE_TASK["labels"]
    assert pulled.manifest["metrics"] == {"accuracy": 0.75, "macro_f1": 0.7}
    assert pulled.base_fingerprint == tiny_base.fingerprint
    assert pulled.manifest["files"] == finance.manifest["files"]
    assert torch.equal(adapter_logits(tiny_llama_dir, finance.path), adapter_logits(tiny_llama_dir, pulled.path))


def test_runtime_loads_hf_refs_on_demand(hub_env, registry, fresh, finance, tiny_base):
    """AdapterHub.load("hf://org/repo@rev") pulls into its registry once, then serves it like any entry."""
    from adapterhub.runtime import AdapterHub

    pushed = push("finance", "alice/finance-lora", registry=registry)
    hub = AdapterHub(tiny_base, registry=fresh)
    info = hub.load(f"hf://alice/finance-lora@{pushed.commit}")
    again = hub.load("hf://alice/finance-lora")  # same commit: no second version
    assert info.name == again.name == "finance-lora" and [r.ref for r in fresh.list()] == ["finance-lora@1"]
    local = AdapterHub(tiny_base, registry=registry)
    local.load("finance")
    ids = torch.tensor([[3, 17, 29, 41]])
    assert torch.equal(hub.logits(ids, domains=["finance-lora"]), local.logits(ids, domains=["finance"]))


def test_pulling_the_same_commit_twice_returns_the_existing_version(hub_env, registry, fresh, finance, lora_dir):
    push("finance", "alice/finance-lora", registry=registry)
    first = pull("hf://alice/finance-lora@main", registry=fresh)
    head = hub_env.head("alice/finance-lora").oid
    assert pull("alice/finance-lora", revision=head, registry=fresh) == first
    assert [r.ref for r in fresh.list()] == ["finance-lora@1"]
    hub_env.add_repo("alice/finance-lora", {**hub_env.head("alice/finance-lora").files, "notes.txt": "new commit"})
    assert pull("alice/finance-lora", registry=fresh).ref == "finance-lora@2"


def test_adapter_pushed_by_plain_peft_pulls_and_matches(hub_env, fresh, tiny_llama_dir, tmp_path):
    """PeftModel.push_to_hub, pointed at the test server through HF_ENDPOINT, in a child process."""
    script = textwrap.dedent(f"""
        import sys
        from tests.helpers.peft_adapters import save_lora
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        local = save_lora({str(tiny_llama_dir)!r}, {str(tmp_path / "local")!r}, seed=11)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(tiny_llama_dir)!r}), str(local))
        model.push_to_hub("alice/medical-qlora", commit_message="plain peft")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300)
    assert "adapterhub.json" not in hub_env.head("alice/medical-qlora").files

    pulled = pull("alice/medical-qlora", registry=fresh)

    assert (pulled.name, pulled.domain, pulled.method) == ("medical-qlora", "medical", "lora")
    assert pulled.manifest["task"]["type"] == "generation" and pulled.manifest["source"]["kind"] == "pulled"
    assert torch.equal(adapter_logits(tiny_llama_dir, tmp_path / "local"), adapter_logits(tiny_llama_dir, pulled.path))


def test_ours_loads_in_plain_peft_from_a_pulled_snapshot(hub_env, registry, finance, tiny_llama_dir, tmp_path):
    from huggingface_hub import snapshot_download

    push("finance", "alice/finance-lora", registry=registry)
    snapshot = snapshot_download("alice/finance-lora", revision="main", endpoint=hub_env.url,
                                 cache_dir=tmp_path / "plain-cache", token=TOKEN)
    assert torch.equal(adapter_logits(tiny_llama_dir, finance.path), adapter_logits(tiny_llama_dir, snapshot))


def test_domain_flag_and_name_override(hub_env, fresh, lora_dir):
    hub_env.add_repo("alice/some-adapter", peft_files(lora_dir))
    record = pull("alice/some-adapter", name="tax", domain="finance", registry=fresh)
    assert (record.ref, record.domain) == ("tax@1", "finance")


# --- offline --------------------------------------------------------------------------------------
def test_offline_pull_uses_the_cache_or_fails_clearly(hub_env, registry, fresh, finance, tmp_path, monkeypatch):
    push("finance", "alice/finance-lora", registry=registry)
    pull("alice/finance-lora@main", registry=fresh)
    hub_env.stop()  # offline must not need the server
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert pull("alice/finance-lora@main", registry=Registry(tmp_path / "third")).ref == "finance-lora@1"
    with pytest.raises(errors.HubConnectionError, match="HF_HUB_OFFLINE"):
        pull("alice/never-pulled@main", registry=Registry(tmp_path / "fourth"))
    with pytest.raises(errors.HubConnectionError, match="HF_HUB_OFFLINE"):
        push("finance", "alice/finance-lora", registry=registry)


# --- errors ---------------------------------------------------------------------------------------
def _seed(files: str):
    """Repo contents for the error table, built from the tiny LoRA's files."""
    def build(hub: HubServer, lora: dict[str, bytes]) -> None:
        contents = {
            "plain": lora,
            "card-only": {"README.md": "# a model", "model.safetensors": lora["adapter_model.safetensors"]},
            "pickle-only": {"adapter_config.json": lora["adapter_config.json"], "adapter_model.bin": b"\x80\x04pickle"},
            "config-only": {"adapter_config.json": lora["adapter_config.json"]},
        }
        if files == "private":
            hub.add_repo("alice/repo", lora, private=True)
        elif files != "none":
            hub.add_repo("alice/repo", contents[files])
    return build


PULL_ERRORS = [
    # id, seed, reference, env changes, expected error, words the message must contain
    ("repo-not-found", "none", "alice/repo", {}, errors.HubRepoNotFoundError, "alice/repo"),
    ("revision-not-found", "plain", "alice/repo@v9", {}, errors.HubRevisionNotFoundError, "'v9'"),
    ("no-adapter", "card-only", "alice/repo", {}, errors.HubNotAnAdapterError, "adapter_config.json"),
    ("pickle-only", "pickle-only", "alice/repo", {}, errors.HubPickleWeightsError, "adapter_model.bin"),
    ("file-missing", "config-only", "alice/repo", {}, errors.HubFileNotFoundError, "adapter_model.safetensors"),
    ("private-no-token", "private", "alice/repo", {"HF_TOKEN": None}, errors.HubRepoNotFoundError, "HF_TOKEN"),
    ("bad-token", "private", "alice/repo", {"HF_TOKEN": "hf_forged_token"}, errors.HubPermissionError, "401"),
    ("unreachable", "plain", "alice/repo", {"HF_ENDPOINT": "closed-port"}, errors.HubConnectionError, "reach"),
]


@pytest.mark.parametrize("seed, ref, env, error, words", [case[1:] for case in PULL_ERRORS],
                         ids=[case[0] for case in PULL_ERRORS])
def test_pull_errors_are_clear_and_register_nothing(hub_env, fresh, lora_dir, monkeypatch, seed, ref, env, error,
                                                    words):
    _seed(seed)(hub_env, peft_files(lora_dir))
    _apply_env(monkeypatch, env)
    with pytest.raises(error, match=words) as caught:
        pull(ref, registry=fresh)
    assert isinstance(caught.value, errors.HubError)
    _assert_nothing_registered(fresh, caught.value)


@pytest.mark.parametrize("mismatch", ["fingerprint", "modules"])
def test_pull_for_another_base_fails(hub_env, registry, fresh, finance, tiny_base, other_tiny_base,
                                     three_layer_lora_dir, mismatch):
    if mismatch == "fingerprint":  # ours: the manifest names the tiny base, pulled onto other weights
        push("finance", "alice/repo", registry=registry)
        base = other_tiny_base
    else:  # plain PEFT, made for a 3-layer llama: its layer-2 modules are not in the 2-layer base
        hub_env.add_repo("alice/repo", peft_files(three_layer_lora_dir))
        base = tiny_base
    with pytest.raises(errors.HubIncompatibleBaseError, match="alice/repo") as caught:
        pull("alice/repo", base=base, registry=fresh)
    assert isinstance(caught.value, errors.IncompatibleBaseError)
    _assert_nothing_registered(fresh, caught.value)


PUSH_ERRORS = [
    ("other-namespace", {}, "bob/finance", errors.HubPermissionError, "403"),
    ("no-token", {"HF_TOKEN": None}, "alice/finance", errors.HubPermissionError, "HF_TOKEN"),
    ("bad-token", {"HF_TOKEN": "hf_forged_token"}, "alice/finance", errors.HubPermissionError, "401"),
    ("unreachable", {"HF_ENDPOINT": "closed-port"}, "alice/finance", errors.HubConnectionError, "reach"),
    ("bad-repo-id", {}, "finance", errors.InvalidNameError, "org/repo"),
]


@pytest.mark.parametrize("env, repo, error, words", [case[1:] for case in PUSH_ERRORS],
                         ids=[case[0] for case in PUSH_ERRORS])
def test_push_errors_are_clear(hub_env, registry, finance, monkeypatch, env, repo, error, words):
    _apply_env(monkeypatch, env)
    with pytest.raises(error, match=words) as caught:
        push("finance", repo, registry=registry)
    assert TOKEN not in str(caught.value) and "hf_forged_token" not in str(caught.value)
    assert not any(repo_id.endswith("/finance") for repo_id in hub_env.repos)


def test_push_of_a_damaged_entry_is_refused(hub_env, registry, finance):
    (finance.path / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(errors.IntegrityError, match="adapter_model.safetensors"):
        push("finance", "alice/finance-lora", registry=registry)
    assert "alice/finance-lora" not in hub_env.repos


# --- command line ---------------------------------------------------------------------------------
def test_cli_push_then_pull(hub_env, registry, finance, tiny_llama_dir, tmp_path, capsys):
    from adapterhub.cli import main

    assert main(["push", "finance@1", "alice/finance-lora", "--message", "from cli"]) == 0
    out = capsys.readouterr().out
    assert hub_env.head("alice/finance-lora").oid in out and TOKEN not in out

    assert main(["pull", "alice/finance-lora@main", "--root", str(tmp_path / "cli-registry"), "--name", "fin",
                 "--base", str(tiny_llama_dir), "--json"]) == 0
    pulled = json.loads(capsys.readouterr().out)
    assert (pulled["ref"], pulled["domain"], pulled["source"]["kind"]) == ("fin@1", "finance", "pulled")
    assert Registry(tmp_path / "cli-registry").get("fin").path == Path(pulled["path"])


def test_cli_error_is_one_line_without_the_token(hub_env, monkeypatch, capsys):
    from adapterhub.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_forged_token")
    hub_env.add_repo("alice/repo", {"README.md": "x"}, private=True)
    assert main(["pull", "alice/repo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "401" in err and "hf_forged_token" not in err


# --- helpers --------------------------------------------------------------------------------------
def _apply_env(monkeypatch, env: dict) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        elif value == "closed-port":
            monkeypatch.setenv(name, f"http://127.0.0.1:{_closed_port()}")
        else:
            monkeypatch.setenv(name, value)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _assert_nothing_registered(registry: Registry, error: Exception) -> None:
    assert registry.list() == []
    assert not any((registry.root / "adapters").glob("*/*"))
    assert TOKEN not in str(error) and "hf_forged_token" not in str(error)


# --- hostile repos (issue 13, item 2) -----------------------------------------------------------
def test_a_repo_manifest_never_chooses_the_local_name(hub_env, registry, finance, lora_dir, tiny_base):
    """A repo whose adapterhub.json says "name": "finance" must not become finance@2 (and so finance@latest)."""
    hostile = {**peft_files(lora_dir), "adapterhub.json": json.dumps({"name": "finance", "domain": "finance"})}
    hub_env.add_repo("mallory/finance", hostile)

    with pytest.raises(errors.InvalidNameError, match=r"'finance' already holds finance@1 .*--name finance"):
        pull("mallory/finance", registry=registry)
    assert [r.ref for r in registry.list()] == ["finance@1"]  # finance@latest still serves our weights

    hub_env.add_repo("mallory/evil-lora", hostile)  # a name of its own: fine, but never "finance"
    assert pull("mallory/evil-lora", registry=registry).ref == "evil-lora@1"
    explicit = pull("mallory/finance", name="finance", registry=registry)  # an explicit choice is honoured
    assert explicit.ref == "finance@2" and explicit.manifest["source"]["repo_id"] == "mallory/finance"


@pytest.mark.parametrize("field, value, message", [
    ("domain", "legal/../../x", "field 'domain'"),
    ("domain", "legal\n", "field 'domain'"),
    ("domain", {"a": 1}, "field 'domain'"),
    ("metrics", [1, 2], "field 'metrics' must be an object"),
    ("metrics", {"accuracy": [0.9]}, "field 'metrics'"),
    ("base", "llama", "field 'base'"),
    ("base", {"fingerprint": 5}, "field 'base'"),
    ("task", {"type": "classification", "labels": [{"x": 1}, "b"]}, "field 'task'"),
    ("task", {"type": "classification", "labels": ["a", "b"], "prompt_template": 7}, "field 'task'"),
    ("recipe", "deep", "field 'recipe'"),
    ("description", ["x"], "field 'description'"),
])
def test_every_remote_manifest_field_is_validated(hub_env, fresh, lora_dir, field, value, message):
    hub_env.add_repo("mallory/odd-lora", {**peft_files(lora_dir), "adapterhub.json": json.dumps({field: value})})
    with pytest.raises(errors.HubInvalidAdapterError, match=message) as caught:
        pull("mallory/odd-lora", registry=fresh)
    assert "nothing was registered" in str(caught.value) and fresh.list() == []


def test_a_deeply_nested_remote_manifest_is_one_clear_error(hub_env, fresh, lora_dir):
    deep = "[" * 100_000 + "]" * 100_000
    hub_env.add_repo("mallory/deep-lora", {**peft_files(lora_dir),
                                           "adapterhub.json": '{"metrics": {"x": ' + deep + "}}"})
    with pytest.raises(errors.HubInvalidAdapterError, match="nests more than"):
        pull("mallory/deep-lora", registry=fresh)
    assert fresh.list() == []
