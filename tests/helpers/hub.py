"""The Hub fixtures of the push/pull tests: a Hub-compatible server on 127.0.0.1, the HF variables pointed
at it, and the registries pushed from and pulled into (registered for every test by ``tests/conftest.py``)."""

from __future__ import annotations

import pytest
import yaml

from adapterhub.registry import Registry
from tests.helpers.hubserver import HubServer

TOKEN = "hf_alice_secret_write_token"
BOB_TOKEN = "hf_bob_secret_token"


@pytest.fixture
def hub():
    with HubServer(tokens={TOKEN: ("alice",), BOB_TOKEN: ("bob",)}) as server:
        yield server


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch):
    """Point the standard HF variables at the test server and a private cache."""
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return hub


@pytest.fixture
def registry(registry_root) -> Registry:
    return Registry(registry_root)


@pytest.fixture
def fresh(tmp_path) -> Registry:
    """A second, empty registry to pull into."""
    return Registry(tmp_path / "fresh-registry")


def front_matter(card: bytes) -> dict:
    return yaml.safe_load(card.decode().split("---\n")[1])
