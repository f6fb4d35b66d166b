"""Starter recipes for ``adapterhub recipe new NAME --task ...``: short files that train well as they are.

Each starter carries the settings the shipped recipes (``recipes/*.yaml``) were tuned to on the default
bases, so a new domain needs only its data paths and labels filled in (the lines marked ``EDIT``).
The full reference of every key stays available as ``adapterhub recipe new --all-keys``
(:func:`adapterhub.training.recipe_files.starter_yaml`).

>>> text = starter_recipe("classification", name="support")
>>> "name: support" in text and "last_layers: 10" in text and "chat: false" in text
True
"""

from __future__ import annotations

import re

TASKS = ("classification", "instruction", "chat", "ner")
"""What ``recipe new --task`` offers."""

_HEADER = """\
# {title}
# Fill in the lines marked EDIT (data paths and labels); everything else is tuned already.
#   adapterhub recipe check {file}       # validates the recipe and the data, no training
#   adapterhub train {file}              # trains, evaluates and registers {name}
# Every other key and its default: adapterhub recipe new --all-keys
name: {name}
description: ""                          # one line shown in listings and model cards
"""

# Decoder classification: the settings of recipes/medical.yaml and recipes/finance.yaml (LoRA on the last layers,
# a plain prompt that names the labels, lr 2e-3, 3 epochs, validation every 8 steps, best accuracy kept).
_CLASSIFICATION = """\
{adapter}data:
  train: {data}/train.jsonl              # EDIT: one JSON object per line: {{"text": "...", "label": "..."}}
  validation: {data}/validation.jsonl    # EDIT: ~20% as many rows, each label present (or null + validation_split: 0.2)
  test: null                             # EDIT (optional): held-out rows scored once at the end
  format: classification
  labels: [EDIT_first_label, EDIT_second_label]   # EDIT: every label, spelled as in the data
  # fields: {{text: body, label: team}}    # only when your columns have other names
  chat: false                            # plain prompt: fewer tokens than the chat template, faster on a CPU
  prompt_template: "Classify this text as one of: {{labels}}.\\nText: {{text}}\\n"
  max_length: 256

training:
  epochs: 3
  lr: 2.0e-3
  batch_size: 8
  warmup_ratio: 0.05
  scheduler: cosine
  eval_every: 8                          # validation is cheap above the frozen layers: look often
  eval_base: true                        # score the bare base with the same prompt, for comparison
  early_stopping:
    metric: accuracy                     # keep the checkpoint with the best validation accuracy

output:
  min_gain: 0.05                         # register only if validation accuracy beats chance and the bare base by this
"""

# Generation (instruction or chat rows): LoRA on every linear layer of the last 16 layers, loss-selected checkpoint.
_GENERATION = """\
{adapter}data:
  train: {data}/train.jsonl              # EDIT: {row}
  validation: {data}/validation.jsonl    # EDIT: ~10-20% as many rows (or null + validation_split: 0.1)
  test: null                             # EDIT (optional): held-out rows scored once at the end
  format: {format}
  # fields: {fields}   # only when your columns have other names
  chat: true                             # the base's chat template, as it was instruction-tuned
  system_prompt: null                    # EDIT (optional): a system message for every row
  max_length: 512

training:
  epochs: 2
  lr: 1.0e-3
  batch_size: 8
  warmup_ratio: 0.05
  scheduler: cosine
  eval_every: 8
  early_stopping:
    metric: loss                         # keep the checkpoint with the lowest validation loss
"""

# LoRA on every linear layer of the last few decoder layers (shared by the decoder starters).
_DECODER_LORA = """\
adapter:
  method: lora
  r: 16
  alpha: 32
  dropout: 0.05
  target_modules: all-linear
  last_layers: {layers}                        # LoRA on the last {layers} layers: the frozen ones below run once per row

"""

# Named entities: recipes/medical-ner.yaml (a token-classification head and LoRA on the MiniLM encoder).
_NER = """\
base:
  model: minilm-l6                       # the embedded encoder (all-MiniLM-L6-v2)

adapter:
  method: lora
  r: 16
  alpha: 32
  dropout: 0.1
  target_modules: all-linear

data:
  train: {data}/train.jsonl              # EDIT: {{"text": "...", "entities": [{{"start": 0, "end": 9, "label": "..."}}]}}
  validation: {data}/validation.jsonl    # EDIT: ~20% as many rows (or null + validation_split: 0.2)
  test: null                             # EDIT (optional): held-out rows scored once at the end
  format: token_classification           # character offsets; CoNLL rows (tokens, tags) work too
  labels: [EDIT_FIRST_TYPE, EDIT_SECOND_TYPE]   # EDIT: the entity types
  max_length: 128

training:
  epochs: 15
  lr: 1.0e-3
  batch_size: 16
  warmup_ratio: 0.1
  scheduler: linear
  early_stopping: {{metric: f1, patience: 4}}   # entity-level F1, evaluated each epoch
"""

_BODIES = {
    "classification": ("Classification starter: each text gets one of your labels (LoRA on the default decoder).",
                       _CLASSIFICATION, {"adapter": _DECODER_LORA.format(layers=10)}),
    "instruction": ("Instruction starter: answer an instruction (and optional input) the way your rows do.",
                    _GENERATION, {"adapter": _DECODER_LORA.format(layers=16), "format": "instruction",
                                  "row": '{"instruction": "...", "input": "...", "output": "..."}',
                                  "fields": "{instruction: question, output: answer}"}),
    "chat": ("Chat starter: continue conversations the way your rows do (the last assistant turn is learned).",
             _GENERATION, {"adapter": _DECODER_LORA.format(layers=16), "format": "chat",
                           "row": '{"messages": [{"role": "user", "content": "..."}, '
                                  '{"role": "assistant", "content": "..."}]}',
                           "fields": "{messages: conversation}"}),
    "ner": ("Named-entity starter: character spans of your entity types (token-classification head on MiniLM).",
            _NER, {}),
}


def starter_name(path: str | None) -> str:
    """The adapter name a starter written to ``path`` gets: the file's stem, as a registry name.

    >>> starter_name("tickets/Support Tickets.yaml"), starter_name(None)
    ('support-tickets', 'my-adapter')
    """
    if not path:
        return "my-adapter"
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0].lower())
    stem = stem.strip("-._")
    return stem if stem and stem[0].isalnum() else "my-adapter"


def starter_recipe(task: str = "classification", *, name: str = "my-adapter", file: str = "THIS_FILE") -> str:
    """The starter recipe text for ``task`` (one of :data:`TASKS`), named ``name``.

    Args:
        task: classification, instruction, chat or ner.
        name: the adapter name (data paths default to ``data/<name>/``).
        file: how the header's commands name the recipe file.

    Raises:
        ValueError: an unknown task.
    """
    if task not in _BODIES:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    title, body, values = _BODIES[task]
    header = _HEADER.format(title=title, file=file, name=name)
    return header + "\n" + body.format(data=f"data/{name}", **values)
