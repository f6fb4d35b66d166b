"""Issue 13, item 12: the suite passes whatever HF_* / ADAPTERHUB_* variables the shell exports.

Runs a few Hub and registry tests in a child pytest whose environment carries the variables an
offline machine (or a logged-in user) typically exports; tests/conftest.py must neutralise them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHELL = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_TOKEN": "hf_from_the_shell",
         "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": "/nonexistent/hf-home", "HF_HUB_CACHE": "/nonexistent/cache",
         "ADAPTERHUB_REGISTRY": "/nonexistent/registry"}
TESTS = ["tests/hf/test_hubsync.py::test_pulling_the_same_commit_twice_returns_the_existing_version",
         "tests/hf/test_hubsync.py::test_token_from_the_login_file",
         "tests/hf/test_hub_olah.py::test_pull_plain_peft_repo_by_commit",
         "tests/registry/test_registry.py::test_default_root_comes_from_the_environment"]


@pytest.mark.timeout(300)
def test_the_suite_ignores_hf_and_adapterhub_variables_exported_by_the_shell(tmp_path):
    env = {**os.environ, **SHELL}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-4000:]
    assert f"{len(TESTS)} passed" in done.stdout
