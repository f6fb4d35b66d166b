"""``adapterhub registry ...``: tables for people, --json for scripts, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from adapterhub.cli import main
from adapterhub.registry.manifest import WEIGHTS_FILE
from adapterhub.registry import Registry


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(registry_root, lora_dir, prefix_dir, capsys):
    """legal@1 (tag prod), legal@2 (prefix), both domain legal, in $ADAPTERHUB_REGISTRY."""
    assert run(capsys, "import", str(lora_dir), "--name", "legal", "--domain", "legal", "--tag", "prod",
               "--description", "contracts")[0] == 0
    assert run(capsys, "import", str(prefix_dir), "--name", "legal", "--domain", "legal")[0] == 0
    return Registry(registry_root)


def test_import_reports_the_new_ref(registry_root, lora_dir, capsys):
    code, out, _ = run(capsys, "import", str(lora_dir), "--name", "fin")
    assert code == 0 and "as fin@1 (lora," in out
    assert Registry(registry_root).get("fin").ref == "fin@1"


def test_list_table_and_json(filled, capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0 and "legal@1" in out and "legal@2" in out and "prod" in out
    code, out, _ = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert [(r["ref"], r["method"], r["tags"]) for r in rows] == [("legal@1", "lora", ["prod"]),
                                                                   ("legal@2", "prefix", [])]
    assert json.loads(run(capsys, "list", "--domain", "medical", "--json")[1]) == []
    assert "no adapters" in run(capsys, "list", "--domain", "medical")[1]


def test_show(filled, capsys):
    code, out, _ = run(capsys, "show", "legal@prod")
    assert code == 0 and "legal@1" in out and "contracts" in out and WEIGHTS_FILE in out
    shown = json.loads(run(capsys, "show", "legal", "--json")[1])
    assert shown["ref"] == "legal@2" and shown["files"][WEIGHTS_FILE]["sha256"]


def test_tag_rm_export_gc(filled, tmp_path, capsys):
    assert run(capsys, "tag", "legal@2", "prod")[1].strip() == "legal@prod -> legal@2"
    code, out, _ = run(capsys, "export", "legal@prod", str(tmp_path / "out"))
    assert code == 0 and "exported legal@2" in out and (tmp_path / "out" / WEIGHTS_FILE).is_file()
    assert run(capsys, "rm", "legal@1")[1].strip() == "removed legal@1"
    assert run(capsys, "rm", "legal", "--all")[1].strip() == "removed legal@2"
    code, out, _ = run(capsys, "gc")
    assert code == 0 and "1 leftover(s) removed" in out  # the empty name folder


def test_verify_exit_codes(filled, capsys):
    assert run(capsys, "verify") == (0, "2 entries checked, 0 problem(s)\n", "")
    weights = filled.get("legal@1").path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1])
    code, out, _ = run(capsys, "verify")
    assert code == 1 and f"problem: legal@1: {weights}" in out
    assert run(capsys, "verify", "legal@2")[0] == 0
    report = json.loads(run(capsys, "verify", "--json")[1])
    assert report["checked"] == 2 and len(report["problems"]) == 1


def test_registry_option_before_or_after_the_verb(tmp_path, lora_dir, capsys):
    root = tmp_path / "elsewhere"
    assert run(capsys, "--registry", str(root), "import", str(lora_dir), "--name", "a")[0] == 0
    assert run(capsys, "import", str(lora_dir), "--name", "a", "--root", str(root))[0] == 0
    assert [r.ref for r in Registry(root).list()] == ["a@1", "a@2"]


@pytest.mark.parametrize("argv, message", [
    (["show", "legal@9"], "no adapter 'legal@9'"),
    (["rm", "ghost"], "no adapter 'ghost'"),
    (["tag", "legal", "7"], "invalid tag '7'"),
    (["import", "/no/such/dir", "--name", "x"], "does not exist"),
    (["import", ".", "--name", "a/b"], "invalid adapter name 'a/b'"),
    (["show", "legal@"], "invalid adapter reference"),
])
def test_errors_are_one_line_and_exit_2(filled, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_show_prints_metrics_as_tables(registry_root, lora_dir, capsys):
    metrics = {"validation": {"loss": 0.41234, "perplexity": 1.51, "accuracy": 0.8333, "macro_f1": 0.81,
                              "f1": {"positive": 0.9, "negative": 0.72}, "count": 66},
               "test": {"loss": 0.3, "perplexity": 1.35, "accuracy": 0.95, "macro_f1": 0.94,
                        "f1": {"positive": 0.96, "negative": 0.92}, "count": 60},
               "base": {"validation": {"accuracy": 0.167, "macro_f1": 0.1, "f1": {"positive": 0.2}, "count": 66}},
               "train": {"steps": 40, "epochs": 2.0, "best_step": 40, "tokens_per_second": 812.5, "seconds": 95.1},
               "note": "imported"}
    task = {"type": "classification", "labels": ["positive", "negative"]}
    Registry(registry_root).add(lora_dir, "fin", metrics=metrics, task=task)
    listed = run(capsys, "list")[1]
    assert "metric" in listed and "val acc 83.3%" in listed  # each version's headline metric
    code, out, _ = run(capsys, "show", "fin")
    assert code == 0 and "{" not in out  # no raw dicts
    lines = out.splitlines()
    validation = next(line for line in lines if line.strip().startswith("validation"))
    assert validation.split() == ["validation", "66", "83.3%", "0.810", "0.4123", "1.510"]
    assert any(line.split()[:3] == ["bare", "base,", "validation"] and "16.7%" in line for line in lines)
    assert any(line.split() == ["negative", "0.720", "0.920", "-"] for line in lines)  # per-label F1 by split
    assert "training: 40 steps (2.0 epochs)" in out and "metric note" in out
    assert json.loads(run(capsys, "show", "fin", "--json")[1])["metrics"] == metrics
