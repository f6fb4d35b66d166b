"""Shared fixtures: a tiny random llama (fast), isolated adapterhub homes, and a clean environment.

The suite must pass in any shell: ``HF_HUB_OFFLINE=1``, a token, another endpoint or
registry exported there must not change what a test sees. Every ``HF_*``,
``HUGGING_FACE_*``, ``TRANSFORMERS_OFFLINE`` and ``ADAPTERHUB_*`` variable is
cleared here, before anything imports ``huggingface_hub`` (which reads them once,
at import), and again around every test; tests that need one set it themselves
(``monkeypatch.setenv``). Kept: ``ADAPTERHUB_HOME`` only, which says where the
real default base is cached (tests that care set their own).
"""

from __future__ import annotations

import os
from pathlib import Path

KEPT = {"ADAPTERHUB_HOME"}


def _shell_variables() -> list[str]:
    return [name for name in os.environ if name not in KEPT and (
        name.startswith(("HF_", "HUGGING_FACE_", "ADAPTERHUB_")) or name == "TRANSFORMERS_OFFLINE")]


for _name in _shell_variables():  # before huggingface_hub is imported below
    del os.environ[_name]

import pytest  # noqa: E402

from adapterhub.base.tiny import make_tiny_llama  # noqa: E402

# fixtures shared across folders live in tests/helpers/ (imported as tests.helpers.<module>); registered here once
pytest_plugins = ["tests.helpers.peft_adapters", "tests.helpers.serving", "tests.helpers.hub",
                  "tests.helpers.routing"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No HF_* / ADAPTERHUB_* variable from the shell (or a previous test) reaches a test."""
    for name in _shell_variables():
        monkeypatch.delenv(name)
    constants = __import__("sys").modules.get("huggingface_hub.constants")
    if constants is not None:  # imported by a plugin before this file ran: undo what it read from the shell
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield
    from adapterhub import cpu

    cpu.leave_seat()  # a CLI call inside a test took a seat: no later test rebalances threads under another
    cpu._Share.ceiling = None


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
