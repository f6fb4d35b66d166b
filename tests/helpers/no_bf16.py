"""A pytest plugin: bitsandbytes' AVX512-BF16 probe answers False for the whole run, as on a CPU without
``avx512_bf16`` (the Intel Xeons without it): 4-bit layers take the unpacked path everywhere. Tests that force the
probe themselves (``tests/helpers/packed_cpu.py``) still do.

    python -m pytest -p tests.helpers.no_bf16 tests/base tests/training   # on an AVX512-BF16 CPU: the other path
"""

from __future__ import annotations

import bitsandbytes.functional
import bitsandbytes.nn.modules


def _no_bf16() -> bool:
    return False


bitsandbytes.functional.has_avx512bf16 = _no_bf16
bitsandbytes.nn.modules.has_avx512bf16 = _no_bf16
