"""Options several verbs share."""

from __future__ import annotations

import argparse


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` for verbs that run a model on the CPU (see :mod:`adapterhub.cpu`)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: $ADAPTERHUB_THREADS, else $OMP_NUM_THREADS, else "
                             "the cores idle now, at least 1: on a busy machine that is 1)")
