"""The ``adapterhub`` command. Thin: every verb calls the public library.

Each area lives in its own module (``cli/base.py``, ``cli/registry.py``, ...)
exposing ``register(subparsers)``; handlers import heavy libraries lazily so
``adapterhub --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ..errors import AdapterHubError

# order = order in --help
COMMAND_MODULES = ["quickstart", "runtime", "train", "merge", "registry", "hub", "base", "bench"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="adapterhub",
        description="One frozen base model, many hot-swappable domain adapters.",
    )
    parser.add_argument("--version", action="version", version=f"adapterhub {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _quiet_library_noise() -> None:
    """Silence messages of our dependencies that a command-line user can neither act on nor avoid.

    bitsandbytes announces on import that an optional CPU kernel could not be fetched
    from the Hub (it falls back to its own); PEFT reads a transformers attribute that is
    deprecated. The Python API leaves logging and warnings to the caller.
    """
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_library_noise()
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except AdapterHubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `adapterhub registry list --json | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
