"""Tasks and prompts: how an adapter's input is rendered and how labels are scored.

Training (``data.py``), evaluation and the runtime's ``predict`` all go through
this module, so an adapter is always asked exactly the way it was taught.

A classification example is rendered as ``render_prompt(...)`` followed by the
label and the tokenizer's end-of-sequence token; prediction scores each
label's tokens (plus the end token) by log-likelihood and takes the best —
free text is never parsed.

>>> task = TaskSpec(type="classification", labels=("positive", "negative"),
...                 prompt_template="Sentiment ({labels})?\\n{text}", chat=False)
>>> task.user_message("Shares jumped 8%.")
'Sentiment (positive, negative)?\\nShares jumped 8%.'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

from .errors import ConfigError

DEFAULT_CLASSIFICATION_TEMPLATE = "Classify the following text as one of: {labels}.\n\n{text}"
TASK_TYPES = ("generation", "classification", "sequence_classification", "token_classification")
ENCODER_TASKS = ("sequence_classification", "token_classification")
"""Task types served by an encoder base through a trained head (no prompt: the text goes in as it is)."""


@dataclass(frozen=True)
class TaskSpec:
    """What an adapter does and how its prompts look.

    Attributes:
        type: ``"generation"`` (free text) or ``"classification"`` (one of ``labels``, by label
            scoring) on a decoder; ``"sequence_classification"`` (one of ``labels`` per text) or
            ``"token_classification"`` (entities of the types in ``labels``, tagged BIO per token)
            through an encoder's head.
        labels: the label strings (entity types for token classification), in a fixed order.
        prompt_template: the user message; ``{text}`` is the input, ``{labels}``
            the comma-separated labels.
        system_prompt: optional system message for chat templates.
        chat: wrap the message in the base tokenizer's chat template (when it has one).
    """

    type: Literal["generation", "classification", "sequence_classification", "token_classification"] = "generation"
    labels: tuple[str, ...] = ()
    prompt_template: str = "{text}"
    system_prompt: str | None = None
    chat: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or self.type not in TASK_TYPES:
            raise ConfigError(f"unknown task type {self.type!r}; use one of {', '.join(TASK_TYPES)}")
        for name, value, kinds in (("prompt_template", self.prompt_template, (str,)),
                                   ("system_prompt", self.system_prompt, (str, type(None))),
                                   ("chat", self.chat, (bool,)), ("extra", self.extra, (dict,))):
            if not isinstance(value, kinds):
                raise ConfigError(f"task {name} must be {' or '.join(k.__name__ for k in kinds)}, "
                                  f"not {type(value).__name__}")
        if not all(isinstance(label, str) and label for label in self.labels):
            raise ConfigError("task labels must be non-empty strings")
        if self.type in ("classification", "sequence_classification") and len(self.labels) < 2:
            raise ConfigError(f"a classification task needs at least two labels, got {list(self.labels)!r}")
        if self.type == "token_classification":
            if not self.labels:
                raise ConfigError("a token classification task needs its entity types as labels, e.g. [DISEASE, DRUG]")
            bad = [label for label in self.labels if not label or label == "O" or label[:2] in ("B-", "I-")
                   or any(c.isspace() for c in label)]
            if bad:
                raise ConfigError(f"entity types {bad!r} are not usable: give bare types without spaces "
                                  "(DISEASE, not B-DISEASE or O); the BIO tags are derived from them")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be unique, got {list(self.labels)!r}")
        if "{text}" not in self.prompt_template:
            raise ConfigError(f"prompt_template {self.prompt_template!r} must contain '{{text}}'")

    @property
    def is_classification(self) -> bool:
        """A decoder classification task (labels scored by log-likelihood after a prompt)."""
        return self.type == "classification"

    @property
    def is_encoder_task(self) -> bool:
        """Served by an encoder base and the adapter's own head (sequence or token classification)."""
        return self.type in ENCODER_TASKS

    @property
    def base_kind(self) -> str:
        """The kind of base the task needs: ``"encoder"`` or ``"decoder"``."""
        return "encoder" if self.is_encoder_task else "decoder"

    @property
    def head_labels(self) -> tuple[str, ...]:
        """The head's output classes in order: the labels, or for token classification the BIO tags.

        >>> TaskSpec(type="token_classification", labels=("DRUG", "DISEASE")).head_labels
        ('O', 'B-DRUG', 'I-DRUG', 'B-DISEASE', 'I-DISEASE')
        """
        if self.type == "token_classification":
            return ("O", *(f"{prefix}-{label}" for label in self.labels for prefix in ("B", "I")))
        return self.labels

    def user_message(self, text: str) -> str:
        """The template filled with ``text`` (and the labels)."""
        return self.prompt_template.replace("{labels}", ", ".join(self.labels)).replace("{text}", text)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        if not data["extra"]:
            del data["extra"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | TaskSpec | None) -> TaskSpec:
        """Build from a manifest dict (``None`` means generation)."""
        if data is None:
            return cls()
        if isinstance(data, TaskSpec):
            return data
        known = {"type", "labels", "prompt_template", "system_prompt", "chat", "extra"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown task field(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        labels = values.get("labels") or ()
        if not isinstance(labels, (list, tuple)):
            raise ConfigError(f"task labels must be a list of strings, not {type(labels).__name__}")
        values["labels"] = tuple(labels)
        return cls(**values)


def render_prompt(tokenizer: Any, task: TaskSpec, text: str) -> str:
    """The full prompt string, up to where the answer starts.

    With ``task.chat`` and a tokenizer that has a chat template, the user
    message is wrapped in it with the generation prompt appended.
    """
    message = task.user_message(text)
    if not (task.chat and getattr(tokenizer, "chat_template", None)):
        return message
    messages = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
    messages.append({"role": "user", "content": message})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer as it follows the prompt: the text then the end token."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    return ids


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt (special tokens come from the template, not added again)."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


LogitsFn = Callable[[Any, Any, Sequence[int]], Any]
"""``logits_fn(input_ids, attention_mask, row_sources) -> logits``; ``row_sources[i]`` is the index
of the input text that row ``i`` belongs to (lets a runtime route rows to per-text adapters)."""


def score_labels(logits_fn: LogitsFn, tokenizer: Any, task: TaskSpec, texts: Sequence[str], *,
                 batch_size: int = 32, device: Any = "cpu") -> Any:
    """Summed log-likelihood of every label for every text.

    Args:
        logits_fn: computes next-token logits for a right-padded batch (see :data:`LogitsFn`).
        tokenizer: the base tokenizer.
        task: a classification :class:`TaskSpec`.
        texts: the inputs.
        batch_size: rows (text × label pairs) per forward pass.
        device: where to put the input tensors.

    Returns:
        A float32 tensor ``[len(texts), len(task.labels)]`` on CPU.

    >>> scores = score_labels(fn, tok, task, ["Shares jumped."])  # doctest: +SKIP
    >>> task.labels[int(scores.argmax(-1)[0])]  # doctest: +SKIP
    'positive'
    """
    import torch

    if not task.is_classification:
        raise ConfigError("score_labels needs a classification task")
    label_ids = [answer_ids(tokenizer, label) for label in task.labels]
    rows: list[tuple[int, list[int], int]] = []  # (text index, full ids, prompt length)
    for index, text in enumerate(texts):
        prompt = prompt_ids(tokenizer, render_prompt(tokenizer, task, text))
        rows.extend((index, prompt + ids, len(prompt)) for ids in label_ids)
    scores = torch.empty(len(rows), dtype=torch.float32)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(ids) for _, ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (_, ids, _) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention_mask[row, :len(ids)] = 1
        with torch.inference_mode():
            logits = logits_fn(input_ids.to(device), attention_mask.to(device), [i for i, _, _ in chunk])
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, (_, ids, prompt_length) in enumerate(chunk):
            positions = torch.arange(prompt_length - 1, len(ids) - 1)
            targets = torch.tensor(ids[prompt_length:])
            scores[start + row] = logprobs[row, positions, targets].sum()
    return scores.view(len(texts), len(task.labels))


def predict_labels(logits_fn: LogitsFn, tokenizer: Any, task: TaskSpec, texts: Sequence[str], **kwargs: Any) -> list[str]:
    """The best-scoring label for each text (see :func:`score_labels`)."""
    scores = score_labels(logits_fn, tokenizer, task, texts, **kwargs)
    return [task.labels[int(i)] for i in scores.argmax(dim=-1)]
