"""Training data: rows from files or ``datasets``, rendered to tokens with completion-only labels, then batched.

Rows come from a local ``.jsonl``/``.json``/``.csv``/``.parquet`` file or a
``datasets`` id. Each row is encoded for one of four formats (``data.fields``
renames the canonical fields to your column names):

=============== ================================== ======================================
format          fields                             supervised (loss) tokens
=============== ================================== ======================================
classification  ``text``, ``label``                the label and the end token
instruction     ``instruction``, ``input``?,       the output and the end token (an object
                ``output``                         or list is written as JSON)
chat            ``messages`` (role/content list)   every assistant turn
completion      ``prompt``?, ``completion``        the completion (or all of ``text``)
                — or ``text``
=============== ================================== ======================================

Prompts go through :mod:`adapterhub.prompts`, so training sees exactly what
the runtime's ``predict`` and ``generate`` send. An :class:`Example` keeps
``labels`` = the token id where the loss applies and :data:`IGNORE` elsewhere
(the prompt); :mod:`adapterhub.training.batching` lays examples out for the trainer.

>>> from adapterhub.prompts import TaskSpec
>>> map_fields([{"headline": "Shares fell.", "label": "negative"}], fmt="classification",
...            fields={"text": "headline"}, origin="rows.jsonl")
[{'text': 'Shares fell.', 'label': 'negative'}]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..prompts import TaskSpec, answer_ids, prompt_ids, render_prompt
from .examples import IGNORE, Dataset, Example, Split

if TYPE_CHECKING:
    from .recipe import Recipe, Source


# --- reading rows -----------------------------------------------------------------------------------------------
def read_rows(source: Source, *, root: Path | None = None) -> list[dict[str, Any]]:
    """All rows of a source as dicts (file rows in order).

    Raises:
        DataError: the file is missing, empty, unreadable, or of an unknown type.

    >>> read_rows(Source(path="missing.jsonl"))  # doctest: +SKIP
    Traceback (most recent call last):
    DataError: data file .../missing.jsonl does not exist ...
    """
    if source.dataset is not None:
        rows, origin = _read_dataset(source), source.describe()
    else:
        path = Path(source.path).expanduser()
        path = path if path.is_absolute() or root is None else (root / path).resolve()
        rows, origin = _read_file(path), str(path)
    if not rows:
        raise DataError(f"data source {origin} has no rows; add examples or point data at another file")
    bad = next((i for i, row in enumerate(rows, 1) if not isinstance(row, dict)), None)
    if bad is not None:
        raise DataError(f"row {bad} of {origin} is not an object with named fields: {str(rows[bad - 1])[:80]!r}")
    return rows


def _read_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; fix the path in the recipe "
                        "(relative paths are resolved against the recipe's folder)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise DataError(f"line {number} of {path} is not JSON ({error.msg}); "
                                        "each line of a .jsonl file must be one JSON object") from None
            return rows
        if suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rows, list):
                raise DataError(f"{path} must hold a JSON list of row objects")
            return rows
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as parquet
            except ImportError:
                raise DataError(f"reading {path} needs pyarrow: pip install 'adapterhub[data]'") from None
            return parquet.read_table(path).to_pylist()
    except RecursionError:
        raise DataError(f"{path} nests JSON values too deeply to read; rows are flat objects of fields") from None
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError) as error:
        raise DataError(f"could not read {path}: {error}") from None
    raise DataError(f"unknown data file type {path.suffix!r} for {path}; use .jsonl, .json, .csv, .tsv or .parquet")


def _read_dataset(source: Source) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"data source {source.dataset!r} needs the datasets package: "
                        "pip install 'adapterhub[data]'") from None
    try:
        loaded = datasets.load_dataset(source.dataset, name=source.config, split=source.split,
                                       revision=source.revision)
    except Exception as error:  # datasets raises many unrelated types for a bad id/split
        raise DataError(f"could not load dataset {source.describe()}: {type(error).__name__}: {error}") from None
    return list(loaded)


def map_fields(rows: list[dict[str, Any]], *, fmt: str, fields: dict[str, str], origin: str) -> list[dict[str, Any]]:
    """Rename columns to the canonical fields of ``fmt``; every needed field must be present in every row.

    >>> map_fields([{"sentence": "Up 5%.", "label": "positive"}], fmt="classification",
    ...            fields={"text": "sentence"}, origin="rows.jsonl")
    [{'text': 'Up 5%.', 'label': 'positive'}]
    """
    from .recipe import FORMAT_FIELDS

    canonical = FORMAT_FIELDS[fmt]
    column = {name: fields.get(name, name) for name in canonical}
    if fmt == "completion":
        required = ("completion",) if column["completion"] in rows[0] or "completion" in fields else ("text",)
    elif fmt == "token_classification":
        required = ("tokens", "tags") if column["tokens"] in rows[0] or "tokens" in fields else ("text", "entities")
    else:
        required = {"classification": ("text", "label"), "instruction": ("instruction", "output"),
                    "chat": ("messages",), "sequence_classification": ("text", "label")}[fmt]
    mapped = []
    for number, row in enumerate(rows, 1):
        for name in required:
            if row.get(column[name]) is None:
                how = (f"data.fields maps {name!r} to column {column[name]!r}, which" if name in fields
                       else f"field {name!r} is required by format {fmt!r} but")
                others = sum(1 for other in rows if other.get(column[name]) is not None)
                fix = (f"the other {others} row(s) have it: add it to row {number} or remove that row" if others
                       else f"rename it with data.fields: {{{name}: <your column>}}")
                raise DataError(f"{how} is missing from row {number} of {origin} (columns: {sorted(row)}); {fix}")
        mapped.append({name: row[column[name]] for name in canonical if row.get(column[name]) is not None})
    if fmt == "token_classification":
        from .encoder_data import canonical_token_rows

        return canonical_token_rows(mapped, origin=origin)
    return mapped


# --- encoding ---------------------------------------------------------------------------------------------------
def encode(row: dict[str, Any], *, fmt: str, tokenizer: Any, task: TaskSpec) -> tuple[list[int], list[int]]:
    """Token ids and labels of one canonical row (labels are :data:`IGNORE` on the prompt).

    Args:
        row: a row with the canonical fields of ``fmt`` (see :func:`map_fields`).
        fmt: ``"classification"``, ``"instruction"``, ``"chat"`` or ``"completion"``.
        tokenizer: the base tokenizer.
        task: the recipe's task (prompt template, system prompt, chat wrapping).

    Returns:
        ``(input_ids, labels)`` of equal length.

    Raises:
        DataError: a malformed conversation (``chat``).

    >>> ids, labels = encode({"text": "Up 5%.", "label": "positive"}, fmt="classification",
    ...                      tokenizer=tokenizer, task=task)  # doctest: +SKIP
    >>> labels[-2:] == answer_ids(tokenizer, "positive")  # doctest: +SKIP
    True
    """
    pieces: list[tuple[list[int], bool]]
    if fmt == "classification":
        pieces = [(prompt_ids(tokenizer, render_prompt(tokenizer, task, str(row["text"]))), False),
                  (answer_ids(tokenizer, str(row["label"])), True)]
    elif fmt == "instruction":
        pieces = [(prompt_ids(tokenizer, render_prompt(tokenizer, task, instruction_text(row))), False),
                  (answer_ids(tokenizer, output_text(row["output"])), True)]
    elif fmt == "completion":
        if "completion" in row:
            prompt = render_prompt(tokenizer, task, str(row["prompt"])) if row.get("prompt") else ""
            pieces = [(prompt_ids(tokenizer, prompt) if prompt else [], False),
                      (answer_ids(tokenizer, str(row["completion"])), True)]
        else:
            pieces = [(answer_ids(tokenizer, str(row["text"])), True)]
    else:
        pieces = _chat_pieces(row["messages"], tokenizer=tokenizer, task=task)
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, supervised in pieces:
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE] * len(ids))
    return input_ids, labels


def instruction_text(row: dict[str, Any]) -> str:
    """The text an instruction row's prompt is rendered from: its instruction, then its input if any."""
    return str(row["instruction"]) + (f"\n\n{row['input']}" if row.get("input") else "")


def output_text(output: Any) -> str:
    """An instruction row's answer as the model learns to write it: text as is, a JSON object or list as JSON.

    >>> output_text({"subject": "physics", "level": "primary"})
    '{"subject": "physics", "level": "primary"}'
    """
    return json.dumps(output, ensure_ascii=False) if isinstance(output, (dict, list)) else str(output)


def _chat_pieces(messages: Any, *, tokenizer: Any, task: TaskSpec) -> list[tuple[list[int], bool]]:
    """Render a conversation turn by turn; assistant contents (with their end tokens) are supervised."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("format 'chat' needs a base tokenizer with a chat template; use format 'completion' instead")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in messages):
        raise DataError(f"'messages' must be a list of {{role, content}} objects, got {str(messages)[:80]!r}")
    if task.system_prompt and messages and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": task.system_prompt}, *messages]
    render = lambda upto, prompt: tokenizer.apply_chat_template(  # noqa: E731
        messages[:upto], tokenize=False, add_generation_prompt=prompt)
    pieces, done = [], ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if index == 0:
            raise DataError("a conversation must not start with an assistant message")
        head, full = render(index, True), render(index + 1, False)
        if not (head.startswith(done) and full.startswith(head)):
            raise DataError("the base's chat template does not render conversations incrementally; "
                            "use format 'instruction' or 'completion'")
        pieces += [(prompt_ids(tokenizer, head[len(done):]), False), (prompt_ids(tokenizer, full[len(head):]), True)]
        done = full
    if not pieces:
        raise DataError("a conversation has no assistant message to learn from")
    return pieces


def encode_split(rows: list[dict[str, Any]], *, fmt: str, tokenizer: Any, task: TaskSpec,
                 max_length: int, origin: str) -> list[Example]:
    """Encode canonical rows; answers longer than ``max_length`` are cut, prompts that long are errors.

    Raises:
        DataError: a label is not in ``task.labels``; a prompt (or, for classification, a
            prompt plus its label) does not fit ``max_length``.
    """
    if task.is_encoder_task:
        from .encoder_data import encode_rows

        return encode_rows(rows, tokenizer=tokenizer, task=task, max_length=max_length, origin=origin)
    if task.is_classification:
        check_labels(rows, task.labels, origin=origin)
    examples, too_long = [], []
    for number, row in enumerate(rows, 1):
        input_ids, labels = encode(row, fmt=fmt, tokenizer=tokenizer, task=task)
        first_supervised = next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))
        needed = len(input_ids) if task.is_classification else first_supervised + 1
        if needed > max_length:
            too_long.append((needed, number))
        examples.append(Example(tuple(input_ids[:max_length]), tuple(labels[:max_length])))
    if too_long:
        needed, number = max(too_long)
        what = "prompt and label" if task.is_classification else "prompt"
        raise DataError(f"data.max_length={max_length} is shorter than the {what} of {len(too_long)} row(s) of "
                        f"{origin} (longest: {needed} tokens, row {number}); raise data.max_length to at least "
                        f"{needed} or shorten the prompt_template")
    return examples


def load_dataset(recipe: Recipe, tokenizer: Any) -> Dataset:
    """Read, map and encode every split the recipe names.

    Returns:
        A :class:`Dataset`; without ``data.validation`` a ``data.validation_split`` fraction of the
        training rows (chosen with the recipe seed) becomes the validation split.

    Raises:
        DataError: any problem with the rows (see :func:`read_rows`, :func:`map_fields`, :func:`encode_split`).

    >>> dataset = load_dataset(load_recipe("recipes/finance.yaml"), base.tokenizer)  # doctest: +SKIP
    >>> len(dataset.train.examples), dataset.task.labels  # doctest: +SKIP
    (252, ('positive', 'negative', 'neutral'))
    """
    data, task = recipe.data, recipe.task

    def read(source: Source) -> tuple[list[dict[str, Any]], str]:
        origin = str(recipe.resolve_path(source.path)) if source.path else source.describe()
        rows = read_rows(source, root=recipe.root)
        return map_fields(rows, fmt=data.format, fields=data.fields, origin=origin), origin

    def split(rows: list[dict[str, Any]], origin: str) -> Split:
        examples = encode_split(rows, fmt=data.format, tokenizer=tokenizer, task=task,
                                max_length=data.max_length, origin=origin)
        return Split(origin, rows, examples)

    train_rows, train_origin = read(data.train)
    held_out: list[dict[str, Any]] = []
    if data.validation is None and data.validation_split > 0:
        train_rows, held_out = _hold_out(train_rows, data.validation_split, seed=recipe.training.seed)
    train = split(train_rows, train_origin)
    validation = None
    if data.validation is not None:
        validation = split(*read(data.validation))
    elif held_out:
        validation = split(held_out, f"{train_origin} (held-out {data.validation_split:.0%})")
    test = split(*read(data.test)) if data.test is not None else None
    return Dataset(task, train, validation, test)


def _hold_out(rows: list[dict[str, Any]], fraction: float, *, seed: int) -> tuple[list, list]:
    import torch

    count = max(1, round(len(rows) * fraction))
    if count >= len(rows):
        raise DataError(f"data.validation_split={fraction} leaves no training rows out of {len(rows)}")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    keep = sorted(order[count:])
    return [rows[i] for i in keep], [rows[i] for i in sorted(order[:count])]


def check_labels(rows: list[dict[str, Any]], labels: tuple[str, ...], *, origin: str) -> None:
    """Every row's label must be one of ``labels``; the first offender is named."""
    unknown = sorted({str(row["label"]) for row in rows} - set(labels))
    if unknown:
        first = next(i for i, row in enumerate(rows, 1) if str(row["label"]) in unknown)
        raise DataError(f"{origin} has label(s) {unknown} (first in row {first}) that are not in data.labels "
                        f"{list(labels)}; add them to data.labels or fix the rows")
