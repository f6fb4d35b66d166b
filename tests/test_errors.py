"""Each surface shows its own fix: Python callers a call, the command line a verb or flag, HTTP clients what to send."""

from __future__ import annotations

import os
import stat

import pytest

from adapterhub.cli import main
from adapterhub.errors import AdapterHubError, IntegrityError, UnknownDomainError
from adapterhub.registry import Registry
from adapterhub.serve.protocol import from_exception


@pytest.fixture
def damaged(tmp_path, lora_dir) -> Registry:
    """A registry whose legal@1 weights were altered after they were stored."""
    registry = Registry(tmp_path / "registry")
    weights = registry.add(lora_dir, "legal").path / "adapter_model.safetensors"
    os.chmod(weights, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)
    weights.write_bytes(bytes(data))
    return registry


def test_a_checksum_error_tells_python_callers_the_python_fix(damaged):
    with pytest.raises(IntegrityError) as caught:
        damaged.load("legal@1")
    error = caught.value
    assert "sha256" in str(error) and "registry.remove('legal@1')" in str(error)
    assert "adapterhub" not in str(error) and "`" not in str(error)
    assert "adapterhub registry rm legal@1" in error.cli_message and "registry.remove" not in error.cli_message
    assert "operator" in error.http_message and "registry" not in error.http_message.split(";", 1)[1]


def test_a_checksum_error_tells_command_line_users_the_verb(damaged, capsys):
    assert main(["registry", "export", "legal@1", str(damaged.root.parent / "out"),
                 "--registry", str(damaged.root)]) == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "adapterhub registry rm legal@1" in err and "registry.remove" not in err
    assert main(["registry", "verify", "--registry", str(damaged.root)]) == 1
    out = capsys.readouterr().out
    assert "sha256" in out and "registry.remove" not in out and "adapterhub registry rm REF" in out


def test_http_never_shows_a_python_or_command_line_fix():
    unknown = UnknownDomainError("unknown domain 'sports'", fix="load it with hub.load(ref_or_path, name='sports')",
                                 cli_fix="`adapterhub registry list` shows the registered adapters")
    answer = from_exception(unknown)
    assert answer.status == 404 and answer.code == "model_not_found"
    assert answer.message == "unknown domain 'sports'; send as model one of the ids GET /v1/models lists"
    assert from_exception(AdapterHubError("bad value", fix="pass x=", cli_fix="pass --x")).message == "bad value"
    told = AdapterHubError("bad value", fix="pass x=", http_fix="send x in the body")
    assert from_exception(told).message == "bad value; send x in the body"
