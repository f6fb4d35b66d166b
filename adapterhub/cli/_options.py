"""Options several verbs share."""

from __future__ import annotations

import argparse
from typing import Any

from ..paths import REGISTRY_HELP


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` for verbs that run a model on the CPU (see :mod:`adapterhub.cpu`)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: $ADAPTERHUB_THREADS, else $OMP_NUM_THREADS, else "
                             "the cores idle now, at least 1: on a busy machine that is 1)")


def add_registry_option(parser: argparse.ArgumentParser, *, default: Any = None, help: str = REGISTRY_HELP) -> None:
    """``--registry DIR`` (into ``args.registry``) for every verb that opens a registry.

    ``--root DIR``, its older name, is kept as a hidden alias with the same destination.
    ``default=argparse.SUPPRESS`` leaves a value set by an enclosing parser untouched
    (``adapterhub registry --registry DIR list`` and ``adapterhub registry list --registry DIR`` both work).
    """
    parser.add_argument("--registry", dest="registry", default=default, metavar="DIR", help=help)
    parser.add_argument("--root", dest="registry", default=default, metavar="DIR", help=argparse.SUPPRESS)


def add_unpacked_4bit_option(parser: argparse.ArgumentParser) -> None:
    """``--unpacked-4bit`` (into ``args.packed_4bit``: ``False``, else ``None``, bitsandbytes' own choice) for verbs
    that load a 4-bit base (see :func:`adapterhub.base.quantized.set_cpu_packing`)."""
    parser.add_argument("--unpacked-4bit", dest="packed_4bit", action="store_const", const=False, default=None,
                        help="with a 4-bit base on a CPU with AVX512-BF16: dequantise every forward instead of "
                             "bitsandbytes' packed bf16 kernel (the default there)")
