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
COMMAND_MODULES = ["quickstart", "runtime", "encoder", "train", "merge", "router", "registry", "lifecycle", "hub", "base",
                   "serve", "cache", "bench"]


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


def _use_threads(requested: int | None) -> None:
    from ..cpu import use_threads
    from ..errors import ConfigError

    try:
        use_threads(requested)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        if hasattr(args, "threads"):  # a verb that runs a model: don't fight other work for the cores
            _use_threads(args.threads)
        return int(args.handler(args) or 0)
    except AdapterHubError as error:
        print(f"error: {error.cli_message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `adapterhub registry list --json | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # an unwritable output path or a full disk that no library call named
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}; check the path exists and is writable, and that its disk "
              "has free space", file=sys.stderr)
        return 2
