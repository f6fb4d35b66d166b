"""Training data: rows from files or ``datasets``, rendered to tokens with completion-only labels, then batched.

Rows come from a local ``.jsonl``/``.json``/``.csv``/``.parquet`` file or a
``datasets`` id. Each row is encoded for one of four formats (``data.fields``
renames the canonical fields to your column names):

=============== ================================== ======================================
format          fields                             supervised (loss) tokens
=============== ================================== ======================================
classification  ``text``, ``label``                the label and the end token
instruction     ``instruction``, ``input``?,       the output and the end token
                ``output``
chat            ``messages`` (role/content list)   every assistant turn
completion      ``prompt``?, ``completion``        the completion (or all of ``text``)
                — or ``text``
=============== ================================== ======================================

Prompts go through :mod:`adapterhub.prompts`, so training sees exactly what
the runtime's ``predict`` and ``generate`` send. An :class:`Example` keeps
``labels`` = the token id where the loss applies and ``-100`` elsewhere
(the prompt). :func:`plan_batches` groups examples of similar length, and
:func:`collate` either pads them or packs them into shared rows; either way a
:class:`Batch` lists exactly the positions whose next token is supervised, so
the trainer applies the LM head there and nowhere else.

>>> example = Example(input_ids=(5, 6, 7, 8), labels=(-100, -100, 7, 8))
>>> batch = collate([example], pad_id=0)
>>> batch.target_cols.tolist(), batch.targets.tolist()
([1, 2], [7, 8])
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import DataError
from .prompts import TaskSpec, answer_ids, prompt_ids, render_prompt

if TYPE_CHECKING:
    import torch

    from .recipe import Recipe, Source

IGNORE = -100
"""Label of a position without loss (a prompt token)."""


@dataclass(frozen=True)
class Example:
    """One tokenized example: ``labels[i]`` is ``input_ids[i]`` where supervised, else :data:`IGNORE`."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Split:
    """The rows of one split (canonical field names) and their encoded examples."""

    name: str
    origin: str
    rows: list[dict[str, Any]]
    examples: list[Example]

    @property
    def num_tokens(self) -> int:
        return sum(len(example) for example in self.examples)


@dataclass
class Dataset:
    """Everything the trainer needs from ``data:``."""

    task: TaskSpec
    train: Split
    validation: Split | None
    test: Split | None


@dataclass
class Batch:
    """A micro-batch laid out for the supervised-positions-only forward.

    ``hidden[target_rows, target_cols]`` are the ``N`` hidden states whose next token is
    supervised; ``targets`` are those tokens.
    """

    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor | None  # [R, T]; None when packed (position_ids mark the boundaries)
    position_ids: torch.Tensor | None  # [R, T] when packed, else None (0..T-1 implied)
    target_rows: torch.Tensor  # [N]
    target_cols: torch.Tensor  # [N]
    targets: torch.Tensor  # [N]
    num_examples: int
    num_tokens: int  # real tokens, padding excluded

    def to(self, device: Any) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.position_ids),
                     move(self.target_rows), move(self.target_cols), move(self.targets),
                     self.num_examples, self.num_tokens)


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
    else:
        required = {"classification": ("text", "label"), "instruction": ("instruction", "output"),
                    "chat": ("messages",)}[fmt]
    mapped = []
    for number, row in enumerate(rows, 1):
        for name in required:
            if row.get(column[name]) is None:
                how = (f"data.fields maps {name!r} to column {column[name]!r}, which" if name in fields
                       else f"field {name!r} is required by format {fmt!r} but")
                raise DataError(f"{how} is missing from row {number} of {origin} (columns: {sorted(row)}); "
                                f"rename it with data.fields: {{{name}: <your column>}}")
        mapped.append({name: row[column[name]] for name in canonical if row.get(column[name]) is not None})
    return mapped


# --- encoding ---------------------------------------------------------------------------------------------------
def encode(row: dict[str, Any], *, fmt: str, tokenizer: Any, task: TaskSpec) -> tuple[list[int], list[int]]:
    """``(prompt_ids, answer_ids)`` pieces of one canonical row; returns alternating pieces for chat.

    The result is a flat list of ``(ids, supervised)`` pairs folded into two lists:
    the token ids and the matching labels (:data:`IGNORE` where unsupervised).
    """
    pieces: list[tuple[list[int], bool]]
    if fmt == "classification":
        pieces = [(prompt_ids(tokenizer, render_prompt(tokenizer, task, str(row["text"]))), False),
                  (answer_ids(tokenizer, str(row["label"])), True)]
    elif fmt == "instruction":
        text = str(row["instruction"]) + (f"\n\n{row['input']}" if row.get("input") else "")
        pieces = [(prompt_ids(tokenizer, render_prompt(tokenizer, task, text)), False),
                  (answer_ids(tokenizer, str(row["output"])), True)]
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
    if task.is_classification:
        unknown = sorted({str(row["label"]) for row in rows} - set(task.labels))
        if unknown:
            first = next(i for i, row in enumerate(rows, 1) if str(row["label"]) in unknown)
            raise DataError(f"{origin} has label(s) {unknown} (first in row {first}) that are not in data.labels "
                            f"{list(task.labels)}; add them to data.labels or fix the rows")
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

    def read(name: str, source: Source) -> tuple[list[dict[str, Any]], str]:
        origin = str(recipe.resolve_path(source.path)) if source.path else source.describe()
        rows = read_rows(source, root=recipe.root)
        return map_fields(rows, fmt=data.format, fields=data.fields, origin=origin), origin

    def split(name: str, rows: list[dict[str, Any]], origin: str) -> Split:
        examples = encode_split(rows, fmt=data.format, tokenizer=tokenizer, task=task,
                                max_length=data.max_length, origin=origin)
        return Split(name, origin, rows, examples)

    train_rows, train_origin = read("train", data.train)
    validation = None
    if data.validation is not None:
        validation = split("validation", *read("validation", data.validation))
    elif data.validation_split > 0:
        train_rows, held_out = _hold_out(train_rows, data.validation_split, seed=recipe.training.seed)
        validation = split("validation", held_out, f"{train_origin} (held-out {data.validation_split:.0%})")
    test = split("test", *read("test", data.test)) if data.test is not None else None
    return Dataset(task, split("train", train_rows, train_origin), validation, test)


def _hold_out(rows: list[dict[str, Any]], fraction: float, *, seed: int) -> tuple[list, list]:
    import torch

    count = max(1, round(len(rows) * fraction))
    if count >= len(rows):
        raise DataError(f"data.validation_split={fraction} leaves no training rows out of {len(rows)}")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    keep = sorted(order[count:])
    return [rows[i] for i in keep], [rows[i] for i in sorted(order[:count])]


# --- batching ---------------------------------------------------------------------------------------------------
def plan_batches(lengths: Sequence[int], *, batch_size: int, seed: int | None, epoch: int = 0,
                 group_by_length: bool = True, group_size: int = 16) -> list[list[int]]:
    """Split example indices into micro-batches.

    With ``seed`` the order is shuffled (deterministically per ``seed`` and ``epoch``, so a
    resumed run sees the same batches); ``group_by_length`` then sorts each window of
    ``group_size`` batches by length so a batch pads little, and shuffles the batches.
    Without ``seed`` (evaluation) examples are simply sorted by length.

    >>> plan_batches([5, 1, 4, 2], batch_size=2, seed=None)
    [[0, 2], [3, 1]]
    """
    import torch

    if seed is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * group_size
    batches = []
    for start in range(0, len(order), window):
        group = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def collate(examples: Sequence[Example], *, pad_id: int, pack_length: int | None = None) -> Batch:
    """Lay examples out as a :class:`Batch`: one right-padded row each, or packed rows.

    Args:
        examples: the micro-batch.
        pad_id: token id used for padding (never attended to, never a target).
        pack_length: pack examples into rows of at most this many tokens (first-fit,
            longest first); each example restarts its ``position_ids`` at 0, which is how
            transformers keeps packed examples from attending to each other.
    """
    import torch

    if pack_length is None:
        rows = [[index] for index in range(len(examples))]
    else:
        rows, room = [], []
        for index in sorted(range(len(examples)), key=lambda i: -len(examples[i])):
            slot = next((r for r, free in enumerate(room) if free >= len(examples[index])), None)
            if slot is None:
                rows.append([]), room.append(max(pack_length, len(examples[index])))
                slot = len(rows) - 1
            rows[slot].append(index)
            room[slot] -= len(examples[index])
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    target_rows, target_cols, targets = [], [], []
    for r, row in enumerate(rows):
        offset = 0
        for index in row:
            example = examples[index]
            length = len(example)
            input_ids[r, offset:offset + length] = torch.tensor(example.input_ids)
            attention_mask[r, offset:offset + length] = 1
            position_ids[r, offset:offset + length] = torch.arange(length)
            for position in range(1, length):
                if example.labels[position] != IGNORE:
                    target_rows.append(r)
                    target_cols.append(offset + position - 1)
                    targets.append(example.input_ids[position])
            offset += length
        position_ids[r, offset:] = torch.arange(width - offset)  # padding tail: its own "sequence"
    packed = pack_length is not None
    return Batch(input_ids=input_ids, attention_mask=None if packed else attention_mask,
                 position_ids=position_ids if packed else None,
                 target_rows=torch.tensor(target_rows, dtype=torch.long),
                 target_cols=torch.tensor(target_cols, dtype=torch.long),
                 targets=torch.tensor(targets, dtype=torch.long),
                 num_examples=len(examples), num_tokens=sum(len(e) for e in examples))
