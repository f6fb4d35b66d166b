"""The training baseline: plain PEFT + transformers ``Trainer``, written the way the PEFT docs teach it.

It follows the same recipe as our trainer: the same tokenised examples (the
recipe's own data pipeline, so both see identical token ids and label masks),
the same LoRA settings and the same optimiser, schedule, batch size and seed.
What differs is only the loop: ``get_peft_model`` + ``Trainer`` with
``DataCollatorForSeq2Seq`` padding each batch to its longest row and the LM
head computed at every position. Run it in a child process
(``isolated.run_isolated``) so its peak memory is its own.

Two measurements use it: tokens/s over a few steps (:func:`train_with_peft_trainer`) and
time to a validation accuracy over the recipe's whole schedule
(:func:`time_to_accuracy_with_peft_trainer`, evaluating through :func:`probe_callback`).

>>> result = train_with_peft_trainer(recipe="recipes/finance.yaml", overrides=[], steps=5, warmup=1)  # doctest: +SKIP
>>> sorted(result)  # doctest: +SKIP
['peak_bytes', 'seconds', 'steps', 'tokens', 'tokens_per_s']
"""

from __future__ import annotations

import tempfile
from typing import Any, Callable, Sequence

from .._transformers import quiet_peft_wrapping
from .harness import peak_memory_bytes, reset_peak_memory


def train_with_peft_trainer(*, recipe: str, overrides: Sequence[str], steps: int, warmup: int,
                            threads: int | None = None) -> dict[str, Any]:
    """Train ``warmup + steps`` optimizer steps with PEFT + ``Trainer``; time and count the last ``steps``.

    Args:
        recipe: the recipe file both trainers follow.
        overrides: ``"section.key=value"`` overrides (base, dtype, batch size, ...).
        steps: timed optimizer steps.
        warmup: untimed steps first.
        threads: ``torch.set_num_threads`` for this process.

    Returns:
        ``{"tokens_per_s", "tokens", "seconds", "steps", "peak_bytes"}``; tokens are the
        non-padding input tokens of the timed steps; ``peak_bytes`` is the CUDA peak of the
        timed steps or the process's peak RSS on CPU.
    """
    from transformers import TrainerCallback

    plan, base, model, dataset = _prepare(recipe, [*overrides, f"training.max_steps={warmup + steps}"], threads)
    device = base.spec.device
    clock = _StepClock(warmup=warmup, device=device)

    class ClockCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_done()

    _train(plan, base, model, dataset, max_steps=warmup + steps, callback=ClockCallback(), count=clock.count)
    seconds, tokens = clock.seconds, clock.tokens
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "steps": steps,
            "peak_bytes": peak_memory_bytes(device)}


def time_to_accuracy_with_peft_trainer(*, recipe: str, overrides: Sequence[str], threshold: float, eval_every: int,
                                       eval_rows: int | None = None, max_steps: int | None = None,
                                       threads: int | None = None) -> dict[str, Any]:
    """PEFT + ``Trainer`` on the recipe's schedule until validation accuracy reaches ``threshold``.

    The schedule's steps are our trainer's (:func:`adapterhub.training.batching.plan_steps`), so both
    stop at the same step count; a :func:`probe_callback` evaluates and stops.

    Returns:
        :meth:`adapterhub.bench.accuracy.AccuracyProbe.result` plus ``"schedule"``.
    """
    from ..training.batching import plan_steps
    from .accuracy import probe_for, probed_overrides, schedule

    plan, base, model, dataset = _prepare(
        recipe, probed_overrides(overrides, eval_every=eval_every, max_steps=max_steps), threads)
    _, _, total_steps = plan_steps(len(dataset.train.examples), plan.training)
    probe = probe_for(dataset, base.tokenizer, plan.training, threshold=threshold, eval_rows=eval_rows,
                      total_steps=total_steps, device=base.spec.device)
    _train(plan, base, model, dataset, max_steps=total_steps, callback=probe_callback(probe), count=probe.count)
    return {**probe.result(), "schedule": schedule(plan.training, total_steps)}


def probe_callback(probe: Any) -> Any:
    """A ``TrainerCallback`` that starts ``probe``'s clock when training starts, lets it evaluate after each
    step it is due at (the clock paused) and stops training once it reports the threshold reached."""
    from transformers import TrainerCallback

    class ProbeCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            probe.start()

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if probe.due(state.global_step) and probe.evaluate(state.global_step, model):
                control.should_training_stop = True

    return ProbeCallback()


def _prepare(recipe: str, overrides: Sequence[str], threads: int | None) -> tuple[Any, Any, Any, Any]:
    """``(plan, base, peft_model, dataset)``: the recipe, its base, the LoRA model the PEFT docs build, its data."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    from ..methods.lora import LORA

    from ..base.loading import load_base
    from ..training import load_recipe
    from ..training.data import load_dataset

    if threads:
        torch.set_num_threads(threads)
    plan = load_recipe(recipe, overrides=overrides)
    section, training = plan.base, plan.training
    base = load_base(section.model, quantize=section.quantize, dtype=section.dtype, device=section.device,
                     progress=False, packed_4bit=False)  # trained: a packed 4-bit layer passes no gradient
    model = base.model
    with quiet_peft_wrapping():
        if base.spec.quantize is not None:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
        model = get_peft_model(model, LORA.peft_config(plan, base))  # the recipe's LoraConfig, as the PEFT docs use it
    return plan, base, model, load_dataset(plan, base.tokenizer)


def _train(plan: Any, base: Any, model: Any, dataset: Any, *, max_steps: int, callback: Any,
           count: Callable[[int], None]) -> None:
    """``Trainer.train`` for ``max_steps`` optimizer steps with the recipe's optimiser, schedule and seed;
    ``count`` gets each batch's non-padding input tokens."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from .accuracy import warmup_steps

    training, device = plan.training, base.spec.device
    examples = [{"input_ids": list(example.input_ids), "attention_mask": [1] * len(example),
                 "labels": list(example.labels)} for example in dataset.train.examples]

    class CountingTrainer(Trainer):
        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            count(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    with tempfile.TemporaryDirectory(prefix="adapterhub-bench-trainer-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=training.batch_size,
            gradient_accumulation_steps=training.gradient_accumulation_steps, learning_rate=training.lr,
            lr_scheduler_type=training.scheduler, warmup_steps=warmup_steps(training, max_steps),
            weight_decay=training.weight_decay, adam_beta1=training.adam_betas[0], adam_beta2=training.adam_betas[1],
            max_grad_norm=training.max_grad_norm or 0.0, seed=training.seed,
            gradient_checkpointing=training.gradient_checkpointing,
            bf16=base.spec.dtype == "bfloat16", fp16=base.spec.dtype == "float16", use_cpu=device == "cpu",
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
            dataloader_num_workers=0, remove_unused_columns=False)
        trainer = CountingTrainer(model=model, args=args, train_dataset=examples, callbacks=[callback],
                                  data_collator=DataCollatorForSeq2Seq(base.tokenizer, padding=True,
                                                                       label_pad_token_id=-100))
        trainer.train()


class _StepClock:
    """Times the optimizer steps after ``warmup`` and counts their tokens."""

    def __init__(self, *, warmup: int, device: str) -> None:
        from .harness import Timer

        self.warmup, self.device, self.timer = warmup, device, Timer(device)
        self.steps_done, self.tokens, self.started, self.seconds = 0, 0, None, 0.0
        if warmup == 0:
            self._start()

    def _start(self) -> None:
        reset_peak_memory(self.device)
        self.started = self.timer.now()

    def count(self, tokens: int) -> None:
        if self.started is not None:
            self.tokens += tokens

    def step_done(self) -> None:
        self.steps_done += 1
        if self.steps_done == self.warmup:
            self._start()
        elif self.started is not None:
            self.seconds = self.timer.now() - self.started
