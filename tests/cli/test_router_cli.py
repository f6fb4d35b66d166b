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


def test_router_route_and_predict_with_domain_auto(routing_registry, routing_router, tiny_llama_dir, capsys):
    from adapterhub import AdapterHub, load_base
    from tests.helpers.routing import mixed_texts

    texts, truth = mixed_texts(seed=1100)
    with AdapterHub(load_base(str(tiny_llama_dir), device="cpu"), registry=routing_registry) as hub:
        expected = [d.label for d in hub.route(texts, router="domains")]
        labels = hub.predict(texts, domains=expected)
    hub_options = ["--registry", str(routing_registry.root), "--base", str(tiny_llama_dir), "--threads", "1"]
    assert main(["router", "route", "domains", *texts, *hub_options, "--json"]) == 0
    routed = json.loads(capsys.readouterr().out)
    assert [row["served_by"] for row in routed] == expected and [row["adapter"] for row in routed] == truth
    assert main(["router", "route", "domains", texts[0], "--among", "legal,medical", *hub_options, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["adapter"] in {"legal", "medical"}
    assert main(["predict", *texts, "--domain", "auto", "--router", "domains", *hub_options, "--device", "cpu",
                 "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert [row["label"] for row in predicted] == labels and [row["domain"] for row in predicted] == expected
    assert main(["predict", texts[0], "--domain", "auto", *hub_options, "--device", "cpu"]) == 2
    assert "--router NAME" in capsys.readouterr().err
