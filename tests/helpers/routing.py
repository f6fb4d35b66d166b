"""Routers over the tiny llama: three LoRA adapters (finance, medical, legal) whose recipe data are word salads of
each domain's own words (the tiny llama's pooled states separate them), and a router ``domains`` over them.

Its fixtures (``routing_registry``, ``routing_router``) are registered in ``tests/conftest.py``; request them by name.
"""

from __future__ import annotations

import json

import pytest
import torch

WORDS = {  # each domain's texts share words the others lack: the pooled states of the tiny llama separate them
    "finance": ["shares", "revenue", "profit", "dividend", "bond", "quarter", "earnings", "investors"],
    "medical": ["pain", "fever", "cough", "rash", "dizzy", "nausea", "swelling", "headache"],
    "legal": ["clause", "party", "agreement", "liability", "termination", "notice", "court", "indemnify"],
}
LABELS = {"finance": ["up", "down"], "medical": ["heart", "skin"], "legal": ["term", "law"]}


def domain_texts(domain: str, count: int, seed: int) -> list[str]:
    """``count`` ten-word texts of ``domain``'s words."""
    words = WORDS[domain]
    generator = torch.Generator().manual_seed(seed)
    return [" ".join(words[int(i)] for i in torch.randint(0, len(words), (10,), generator=generator))
            for _ in range(count)]


def mixed_texts(seed: int) -> tuple[list[str], list[str]]:
    """Three texts of each domain, and the domain of each."""
    texts, truth = [], []
    for index, domain in enumerate(WORDS):
        texts += domain_texts(domain, 3, seed=seed + index)
        truth += [domain] * 3
    return texts, truth


@pytest.fixture(scope="module")
def routing_registry(tiny_base, tmp_path_factory):
    """A registry with finance, medical and legal (LoRA, classification) and their recorded recipe data."""
    from adapterhub.registry import Registry
    from adapterhub.runtime.testing import make_random_adapters

    root = tmp_path_factory.mktemp("routing")
    registry = Registry(root / "registry")
    for index, domain in enumerate(WORDS):
        files = {}
        for split, count in (("train", 24), ("validation", 9)):
            path = root / f"{domain}-{split}.jsonl"
            path.write_text("".join(json.dumps({"text": t, "label": LABELS[domain][0]}) + "\n"
                                    for t in domain_texts(domain, count, seed=10 * index + len(split))))
            files[split] = {"path": str(path)}
        folder = make_random_adapters(tiny_base, root, prefix=domain, seed=index, r=4)[0]
        task = {"type": "classification", "labels": LABELS[domain], "chat": False, "prompt_template": "{text}\n"}
        registry.add(folder, domain, domain=domain, task=task, base=tiny_base, recipe={"data": files})
    return registry


@pytest.fixture(scope="module")
def routing_router(routing_registry, tiny_base):
    """The router ``domains@1`` over finance, medical and legal (its record)."""
    from adapterhub.runtime.routers import build_router

    return build_router("domains", adapters=["finance", "medical", "legal"], registry=routing_registry,
                        base=tiny_base).record
