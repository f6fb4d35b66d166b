"""Registry operations on real PEFT adapters: add, resolve, list, load, tag, remove, export, verify, gc,
and every bad input (one clear error, nothing written)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.errors import (AdapterNotFoundError, ConfigError, IncompatibleBaseError, IntegrityError,
                               InvalidAdapterError, InvalidNameError)
from adapterhub.registry.manifest import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE
from adapterhub.prompts import TaskSpec
from adapterhub.registry import Registry

CLASSIFY = TaskSpec(type="classification", labels=("buy", "sell"), prompt_template="Trade? {text}")


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def seeded(registry, lora_dir, prefix_dir) -> Registry:
    """legal@1 (lora, tag prod), legal@2 (prefix), fin@1 (lora, domain finance)."""
    registry.add(lora_dir, "legal", domain="legal", tags=["prod"])
    registry.add(prefix_dir, "legal", domain="legal")
    registry.add(lora_dir, "fin", domain="finance", task=CLASSIFY)
    return registry


def snapshot(registry: Registry) -> tuple[list[str], list[str]]:
    """What a failed operation must leave untouched: the files (index aside) and the entries."""
    files = sorted(str(p.relative_to(registry.root)) for p in registry.root.rglob("*")
                   if not p.name.startswith("index.sqlite")) if registry.root.exists() else []
    return files, [r.ref for r in registry.list()]


# --- add and resolve -------------------------------------------------------------------
def test_add_stores_a_plain_peft_dir_with_manifest(registry, lora_dir, tiny_base):
    record = registry.add(lora_dir, "legal", domain="legal", tags=["prod"], description="contracts",
                          base=tiny_base, metrics={"accuracy": 0.9}, recipe={"lr": 1e-4})
    assert (record.name, record.version, record.ref, record.method) == ("legal", 1, "legal@1", "lora")
    assert sorted(p.name for p in record.path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE]
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        assert (record.path / file).read_bytes() == (lora_dir / file).read_bytes()
    on_disk = json.loads((record.path / MANIFEST_FILE).read_text())
    assert on_disk["format"] == 1 and on_disk["version"] == 1 and on_disk["tags"] == ["prod"]
    assert on_disk["base"] == {"fingerprint": tiny_base.fingerprint, "name": tiny_base.spec.name}
    assert on_disk["source"] == {"kind": "imported", "path": str(lora_dir.resolve())}
    assert on_disk["metrics"] == {"accuracy": 0.9} and on_disk["recipe"] == {"lr": 1e-4}
    assert record.base_fingerprint == tiny_base.fingerprint and record.task == TaskSpec()
    assert json.loads(json.dumps(record.to_dict()))["ref"] == "legal@1"


def test_versions_grow_and_are_never_reused(registry, lora_dir):
    assert [registry.add(lora_dir, "legal").version for _ in range(3)] == [1, 2, 3]
    registry.remove("legal@3")
    assert registry.add(lora_dir, "legal").version == 4
    registry.remove("legal", all_versions=True)
    assert registry.add(lora_dir, "legal").version == 5


@pytest.mark.parametrize("ref, version", [("legal", 2), ("legal@latest", 2), ("legal@1", 1), ("legal@2", 2),
                                          ("legal@prod", 1)])
def test_references_resolve(seeded, ref, version):
    assert seeded.get(ref).version == version


def test_prefix_and_task_are_recorded(seeded):
    assert seeded.get("legal@2").method == "prefix"
    assert seeded.get("fin").task == CLASSIFY
    assert seeded.get("fin").manifest["task"]["labels"] == ["buy", "sell"]


@pytest.mark.parametrize("filters, refs", [
    ({}, ["fin@1", "legal@1", "legal@2"]),
    ({"domain": "legal"}, ["legal@1", "legal@2"]),
    ({"domain": "medical"}, []),
    ({"base": "llama-no-such-base"}, []),
])
def test_list_filters(seeded, filters, refs):
    assert [r.ref for r in seeded.list(**filters)] == refs


def test_list_by_base_fingerprint(registry, lora_dir, tiny_base):
    registry.add(lora_dir, "with-base", base=tiny_base)
    registry.add(lora_dir, "without-base")
    assert [r.ref for r in registry.list(base=tiny_base.fingerprint)] == ["with-base@1"]


def test_default_root_comes_from_the_environment(registry_root, lora_dir):
    assert Registry().root == registry_root
    Registry().add(lora_dir, "x")
    assert (registry_root / "adapters" / "x" / "1" / WEIGHTS_FILE).is_file()


def test_manifest_beside_the_source_supplies_defaults(seeded, tmp_path):
    exported = seeded.export("fin", tmp_path / "fin-export")
    other = Registry(tmp_path / "other")
    record = other.add(exported, "fin-copy")
    assert (record.domain, record.task, record.version) == ("finance", CLASSIFY, 1)
    assert other.add(exported, "fin-copy", domain="override").domain == "override"


# --- load --------------------------------------------------------------------------------
def test_load_verifies_and_returns_config_and_tensors(seeded, lora_dir, tiny_base):
    loaded = seeded.load("legal@prod", base=tiny_base)
    assert loaded.record.ref == "legal@1"
    assert loaded.config == json.loads((lora_dir / CONFIG_FILE).read_text())
    expected = load_file(lora_dir / WEIGHTS_FILE)
    assert loaded.tensors.keys() == expected.keys()
    assert all(torch.equal(loaded.tensors[k], expected[k]) for k in expected)
    assert seeded.load("legal@2", base=tiny_base).tensors["prompt_embeddings"].shape == (4, 2 * 2 * 32)


def test_load_reads_each_file_once(seeded, monkeypatch):
    import adapterhub.registry.integrity as integrity

    reads: list[str] = []
    original = integrity.read_observed
    monkeypatch.setattr(integrity, "read_observed", lambda path, **kw: reads.append(Path(path).name) or original(path, **kw))
    seeded.load("legal@1")
    assert sorted(reads) == [CONFIG_FILE, WEIGHTS_FILE]


def test_load_refuses_another_base(registry, lora_dir, tiny_base):
    registry.add(lora_dir, "legal", base=tiny_base)
    other = dataclasses.replace(tiny_base, fingerprint="llama-2L-64h-384v-0000000000000000")
    with pytest.raises(IncompatibleBaseError, match="llama-2L-64h-384v-0000000000000000"):
        registry.load("legal", base=other)


def test_add_refuses_adapter_for_other_architecture(seeded, three_layer_lora_dir, tiny_base):
    before = snapshot(seeded)
    with pytest.raises(IncompatibleBaseError, match=r"model\.layers\.2\.self_attn\.q_proj"):
        seeded.add(three_layer_lora_dir, "deep", base=tiny_base)
    assert snapshot(seeded) == before


# --- tags, remove, export, gc ------------------------------------------------------------
def test_tag_moves_between_versions(seeded):
    assert seeded.tag("legal@2", "prod").tags == ("prod",)
    assert seeded.get("legal@prod").version == 2 and seeded.get("legal@1").tags == ()
    seeded.tag("legal@2", "candidate")
    assert seeded.get("legal@2").tags == ("candidate", "prod")
    assert seeded.get("legal@2").to_dict()["tags"] == ["candidate", "prod"]


def test_remove_takes_its_files_and_tags(seeded):
    removed = seeded.remove("legal@prod")
    assert [r.ref for r in removed] == ["legal@1"] and not removed[0].path.exists()
    with pytest.raises(AdapterNotFoundError):
        seeded.get("legal@prod")
    assert seeded.get("legal").version == 2
    assert [r.ref for r in seeded.remove("legal", all_versions=True)] == ["legal@2"]
    assert [r.ref for r in seeded.list()] == ["fin@1"]
    assert seeded.gc() == [seeded.root / "adapters" / "legal"]  # the empty name folder


def test_export_round_trips_through_plain_peft(registry, lora_dir, tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    registry.add(lora_dir, "legal")
    exported = registry.export("legal", tmp_path / "export")
    assert sorted(p.name for p in exported.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE]
    ids = torch.tensor([[1, 7, 42, 99, 5]])
    logits = []
    for adapter in (lora_dir, exported):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter).eval()
        with torch.inference_mode():
            logits.append(model(ids).logits)
    with torch.inference_mode():
        plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)(ids).logits
    assert torch.equal(logits[0], logits[1])
    assert not torch.allclose(plain, logits[1])  # the adapter really does something


def test_export_refuses_a_non_empty_folder(seeded, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        seeded.export("legal", tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_gc_on_a_clean_registry_removes_nothing(seeded):
    assert seeded.gc() == [] and seeded.verify() == []


# --- tampering -----------------------------------------------------------------------------
def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize("file, damage, message", [
    (WEIGHTS_FILE, _flip_last_byte, "does not match its recorded sha256"),
    (WEIGHTS_FILE, _truncate, "truncated or modified"),
    (CONFIG_FILE, _flip_last_byte, "does not match its recorded sha256"),
    (CONFIG_FILE, Path.unlink, "is missing"),
])
def test_tampering_is_refused_naming_the_file(seeded, tmp_path, file, damage, message):
    path = seeded.get("legal@1").path / file
    damage(path)
    for action in (lambda: seeded.load("legal@1"), lambda: seeded.export("legal@1", tmp_path / "out")):
        with pytest.raises(IntegrityError, match=message) as caught:
            action()
        assert str(path) in str(caught.value) and "legal@1" in str(caught.value)
    assert len(seeded.verify()) == 1 and str(path) in seeded.verify("legal@1")[0]
    seeded.load("legal@2")  # others stay usable


def test_verify_reports_every_problem(seeded):
    _flip_last_byte(seeded.get("legal@1").path / WEIGHTS_FILE)
    _truncate(seeded.get("fin@1").path / CONFIG_FILE)
    (seeded.get("legal@2").path / MANIFEST_FILE).write_text("{}")
    problems = seeded.verify()
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["fin@1", "legal@1", "legal@2"]


# --- bad input: one clear error, nothing written ----------------------------------------------
@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "..", "a..b", "../escape", "with space", "a@b", "-dash",
                                  ".hidden", "x" * 101, None])
def test_bad_names_are_refused(seeded, lora_dir, name):
    before = snapshot(seeded)
    with pytest.raises(InvalidNameError, match="invalid adapter name"):
        seeded.add(lora_dir, name)
    assert snapshot(seeded) == before


@pytest.mark.parametrize("kwargs, error, message", [
    ({"tags": ["3"]}, InvalidNameError, "plain numbers and 'latest'"),
    ({"tags": ["latest"]}, InvalidNameError, "plain numbers and 'latest'"),
    ({"tags": ["a b"]}, InvalidNameError, "invalid tag"),
    ({"domain": "../x"}, InvalidNameError, "invalid domain"),
    ({"task": {"type": "classification", "labels": ["only-one"]}}, ConfigError, "at least two labels"),
    ({"task": "classification"}, ConfigError, "task must be"),
    ({"source": {"kind": "stolen"}}, ConfigError, "source kind"),
])
def test_bad_options_are_refused(seeded, lora_dir, kwargs, error, message):
    before = snapshot(seeded)
    with pytest.raises(error, match=message):
        seeded.add(lora_dir, "legal", **kwargs)
    assert snapshot(seeded) == before


def test_names_differing_only_in_case_are_refused(seeded, lora_dir):
    before = snapshot(seeded)
    with pytest.raises(InvalidNameError, match="differs only in case"):
        seeded.add(lora_dir, "Legal")
    assert snapshot(seeded) == before


class _Booby:
    """Unpickling this creates a marker file, proving a loader unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickle_only(folder: Path, source: Path) -> str:
    (folder / CONFIG_FILE).write_bytes((source / CONFIG_FILE).read_bytes())
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Booby(folder / "UNPICKLED")))
    return "never loads"


def _build(kind: str, folder: Path, lora: Path, prefix: Path) -> str:
    """Make a broken adapter folder of ``kind``; returns a fragment the error must contain."""
    folder.mkdir()
    config = json.loads((lora / CONFIG_FILE).read_text())
    weights = (lora / WEIGHTS_FILE).read_bytes()
    if kind == "missing folder":
        folder.rmdir()
        return "does not exist"
    if kind == "pickle only":
        return _pickle_only(folder, lora)
    files = {
        "no config": {WEIGHTS_FILE: weights},
        "no weights": {CONFIG_FILE: json.dumps(config)},
        "malformed json": {CONFIG_FILE: '{"peft_type": "LORA",', WEIGHTS_FILE: weights},
        "json not an object": {CONFIG_FILE: "[1, 2]", WEIGHTS_FILE: weights},
        "unknown method": {CONFIG_FILE: json.dumps({**config, "peft_type": "VERA"}), WEIGHTS_FILE: weights},
        "no method": {CONFIG_FILE: json.dumps({"r": 4}), WEIGHTS_FILE: weights},
        "garbage weights": {CONFIG_FILE: json.dumps(config), WEIGHTS_FILE: b"not safetensors at all"},
        "truncated weights": {CONFIG_FILE: json.dumps(config), WEIGHTS_FILE: weights[:-100]},
        "weights of another method": {CONFIG_FILE: (prefix / CONFIG_FILE).read_text(), WEIGHTS_FILE: weights},
        "manifest malformed": {CONFIG_FILE: json.dumps(config), WEIGHTS_FILE: weights, MANIFEST_FILE: "{oops"},
    }[kind]
    for file, data in files.items():
        (folder / file).write_bytes(data.encode() if isinstance(data, str) else data)
    return {"no config": "has no adapter_config.json", "no weights": "has no adapter_model.safetensors",
            "malformed json": "is not valid JSON", "json not an object": "must hold a JSON object",
            "unknown method": "unsupported method", "no method": "unsupported method",
            "garbage weights": "not a valid safetensors", "truncated weights": "not a valid safetensors",
            "weights of another method": "do not belong together", "manifest malformed": "is not valid JSON"}[kind]


@pytest.mark.parametrize("kind", ["missing folder", "no config", "no weights", "pickle only", "malformed json",
                                  "json not an object", "unknown method", "no method", "garbage weights",
                                  "truncated weights", "weights of another method", "manifest malformed"])
def test_bad_adapter_folders_are_refused(seeded, lora_dir, prefix_dir, tmp_path, kind):
    folder = tmp_path / "bad"
    fragment = _build(kind, folder, lora_dir, prefix_dir)
    before = snapshot(seeded)
    with pytest.raises(InvalidAdapterError, match=fragment) as caught:
        seeded.add(folder, "legal")
    assert "\n" not in str(caught.value)
    assert snapshot(seeded) == before
    if kind == "pickle only":
        assert "save_pretrained(out_dir, safe_serialization=True)" in str(caught.value)
        assert not (folder / "UNPICKLED").exists()


@pytest.mark.parametrize("ref, error", [
    ("legal@9", AdapterNotFoundError), ("nobody", AdapterNotFoundError), ("legal@nightly", AdapterNotFoundError),
    ("legal@", InvalidNameError), ("legal@0", InvalidNameError), ("legal@-1", InvalidNameError),
    ("@3", InvalidNameError), ("a/b@1", InvalidNameError), ("legal@1@2", InvalidNameError),
])
def test_bad_references_are_refused_everywhere(seeded, tmp_path, ref, error):
    before = snapshot(seeded)
    operations = [seeded.get, seeded.load, seeded.remove, seeded.verify, lambda r: seeded.tag(r, "prod"),
                  lambda r: seeded.export(r, tmp_path / "out")]
    for operation in operations:
        with pytest.raises(error):
            operation(ref)
    assert snapshot(seeded) == before and not (tmp_path / "out").exists()


def test_not_found_lists_the_versions_that_exist(seeded):
    with pytest.raises(AdapterNotFoundError, match="versions of 'legal': 1, 2"):
        seeded.remove("legal@9")
    with pytest.raises(InvalidNameError, match="all_versions"):
        seeded.remove("legal@1", all_versions=True)
