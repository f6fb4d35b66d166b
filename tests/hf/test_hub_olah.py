"""Pull against olah, a self-hosted Hub mirror, serving local git repos (offline mode, 127.0.0.1).

Two repos: one made by plain PEFT and one of ours (manifest + model card). The
weights are committed as Git LFS pointers with the objects in ``.git/lfs``, as
on the real Hub. olah resolves HEAD only through its cache, so every pull names
a revision; it maps some errors poorly, so error paths are tested in
test_hubsync.py against tests/helpers/hubserver.py.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.helpers.peft_adapters import save_lora

from adapterhub.hf.modelcard import render_model_card
from adapterhub.hf import pull
from adapterhub.registry import Registry

LFS_FILES = ("adapter_model.safetensors",)
LEGAL_TASK = {"type": "classification", "labels": ["termination", "indemnification", "governing_law"],
              "prompt_template": "Clause type?\n{text}", "chat": False}


def _olah_cli() -> str | None:
    beside_python = Path(sys.executable).with_name("olah-cli")
    return str(beside_python) if beside_python.is_file() else shutil.which("olah-cli")


pytestmark = pytest.mark.skipif(_olah_cli() is None or shutil.which("git") is None,
                                reason="needs olah (pip install olah) and git")


@dataclass(frozen=True)
class OlahSite:
    url: str
    commits: dict[str, str]  # repo id -> commit sha
    sources: dict[str, Path]  # repo id -> the adapter folder it was built from


def commit_git_repo(path: Path, files: dict[str, bytes]) -> str:
    """A git repo holding ``files`` (LFS_FILES as LFS pointers); returns the commit sha."""
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    for name, data in files.items():
        if name in LFS_FILES:
            oid = hashlib.sha256(data).hexdigest()
            store = path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
            store.mkdir(parents=True)
            (store / oid).write_bytes(data)
            data = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()
        (path / name).write_bytes(data)
    (path / ".gitattributes").write_text("".join(f"{name} filter=lfs diff=lfs merge=lfs -text\n" for name in LFS_FILES))
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "adapter"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"olah exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    pytest.fail(f"olah did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def olah(tmp_path_factory, tiny_llama_dir, tiny_base):
    root = tmp_path_factory.mktemp("olah")
    plain = save_lora(tiny_llama_dir, root / "plain-src", seed=5)
    registry = Registry(root / "source-registry")
    legal = registry.add(save_lora(tiny_llama_dir, root / "legal-src", seed=6), "legal", domain="legal",
                         base=tiny_base, task=LEGAL_TASK, metrics={"accuracy": 0.8})
    ours = registry.export(legal.ref, root / "legal-export")
    (ours / "README.md").write_text(render_model_card(legal.manifest, repo_id="acme/legal-adapter"))
    sources = {"acme/plain-lora": plain, "acme/legal-adapter": ours}
    commits = {repo_id: commit_git_repo(root / "mirrors" / "models" / repo_id,
                                        {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()})
               for repo_id, folder in sources.items()}
    port = _free_port()
    config = root / "olah.toml"
    config.write_text(f"""[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{root / 'olah-repos'}"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{root / 'mirrors'}"]

[accessibility]
offline = true
""")
    log = root / "olah.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([_olah_cli(), "-c", str(config)], cwd=root, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(f"{url}/api/models/acme/plain-lora/revision/{commits['acme/plain-lora']}", process, log)
        yield OlahSite(url=url, commits=commits, sources=sources)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def olah_env(olah, tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", olah.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return olah


def test_pull_plain_peft_repo_by_commit(olah_env, tmp_path, tiny_base):
    commit = olah_env.commits["acme/plain-lora"]
    record = pull("acme/plain-lora", revision=commit, base=tiny_base, registry=Registry(tmp_path / "registry"))

    assert (record.ref, record.domain, record.method) == ("plain-lora@1", "plain", "lora")
    assert record.manifest["source"] == {"kind": "pulled", "repo_id": "acme/plain-lora", "commit": commit}
    assert record.base_fingerprint == tiny_base.fingerprint
    for file in ("adapter_config.json", "adapter_model.safetensors"):  # the LFS object, not its pointer
        assert (record.path / file).read_bytes() == (olah_env.sources["acme/plain-lora"] / file).read_bytes()


def test_pull_our_repo_by_branch_carries_the_manifest(olah_env, tmp_path, tiny_base):
    registry = Registry(tmp_path / "registry")
    record = pull("hf://acme/legal-adapter@main", registry=registry)

    assert (record.ref, record.domain) == ("legal-adapter@1", "legal")  # the name comes from the repo id
    assert record.manifest["source"]["commit"] == olah_env.commits["acme/legal-adapter"]
    assert record.manifest["task"]["labels"] == LEGAL_TASK["labels"]
    assert record.manifest["metrics"] == {"accuracy": 0.8}
    assert record.base_fingerprint == tiny_base.fingerprint
    assert registry.load(record.ref, base=tiny_base).tensors
    assert pull("acme/legal-adapter", revision=olah_env.commits["acme/legal-adapter"], registry=registry) == record
    assert len(registry.list()) == 1
