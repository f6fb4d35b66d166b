"""The library itself stays quiet about dependency notices a user can neither act on nor avoid."""

from __future__ import annotations

import logging
import warnings

import pytest

import adapterhub  # noqa: F401  (installs the bitsandbytes filter)


def test_the_bitsandbytes_kernel_notice_is_dropped_and_nothing_else(caplog):
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels`", "no module named kernels")
        logger.warning("some other bitsandbytes warning")
    assert [record.getMessage() for record in caplog.records] == ["some other bitsandbytes warning"]


def _gradient_checkpointing_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_wrapping_a_model_in_peft_leaks_no_gradient_checkpointing_futurewarning(tiny_base, tmp_path):
    import peft

    from adapterhub.registry import Registry
    from adapterhub.runtime.testing import make_random_adapters
    from adapterhub.training.evaluate import load_peft_model

    config = peft.LoraConfig(r=2, target_modules=["q_proj"])
    if not _gradient_checkpointing_warnings(lambda: peft.get_peft_model(tiny_base.model, config).unload()):
        pytest.skip("this transformers/PEFT pair no longer warns: nothing to silence")
    adapter = make_random_adapters(tiny_base, tmp_path, r=2)[0]
    registry = Registry(tmp_path / "registry")
    ref = registry.add(adapter, "quiet").ref
    assert _gradient_checkpointing_warnings(lambda: load_peft_model(registry, ref, tiny_base).unload()) == []
    with warnings.catch_warnings(record=True) as caught:  # the filter was scoped to the block
        warnings.simplefilter("always")
        warnings.warn("`is_gradient_checkpointing` is deprecated (a caller's own)", FutureWarning)
    assert len(caught) == 1
