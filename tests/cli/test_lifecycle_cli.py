"""``adapterhub promote`` / ``rollback`` / ``registry history``: the gate evaluates through a hub on the adapter's
own base (the tiny llama here) and a refused promotion exits 2 naming both figures."""

from __future__ import annotations

import json

import pytest

from adapterhub.cli import main
from tests.helpers.recipes import write_jsonl
from tests.helpers.serving import SENTIMENT


@pytest.fixture
def cli_registry(tiny_base, tmp_path):
    from adapterhub import Registry
    from adapterhub.runtime.testing import make_random_adapters

    registry = Registry(tmp_path / "registry")
    for folder in make_random_adapters(tiny_base, tmp_path / "adapters", count=2, r=2):
        registry.add(folder, "finance", task=SENTIMENT, base=tiny_base)
    return registry


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_promote_gate_history_rollback_and_canary_from_the_command_line(cli_registry, tmp_path, capsys):
    root = ["--registry", cli_registry.root]
    data = write_jsonl(tmp_path / "eval.jsonl", [{"text": "Revenue rose", "label": "positive"},
                                                 {"text": "Shares fell", "label": "negative"},
                                                 {"text": "The meeting is on Monday", "label": "neutral"}])
    code, out, _ = run(capsys, "promote", "finance@1", "--channel", "prod", *root)
    assert code == 0 and "promote prod: - -> finance@1" in out
    code, out, err = run(capsys, "promote", "finance@2", "--channel", "prod", "--gate", "accuracy >= prod + 101",
                         "--data", data, *root)
    assert code == 2 and "accuracy >= prod + 101: " in err and "finance@prod still is finance@1" in err
    assert cli_registry.get("finance@prod").version == 1 and len(cli_registry.history("finance")) == 1
    code, out, _ = run(capsys, "promote", "finance@2", "--channel", "prod", "--gate", "macro_f1 >= 0, loss > 0",
                       "--data", data, "--json", *root)
    row = json.loads(out)
    assert code == 0 and row["to"] == 2 and row["metrics"]["candidate"]["rows"] == 3
    assert row["metrics"]["holder"]["ref"] == "finance@1" and all(check["passed"] for check in row["checks"])
    code, out, _ = run(capsys, "rollback", "finance", "--channel", "prod", *root)
    assert code == 0 and "rollback prod: finance@2 -> finance@1" in out
    assert run(capsys, "promote", "finance@2", "--channel", "prod", "--canary", "10%", *root)[0] == 0
    assert cli_registry.channel("finance", "prod").canary == 2
    assert run(capsys, "promote", "finance", "--channel", "prod", "--finish", *root)[0] == 0
    assert cli_registry.get("finance@prod").version == 2
    code, out, _ = run(capsys, "registry", "history", "finance", "--json", *root)
    assert [(r["op"], r["to"]) for r in json.loads(out)] == [("promote", 1), ("promote", 2), ("rollback", 1),
                                                              ("canary", 1), ("finish", 2)]
    code, out, _ = run(capsys, "registry", "history", "finance", *root)
    assert code == 0 and "finance@2 10%" in out and "macro_f1 >= 0: " in out
    code, _, err = run(capsys, "registry", "tag", "finance@1", "prod", *root)
    assert code == 2 and "is a channel" in err
