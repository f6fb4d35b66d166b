"""Run one function in a fresh Python process, so its peak memory and its imports are its own.

The child is ``python -m adapterhub.bench.isolated module:function``; it reads
the keyword arguments as JSON on stdin and writes the (JSON) result to a file.
It imports the same adapterhub tree as the parent (``PYTHONPATH`` is set to it).

>>> run_isolated("adapterhub.bench.environment:package_versions", {})  # doctest: +SKIP
{'torch': '2.13.0', ...}
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import AdapterHubError

_TAIL_CHARS = 3000


class IsolatedRunError(AdapterHubError, RuntimeError):
    """The child process failed; the message carries the end of its output."""


def run_isolated(target: str, kwargs: dict[str, Any]) -> Any:
    """Call ``module:function(**kwargs)`` in a new process and return its JSON result.

    Args:
        target: ``"package.module:function"``.
        kwargs: JSON-serialisable keyword arguments.

    Raises:
        IsolatedRunError: the child exited with an error (its output tail is in the message).
    """
    tree = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="adapterhub-bench-") as folder:
        result_path = Path(folder) / "result.json"
        process = subprocess.run([sys.executable, "-m", __name__, target, str(result_path)], env=env,
                                 input=json.dumps(kwargs), capture_output=True, text=True, check=False)
        if process.returncode != 0 or not result_path.is_file():
            output = (process.stdout + process.stderr)[-_TAIL_CHARS:]
            raise IsolatedRunError(f"{target} failed in its child process (exit {process.returncode}):\n{output}")
        return json.loads(result_path.read_text())


def _main(argv: list[str]) -> None:
    target, result_path = argv
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(sys.stdin.read()))
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
