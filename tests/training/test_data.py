"""Reading rows, field mapping, the four formats and their completion-only masks, splits."""

from __future__ import annotations

import csv
import json

import pytest

from adapterhub.training.data import IGNORE, encode, encode_split, load_dataset, map_fields, read_rows
from adapterhub.errors import DataError
from adapterhub.prompts import TaskSpec, answer_ids, prompt_ids, render_prompt
from adapterhub.training import load_recipe
from adapterhub.training.recipe import Source
from tests.helpers.recipes import LABELS, classification_rows, tiny_recipe, write_jsonl

ROWS = classification_rows(4)
TASK = TaskSpec(type="classification", labels=tuple(LABELS), prompt_template="Sentiment?\n{text}")


# --- reading ----------------------------------------------------------------------------------------------------
def _write(path, rows):
    if path.suffix == ".jsonl":
        write_jsonl(path, rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_type_gives_the_same_rows(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    _write(path, ROWS)
    assert read_rows(Source(path=path.name), root=tmp_path) == ROWS


def test_datasets_source(tmp_path):
    write_jsonl(tmp_path / "set" / "train.jsonl", ROWS)
    assert read_rows(Source(dataset=str(tmp_path / "set"), split="train[:2]")) == ROWS[:2]
    with pytest.raises(DataError, match="could not load dataset"):
        read_rows(Source(dataset=str(tmp_path / "set"), split="nonexistent"))


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "does not exist; fix the path"),
    ("empty.jsonl", "\n\n", "has no rows"),
    ("broken.jsonl", '{"text": "a", "label": "positive"}\n{"text": \n', "line 2 of .* is not JSON"),
    ("rows.txt", "hello", "unknown data file type '.txt'"),
    ("scalars.json", "[1, 2]", "row 1 of .* is not an object"),
    ("object.json", '{"rows": []}', "must hold a JSON list"),
])
def test_bad_files(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        read_rows(Source(path=str(tmp_path / name)))


# --- field mapping ----------------------------------------------------------------------------------------------
def test_field_mapping_renames_columns():
    rows = [{"sentence": "Up.", "sentiment": "positive", "id": 3}]
    mapped = map_fields(rows, fmt="classification", fields={"text": "sentence", "label": "sentiment"}, origin="x")
    assert mapped == [{"text": "Up.", "label": "positive"}]


@pytest.mark.parametrize("rows, fields, message", [
    ([{"text": "a", "label": "positive"}, {"text": "b"}], {}, r"field 'label' is required .* row 2"),
    ([{"sentence": "a", "label": "positive"}], {"text": "headline"}, r"maps 'text' to column 'headline'.*'sentence'"),
])
def test_missing_fields_name_the_fix(rows, fields, message):
    with pytest.raises(DataError, match=message):
        map_fields(rows, fmt="classification", fields=fields, origin="rows.jsonl")


# --- masks: the masked positions are exactly the prompt -------------------------------------------------------
def test_classification_mask_is_exactly_the_prompt(tiny_base):
    tokenizer = tiny_base.tokenizer
    ids, labels = encode({"text": "Profits doubled.", "label": "positive"}, fmt="classification",
                         tokenizer=tokenizer, task=TASK)
    prompt = prompt_ids(tokenizer, render_prompt(tokenizer, TASK, "Profits doubled."))
    answer = answer_ids(tokenizer, "positive")
    assert ids == prompt + answer
    assert labels == [IGNORE] * len(prompt) + answer


@pytest.mark.parametrize("row, prompt_text, answer_text", [
    ({"instruction": "Name the capital.", "input": "France", "output": "Paris"}, "Name the capital.\n\nFrance", "Paris"),
    ({"instruction": "Say hi.", "output": "hi"}, "Say hi.", "hi"),
])
def test_instruction_mask(tiny_base, row, prompt_text, answer_text):
    tokenizer, task = tiny_base.tokenizer, TaskSpec()
    ids, labels = encode(row, fmt="instruction", tokenizer=tokenizer, task=task)
    prompt = prompt_ids(tokenizer, render_prompt(tokenizer, task, prompt_text))
    assert labels[:len(prompt)] == [IGNORE] * len(prompt) and ids[:len(prompt)] == prompt
    assert labels[len(prompt):] == answer_ids(tokenizer, answer_text)


def test_completion_masks(tiny_base):
    tokenizer, task = tiny_base.tokenizer, TaskSpec(chat=False)
    ids, labels = encode({"prompt": "Q: capital of France? A:", "completion": " Paris"}, fmt="completion",
                         tokenizer=tokenizer, task=task)
    prompt = prompt_ids(tokenizer, "Q: capital of France? A:")
    assert labels == [IGNORE] * len(prompt) + answer_ids(tokenizer, " Paris")
    ids, labels = encode({"text": "Whole text is learned."}, fmt="completion", tokenizer=tokenizer, task=task)
    assert labels == ids == answer_ids(tokenizer, "Whole text is learned.")


def test_chat_supervises_every_assistant_turn_and_nothing_else(tiny_base):
    tokenizer = tiny_base.tokenizer
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]
    ids, labels = encode({"messages": messages}, fmt="chat", tokenizer=tokenizer,
                         task=TaskSpec(system_prompt="Be brief."))
    full = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, *messages], tokenize=False)
    assert tokenizer.decode(ids) == full
    supervised = tokenizer.decode([token for token, label in zip(ids, labels) if label != IGNORE])
    assert supervised == "Hello<|im_end|>\nParis<|im_end|>\n"


@pytest.mark.parametrize("messages, message", [
    ([{"role": "assistant", "content": "Hi"}], "must not start with an assistant"),
    ([{"role": "user", "content": "Hi"}], "no assistant message"),
    ("hello", "must be a list of"),
])
def test_bad_conversations(tiny_base, messages, message):
    with pytest.raises(DataError, match=message):
        encode({"messages": messages}, fmt="chat", tokenizer=tiny_base.tokenizer, task=TaskSpec())


def test_labels_outside_the_recipe_are_errors(tiny_base):
    rows = [*ROWS, {"text": "Flat.", "label": "neutral"}]
    with pytest.raises(DataError, match=r"label\(s\) \['neutral'\] \(first in row 5\) that are not in data.labels"):
        encode_split(rows, fmt="classification", tokenizer=tiny_base.tokenizer, task=TASK, max_length=256, origin="x")


def test_max_length_shorter_than_the_prompt_is_an_error(tiny_base):
    with pytest.raises(DataError, match=r"data.max_length=8 is shorter than the prompt and label of 4 row\(s\)"):
        encode_split(ROWS, fmt="classification", tokenizer=tiny_base.tokenizer, task=TASK, max_length=8, origin="x")


def test_long_answers_are_cut_to_max_length(tiny_base):
    tokenizer = tiny_base.tokenizer
    row = {"prompt": "Q:", "completion": " word" * 40}
    [example] = encode_split([row], fmt="completion", tokenizer=tokenizer, task=TaskSpec(chat=False),
                             max_length=12, origin="x")
    assert len(example) == 12 and example.labels[0] == IGNORE and example.labels[-1] != IGNORE


# --- splits -----------------------------------------------------------------------------------------------------
def test_load_dataset_holds_out_validation_deterministically(tmp_path, tiny_llama_dir, tiny_base):
    raw = tiny_recipe(tmp_path, tiny_llama_dir, train_rows=20, validation_rows=0,
                      data={"validation_split": 0.25, "test": str(tmp_path / "train.jsonl")})
    first = load_dataset(load_recipe(raw), tiny_base.tokenizer)
    second = load_dataset(load_recipe(raw), tiny_base.tokenizer)
    assert len(first.train.rows) == 15 and len(first.validation.rows) == 5 and len(first.test.rows) == 20
    assert first.validation.rows == second.validation.rows
    texts = lambda split: {row["text"] for row in split.rows}  # noqa: E731
    assert not texts(first.train) & texts(first.validation)
