"""The training baseline: plain PEFT + transformers ``Trainer``, written the way the PEFT docs teach it.

Completion-only labels (prompt tokens set to -100), ``DataCollatorForSeq2Seq``
padding to the longest row of each batch, ``get_peft_model`` with the same
LoRA settings and the same optimiser settings as our recipe. It runs in a
child process (see ``training.py``) so its peak memory is its own.

>>> result = train_with_peft_trainer(**setup.to_dict())  # doctest: +SKIP
>>> sorted(result)  # doctest: +SKIP
['peak_bytes', 'seconds', 'steps', 'tokens', 'tokens_per_s']
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from .harness import peak_memory_bytes, reset_peak_memory


@dataclass(frozen=True)
class TrainSetup:
    """Everything both trainers must share: base, data, adapter and optimiser settings.

    Attributes:
        base, dtype, quantize, device, threads: the frozen base and where it runs.
        train_file: a jsonl file with ``text`` and ``label`` fields.
        task: the classification TaskSpec dict (labels and prompt template).
        rank, alpha, dropout, target_modules: the LoRA adapter.
        learning_rate, scheduler, warmup_steps, weight_decay, max_grad_norm: the optimiser.
        steps, batch_size, max_length, seed: how much training, in which order.
    """

    base: str
    dtype: str
    quantize: str | None
    device: str
    threads: int | None
    train_file: str
    task: dict[str, Any]
    rank: int
    alpha: int
    dropout: float
    target_modules: Any
    learning_rate: float
    scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    steps: int
    batch_size: int
    max_length: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def completion_examples(tokenizer: Any, setup: TrainSetup) -> list[dict[str, list[int]]]:
    """Tokenised ``prompt + label + eos`` rows with the prompt masked out of the labels."""
    from ..prompts import TaskSpec, answer_ids, prompt_ids, render_prompt

    task = TaskSpec.from_dict(setup.task)
    examples = []
    with open(setup.train_file, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            prompt = prompt_ids(tokenizer, render_prompt(tokenizer, task, row["text"]))
            answer = answer_ids(tokenizer, row["label"])
            ids = (prompt + answer)[:setup.max_length]
            labels = ([-100] * len(prompt) + answer)[:setup.max_length]
            examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return examples


def train_with_peft_trainer(**settings: Any) -> dict[str, Any]:
    """Train ``steps`` steps with PEFT + ``Trainer``; tokens are the non-padding tokens it processed.

    Args:
        settings: the fields of a :class:`TrainSetup` (keyword arguments, so a child process can call it).

    Returns:
        ``{"seconds", "tokens", "tokens_per_s", "steps", "peak_bytes"}`` (``seconds`` covers
        ``trainer.train()`` only; ``peak_bytes`` is the CUDA peak or the process's peak RSS).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from ..base import load_base

    setup = TrainSetup(**settings)
    if setup.threads:
        torch.set_num_threads(setup.threads)
    base = load_base(setup.base, dtype=setup.dtype, quantize=setup.quantize, device=setup.device, progress=False)
    device = base.spec.device
    model = base.model
    if setup.quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=setup.rank, lora_alpha=setup.alpha, lora_dropout=setup.dropout,
                                             target_modules=setup.target_modules, task_type="CAUSAL_LM"))
    counted = {"tokens": 0}

    class CountingTrainer(Trainer):
        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            counted["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    with tempfile.TemporaryDirectory(prefix="adapterhub-bench-trainer-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, max_steps=setup.steps, per_device_train_batch_size=setup.batch_size,
            learning_rate=setup.learning_rate, lr_scheduler_type=setup.scheduler, warmup_steps=setup.warmup_steps,
            weight_decay=setup.weight_decay, max_grad_norm=setup.max_grad_norm, seed=setup.seed,
            bf16=base.spec.dtype == "bfloat16", fp16=base.spec.dtype == "float16", use_cpu=device == "cpu",
            logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
            dataloader_num_workers=0, remove_unused_columns=False)
        trainer = CountingTrainer(model=model, args=args, train_dataset=completion_examples(base.tokenizer, setup),
                                  data_collator=DataCollatorForSeq2Seq(base.tokenizer, padding=True,
                                                                       label_pad_token_id=-100))
        reset_peak_memory(device)
        start = time.perf_counter()
        trainer.train()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": counted["tokens"], "tokens_per_s": counted["tokens"] / seconds,
            "steps": setup.steps, "peak_bytes": peak_memory_bytes(device)}
