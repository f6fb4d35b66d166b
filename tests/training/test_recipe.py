"""Recipe schema: defaults, overrides, the starter template, and one clear error per bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from adapterhub import methods
from adapterhub.errors import RecipeError
from adapterhub.training.recipe import Recipe
from adapterhub.training.recipe_files import load_recipe, starter_yaml

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "demo", "data": {"train": "rows.jsonl", "labels": ["yes", "no"]}}


def with_(path: str, value):
    """MINIMAL with one dotted key set."""
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


BAD_RECIPES = [
    (with_("trainig", {}), r"unknown key 'trainig' \(did you mean 'training'\?\)"),
    (with_("training.learning_rate", 1e-4), r"unknown key 'training.learning_rate'; known keys: epochs"),
    (with_("data.train", {"path": "a", "colour": 1}), r"unknown key 'data.train.colour'"),
    (with_("training.lr", "fast"), r"training.lr: Input should be a valid number.*'fast'"),
    (with_("adapter.r", 0), r"adapter.r: Input should be greater than or equal to 1"),
    (with_("training.epochs", [1]), r"training.epochs: Input should be a valid number"),
    (with_("base.quantize", "nf8"), r"base.quantize: use none \(full precision\), nf4, fp4 or int8"),
    (with_("adapter.method", "vera"), "adapter.method: unknown method 'vera'; use one of " + ", ".join(methods.names())),
    ({"data": {"train": "x.jsonl", "labels": ["a", "b"]}}, r"name: required key is missing"),
    ({"name": "demo"}, r"data: required key is missing"),
    (with_("name", "Bad Name"), r"name: String should match pattern"),
    (with_("data.train", {"path": "a.jsonl", "dataset": "org/set"}), r"exactly one of 'path'.*or 'dataset'"),
    (with_("data.train", 7), r"data.train: Input should be a valid dictionary"),
    (with_("data.labels", None), r"data.labels is required for format 'classification'"),
    (with_("data.labels", ["yes", "yes"]), r"labels must be unique"),
    (with_("data.labels", ["only"]), r"at least two labels"),
    (with_("data.prompt_template", "Classify this."), r"prompt_template .* must contain '\{text\}'"),
    (with_("data.fields", {"sentence": "text"}), r"data.fields: 'sentence' is no field of format 'classification'"),
    (with_("data.format", "completion"), r"data.labels only applies to format 'classification'"),
    (with_("adapter.method", "prefix") | {"base": {"quantize": "nf4"}}, r"'prefix' cannot train on a quantized base"),
    (with_("adapter.method", "prefix") | {"data": {**MINIMAL["data"], "packing": True}},
     r"data.packing does not work with prefix tuning"),
    (with_("adapter.prefix_init_text", "Clause types."),  # LoRA's options have no such key: listed are LoRA's
     r"unknown key 'adapter.prefix_init_text'; known keys: method, r, alpha, dropout, target_modules, last_layers"),
    (with_("adapter.method", "prefix") | {"training": {"gradient_checkpointing": True}},
     r"gradient_checkpointing does not work with prefix tuning"),
    (with_("training.early_stopping", {"patience": 2}), r"early_stopping needs validation rows"),
    (with_("training.early_stopping", {"metric": "accuracy"}) | {"data": {"train": "a.jsonl", "format": "completion"}},
     r"metric 'accuracy' needs data.format 'classification'"),
]


@pytest.mark.parametrize("raw, message", BAD_RECIPES, ids=[m[:40] for _, m in BAD_RECIPES])
def test_every_bad_recipe_is_one_clear_error(raw, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(raw)


def test_error_lists_every_problem_at_once():
    raw = with_("training.lr", "fast") | {"adapterr": {}}
    with pytest.raises(RecipeError) as caught:
        load_recipe(raw)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid recipe <dict>:" and len(lines) == 3


def test_settings_that_contradict_each_other_are_all_reported():
    raw = with_("adapter.method", "prefix") | {
        "base": {"quantize": "nf4"}, "data": {**MINIMAL["data"], "packing": True, "prompt_template": "No slot."},
        "training": {"gradient_checkpointing": True, "early_stopping": {"patience": 2}}}
    with pytest.raises(RecipeError) as caught:
        load_recipe(raw)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid recipe <dict>:" and all(line.startswith("  ") for line in lines[1:])
    for fragment in ("prompt_template", "quantized base", "gradient_checkpointing", "data.packing",
                     "early_stopping needs validation rows"):
        assert sum(fragment in line for line in lines[1:]) == 1, (fragment, lines)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist; create one with `adapterhub recipe new"),
    ("name: [unclosed", "is not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
])
def test_bad_recipe_files(tmp_path, content, message):
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(path)


def test_defaults_and_relative_paths(tmp_path):
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(MINIMAL))
    recipe = load_recipe(tmp_path / "recipe.yaml")
    assert recipe.adapter.method == "lora" and recipe.base.quantize is None and recipe.training.epochs == 1
    assert recipe.adapter_domain == "demo"
    assert recipe.resolve_path("rows.jsonl") == tmp_path / "rows.jsonl"
    resolved = recipe.to_dict()
    assert resolved["data"]["train"]["path"] == str(tmp_path / "rows.jsonl")
    again = load_recipe(resolved)  # the resolved form is itself a valid recipe, from any folder
    assert again.resolve_path(again.data.train.path) == tmp_path / "rows.jsonl"


@pytest.mark.parametrize("override, path, expected", [
    ("training.lr=1e-4", ("training", "lr"), 1e-4),
    ("adapter.r=4", ("adapter", "r"), 4),
    ("data.packing=true", ("data", "packing"), True),
    ("tags=[a, b]", ("tags",), ["a", "b"]),
    ("base.quantize=null", ("base", "quantize"), None),
        ("base.quantize=none", ("base", "quantize"), None),
    ("data.train.split=train[:50%]", ("data", "train", "split"), "train[:50%]"),
    ("training.early_stopping.min_delta=0.01", ("training", "early_stopping", "min_delta"), 0.01),
])
def test_overrides(override, path, expected):
    recipe = load_recipe(MINIMAL, overrides=[override])
    value = recipe
    for part in path:
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize("override, message", [
    ("training.lr", "write section.key=value"),
    ("=3", "write section.key=value"),
    ("name.first=x", "name is not a section"),
    ("training.lrr=1", "unknown key 'training.lrr'"),
])
def test_bad_overrides(override, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(MINIMAL, overrides=[override])


def test_null_quantize_and_task_spec():
    recipe = load_recipe(with_("base.quantize", None) | {"data": {**MINIMAL["data"], "chat": False}})
    assert recipe.base.quantize is None
    assert recipe.task.labels == ("yes", "no") and recipe.task.chat is False
    completion = load_recipe({"name": "c", "data": {"train": "x.jsonl", "format": "completion"}})
    assert completion.task.type == "generation" and completion.task.chat is False


@pytest.mark.parametrize("method", [None, *methods.names()])
def test_starter_documents_every_key_and_loads(method):
    text = starter_yaml(method)
    documented = {line.split(":")[0].strip() for line in text.splitlines() if ":" in line and not line.startswith("#")}
    chosen = methods.get(method or methods.default()).options
    for section in ("base", "adapter", "data", "training", "output"):
        model = chosen if section == "adapter" else Recipe.model_fields[section].annotation
        assert set(model.model_fields) <= documented, section
    others = {key for name in methods.names() for key in methods.get(name).options.model_fields} - set(chosen.model_fields)
    assert not others & documented, "the starter lists only the chosen method's options"
    assert all("  # " in line for line in text.splitlines() if line and not line.startswith("#"))
    recipe = load_recipe(yaml.safe_load(text))
    assert recipe == load_recipe({"name": "my-adapter", "domain": "my-domain", "adapter": {"method": method or "lora"},
                                  "data": {"train": "data/my-domain/train.jsonl",
                                           "validation": "data/my-domain/validation.jsonl",
                                           "labels": ["yes", "no"]}})


def test_wrong_values_and_contradictions_are_reported_together():
    """A field error (lr) does not hide a cross-field conflict (prefix on a 4-bit base): one error, both named."""
    raw = with_("adapter.method", "prefix") | {"base": {"quantize": "nf4"}, "training": {"lr": -1}}
    with pytest.raises(RecipeError) as caught:
        load_recipe(raw)
    message = str(caught.value)
    assert "training.lr: Input should be greater than 0" in message
    assert "'prefix' cannot train on a quantized base" in message
    with pytest.raises(RecipeError) as caught:  # a wrong key of the chosen method, beside a data conflict
        load_recipe(with_("adapter.method", "prefix") | {"adapter": {"method": "prefix", "num_virtual_tokens": 0},
                                                         "data": {**MINIMAL["data"], "packing": True}})
    assert "adapter.num_virtual_tokens: Input should be greater than or equal to 1" in str(caught.value)
    assert "data.packing does not work with prefix tuning" in str(caught.value)


SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))


def test_the_four_domain_recipes_ship():
    assert {p.stem for p in SHIPPED} >= {"finance", "medical", "legal", "finance-qlora"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipe_is_valid(path, tiny_base):
    """Every shipped YAML validates, opens with its exact command, and its data encodes (tiny tokenizer)."""
    from adapterhub.base.tiny import make_tiny_wordpiece_tokenizer
    from adapterhub.training.data import load_dataset

    first_lines = path.read_text().splitlines()[:3]
    assert any(f"adapterhub train recipes/{path.name}" in line for line in first_lines)
    recipe = load_recipe(path)
    encoder = recipe.task.is_encoder_task  # encoder recipes: the embedded encoder, a BERT-style tokenizer
    assert recipe.base.model == ("minilm-l6" if encoder else "smollm2-135m-instruct") and recipe.data.test is not None
    tokenizer = make_tiny_wordpiece_tokenizer() if encoder else tiny_base.tokenizer
    dataset = load_dataset(load_recipe(path, overrides=["data.max_length=4096"]), tokenizer)
    assert len(dataset.train.rows) >= 240 and len(dataset.validation.rows) >= 60
    if recipe.task.type == "token_classification":
        assert len(dataset.train.rows) >= 300
        assert {e["label"] for row in dataset.test.rows for e in row["entities"]} == set(recipe.data.labels)
    elif recipe.task.type == "generation":  # free-form answers: every split has its targets
        assert all(row["output"] for row in dataset.test.rows)
    else:
        assert {row["label"] for row in dataset.test.rows} == set(recipe.data.labels)


# --- issue 13: registry rules at check time, bounded YAML --------------------------------------
@pytest.mark.parametrize("raw, message", [
    (with_("name", "a..b"), r"name: invalid adapter name 'a\.\.b'"),
    (with_("name", "x" * 101), r"name: invalid adapter name"),
    (with_("domain", "legal/contracts"), r"domain: invalid domain 'legal/contracts'"),
    (with_("domain", "fin..ance"), r"domain: invalid domain"),
    (with_("tags", ["prod", "7"]), r"tags: invalid tag '7'"),
    (with_("tags", ["latest"]), r"tags: invalid tag 'latest'"),
    (with_("tags", ["with space"]), r"tags: invalid tag 'with space'"),
    (with_("output.tags", ["a/b"]), r"output.tags: invalid tag 'a/b'"),
])
def test_names_domains_and_tags_obey_the_registry_rules_at_check_time(raw, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(raw)


def _alias_bomb(levels: int, width: int = 9) -> str:
    value = "&a0 [" + ",".join(["x"] * 10) + "]"
    for level in range(1, levels):
        value = f"&a{level} [{value}," + ",".join([f"*a{level - 1}"] * (width - 1)) + "]"
    return value


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tags", [_alias_bomb(6), _alias_bomb(10), "[" * 5000 + "]" * 5000])
def test_alias_bombs_and_deep_nesting_are_refused_quickly_without_echoing(tmp_path, tags):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"name: bomb\ndata: {{train: t.jsonl, labels: [a, b]}}\ntags: {tags}\n")
    with pytest.raises(RecipeError, match="refused|nests") as caught:
        load_recipe(path)
    assert len(str(caught.value)) < 400
    with pytest.raises(RecipeError) as caught:
        load_recipe(MINIMAL, overrides=[f"tags={tags}"])
    assert len(str(caught.value)) < 400


def test_huge_recipe_files_and_values_are_refused_without_echoing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: big\ndata: {train: t.jsonl, labels: [a, b]}\ndescription: " + "x" * 2_000_000 + "\n")
    with pytest.raises(RecipeError, match="bytes, more than") as caught:
        load_recipe(path)
    assert len(str(caught.value)) < 400
    with pytest.raises(RecipeError) as caught:
        load_recipe(with_("training.lr", "fast" * 100_000))
    assert len(str(caught.value)) < 400


def test_setting_another_method_drops_the_files_options_of_the_old_one():
    """``--set adapter.method=ia3`` on a LoRA recipe trains IA³ with its defaults; a key set for it stays."""
    raw = with_("adapter", {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["q_proj"]})
    recipe = load_recipe(raw, overrides=["adapter.method=ia3"])
    assert recipe.adapter.model_dump() == {"method": "ia3", "target_modules": ["q_proj"], "feedforward_modules": None}
    with pytest.raises(RecipeError, match="unknown key 'adapter.r'; known keys: method, target_modules"):
        load_recipe(raw, overrides=["adapter.method=ia3", "adapter.r=4"])  # what the command line says, it means
