"""Run functions in fresh Python processes, so their peak memory and their imports are their own.

The child is ``python -m adapterhub.bench.isolated module:function``; it reads
the keyword arguments as JSON on stdin and writes the (JSON) result to a file.
It imports the same adapterhub tree as the parent (``PYTHONPATH`` is set to it).
:func:`run_isolated` runs one child and waits; :func:`run_together` starts several
at once (concurrent trainings) and waits for all of them.

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
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import AdapterHubError

_TAIL_CHARS = 3000
_POLL_SECONDS = 0.1  # how often run_together looks at its children


class IsolatedRunError(AdapterHubError, RuntimeError):
    """The child process failed; the message carries the end of its output."""


class IsolatedRun:
    """One child process started by :func:`start_isolated`; :meth:`result` waits for it.

    Its input, output and result live in a temporary folder, removed once the result is read
    or the child is stopped. The child's output goes to a file, so a chatty child never blocks
    on a full pipe while the parent waits for another one.
    """

    def __init__(self, target: str, kwargs: dict[str, Any], env: Mapping[str, str] | None = None) -> None:
        self.target = target
        self._folder = tempfile.TemporaryDirectory(prefix="adapterhub-bench-")
        folder = Path(self._folder.name)
        self._result_path, self._output_path = folder / "result.json", folder / "output.txt"
        (folder / "kwargs.json").write_text(json.dumps(kwargs))
        tree = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
        with open(folder / "kwargs.json", encoding="utf-8") as stdin, open(self._output_path, "w") as output:
            self._process = subprocess.Popen([sys.executable, "-m", __name__, target, str(self._result_path)],
                                             env=env, stdin=stdin, stdout=output, stderr=subprocess.STDOUT)

    def failed(self) -> bool:
        """Whether the child has exited with an error."""
        return self._process.poll() not in (None, 0)

    def done(self) -> bool:
        """Whether the child has exited."""
        return self._process.poll() is not None

    def result(self) -> Any:
        """Wait for the child and return its JSON result.

        Raises:
            IsolatedRunError: the child exited with an error (its output tail is in the message).
        """
        code = self._process.wait()
        try:
            if code != 0 or not self._result_path.is_file():
                output = self._output_path.read_text(errors="replace")[-_TAIL_CHARS:]
                raise IsolatedRunError(f"{self.target} failed in its child process (exit {code}):\n{output}")
            return json.loads(self._result_path.read_text())
        finally:
            self._folder.cleanup()

    def stop(self) -> None:
        """Kill the child if it still runs, and remove its folder."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._folder.cleanup()


def start_isolated(target: str, kwargs: dict[str, Any], *, env: Mapping[str, str] | None = None) -> IsolatedRun:
    """Start ``module:function(**kwargs)`` in a new process and return at once.

    Args:
        target: ``"package.module:function"``.
        kwargs: JSON-serialisable keyword arguments.
        env: the child's environment (default: this process's); ``PYTHONPATH`` gets this tree first.
    """
    return IsolatedRun(target, kwargs, env)


def run_isolated(target: str, kwargs: dict[str, Any], *, env: Mapping[str, str] | None = None) -> Any:
    """Call ``module:function(**kwargs)`` in a new process and return its JSON result.

    Raises:
        IsolatedRunError: the child exited with an error (its output tail is in the message).
    """
    return start_isolated(target, kwargs, env=env).result()


def run_together(calls: Sequence[tuple[str, dict[str, Any]]], *, env: Mapping[str, str] | None = None) -> list[Any]:
    """Start one child per ``(target, kwargs)`` at once and return their results in order.

    The first child to fail stops the others (which may be waiting for it) and its error is raised.

    Raises:
        IsolatedRunError: a child exited with an error.
    """
    runs = [start_isolated(target, kwargs, env=env) for target, kwargs in calls]
    try:
        while not all(run.done() for run in runs):
            failed = next((run for run in runs if run.failed()), None)
            if failed is not None:
                failed.result()  # raises its error; the others are stopped below
            time.sleep(_POLL_SECONDS)
        return [run.result() for run in runs]
    finally:
        for run in runs:
            run.stop()


def _main(argv: list[str]) -> None:
    target, result_path = argv
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(sys.stdin.read()))
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
