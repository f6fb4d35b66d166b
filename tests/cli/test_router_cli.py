"""``adapterhub router build`` and ``adapterhub router evaluate`` on the tiny llama: a registered router, its
candidates table, and an evaluation with a confusion matrix (JSON and PNG), the OOD share and auto-vs-named figures."""

from __future__ import annotations

import json

from adapterhub.cli import main


def test_router_build_then_evaluate(routing_registry, tiny_llama_dir, tmp_path, capsys):
    root = ["--registry", str(routing_registry.root), "--base", str(tiny_llama_dir), "--threads", "1"]
    ood = tmp_path / "ood.txt"
    ood.write_text("Who won the cup final last night?\nHow long do I boil an egg?\n")
    assert main(["router", "build", "cli-router", "--adapters", "finance", "medical", "legal", "--ood", str(ood),
                 *root, "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["record"]["ref"] == "cli-router@1" and len(built["candidates"]) >= 2
    assert all("ood_fallback" in row and "routed_accuracy" in row for row in built["candidates"])
    files = {name: routing_registry.get(name).manifest["recipe"]["data"]["validation"]["path"]
             for name in ("finance", "medical", "legal")}
    out = tmp_path / "eval"
    assert main(["router", "evaluate", "cli-router", "--data", *(f"{n}={p}" for n, p in files.items()),
                 "--ood", str(ood), "--out", str(out), "--repeats", "1", *root, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    counts = report["confusion"]["counts"]
    assert sum(sum(row.values()) for row in counts.values()) == report["texts"] == 27
    assert report["routing_accuracy"] == round(sum(counts[n][n] for n in counts) / 27, 4)
    assert set(report["end_to_end"]) == {"finance", "medical", "legal"} and report["ood_texts"] == 2
    assert report["timing"]["repeats"] == 1 and (out / "confusion.png").stat().st_size > 0
    assert json.loads((out / "router-eval.json").read_text())["router"] == "cli-router@1"
    assert main(["router", "evaluate", "cli-router", "--data", "nope", *root]) == 2
    assert "NAME=FILE" in capsys.readouterr().err
