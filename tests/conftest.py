"""Shared fixtures: a tiny random llama (fast) and isolated adapterhub homes."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.base.tiny import make_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A saved tiny random llama (2 layers, hidden 64) with a BPE tokenizer."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_llama_dir(tmp_path_factory) -> Path:
    """Same architecture as ``tiny_llama_dir``, different weights."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-other"), seed=1)


@pytest.fixture(scope="session")
def tiny_base(tiny_llama_dir):
    """The tiny llama loaded as a frozen fp32 :class:`adapterhub.Base` on CPU."""
    from adapterhub import load_base

    return load_base(str(tiny_llama_dir), device="cpu")


@pytest.fixture
def registry_root(tmp_path, monkeypatch) -> Path:
    """An empty registry root, also exported as ``ADAPTERHUB_REGISTRY``."""
    root = tmp_path / "registry"
    monkeypatch.setenv("ADAPTERHUB_REGISTRY", str(root))
    return root
