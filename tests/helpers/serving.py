"""A real uvicorn server on 127.0.0.1 over the tiny llama, with a registry of LoRA, prefix and broken adapters.

Its fixtures (``serve_registry``, ``server``) are registered in ``tests/conftest.py``; request them by name.
``start_server`` (another server over the same registry): ``from tests.helpers.serving import start_server``.
"""

from __future__ import annotations

import os
import stat

import pytest

from adapterhub.prompts import TaskSpec

SENTIMENT = TaskSpec(type="classification", labels=("positive", "negative", "neutral"),
                     prompt_template="Sentiment ({labels})?\n{text}")


@pytest.fixture(scope="session")
def serve_registry(tiny_base, other_tiny_llama_dir, tmp_path_factory):
    """Registry: legal@1/@2 (LoRA), finance (LoRA, classification), medical (prefix), broken (bad checksum),
    foreign (made for another base)."""
    from adapterhub import Registry, load_base
    from adapterhub.runtime.testing import make_random_adapters

    root = tmp_path_factory.mktemp("serve-adapters")
    lora = make_random_adapters(tiny_base, root, count=4, r=4, prefix="lora")
    prefix = make_random_adapters(tiny_base, root, count=1, method="prefix", num_virtual_tokens=5, prefix="pre")
    registry = Registry(tmp_path_factory.mktemp("serve-registry"))
    registry.add(lora[0], "legal", base=tiny_base)
    registry.add(lora[1], "legal", base=tiny_base)
    registry.add(lora[2], "finance", task=SENTIMENT, base=tiny_base)
    registry.add(prefix[0], "medical", base=tiny_base)
    broken = registry.add(lora[3], "broken", base=tiny_base)
    weights = broken.path / "adapter_model.safetensors"
    os.chmod(weights, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    registry.add(lora[3], "foreign", base=load_base(str(other_tiny_llama_dir), device="cpu"))
    return registry


def start_server(tiny_base, registry, **options):
    from adapterhub import AdapterHub
    from adapterhub.serve import ServeOptions, ServerThread, build_app

    hub = AdapterHub(tiny_base, registry=registry)
    app = build_app(hub, ServeOptions(**{"max_rows": 8, "max_queue": 64, "max_new_tokens": 64, "base_name": "tiny", **options}))
    return hub, ServerThread(app).start()


@pytest.fixture(scope="module")
def server(tiny_base, serve_registry):
    """``(hub, server)``: an open server (no auth) on a free port; ``server.url`` is its root."""
    hub, thread = start_server(tiny_base, serve_registry)
    yield hub, thread
    thread.stop()
    hub.close()
