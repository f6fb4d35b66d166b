"""Small recipes and data files for the tiny model, shared by the recipe/data/train/evaluate tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = ["positive", "negative"]
_TEXTS = {
    "positive": ["Revenue rose and margins widened.", "The company raised guidance.", "Profits doubled this quarter."],
    "negative": ["The bank cut jobs after a loss.", "Guidance was cut again.", "Margins narrowed sharply."],
}


def classification_rows(count: int) -> list[dict[str, str]]:
    """``count`` rows alternating between the two labels."""
    rows = []
    for index in range(count):
        label = LABELS[index % 2]
        texts = _TEXTS[label]
        rows.append({"text": f"{texts[index % len(texts)]} Item {index}.", "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_recipe(folder: Path, model_dir: Path, *, train_rows: int = 16, validation_rows: int = 6,
                **sections: dict[str, Any]) -> dict[str, Any]:
    """A classification recipe dict on the tiny model with data files in ``folder``; ``sections`` merge in."""
    write_jsonl(folder / "train.jsonl", classification_rows(train_rows))
    if validation_rows:
        write_jsonl(folder / "validation.jsonl", classification_rows(validation_rows))
    recipe: dict[str, Any] = {
        "name": "tiny",
        "base": {"model": str(model_dir), "device": "cpu"},
        "adapter": {"method": "lora", "r": 4, "alpha": 8},
        "data": {"train": str(folder / "train.jsonl"), "labels": list(LABELS), "max_length": 256,
                 **({"validation": str(folder / "validation.jsonl")} if validation_rows else {})},
        "training": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "eval_batch_size": 16},
        # the tiny random model learns nothing in a few steps: register it anyway (tests/training/test_baseline.py
        # checks that a near-chance adapter is refused without this)
        "output": {"registry": str(folder / "registry"), "run_dir": str(folder / "run"), "register_anyway": True},
    }
    for section, values in sections.items():
        if section == "adapter" and values.get("method", "lora") != "lora":
            recipe[section] = dict(values)  # another method: its own options only
        elif isinstance(values, dict):
            recipe[section] = {**recipe.get(section, {}), **values}
        else:
            recipe[section] = values
    return recipe
