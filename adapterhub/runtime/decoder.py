"""Decoder calls: ``generate``, ``predict``, ``label_scores`` and ``logits`` — one routed causal-LM pass per call,
each row through its own adapter. ``AdapterHub`` gets these methods from :class:`DecoderCalls`; pins and
routing come from its :class:`~adapterhub.runtime.residency.Residency`, switching from :mod:`adapterhub.runtime.hub`.

>>> hub.generate(["Summarise ...", "Is this clause ..."], domains=["finance", "legal"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

from .._transformers import text_config
from ..errors import ConfigError, TaskMismatchError
from ..prompts import TaskSpec
from ..scoring import label_probabilities, label_scores
from ..tokens import left_pad, pad_id_of
from . import constrained, generation, mixing, scoring
from .batch import BARE, UNSET as _UNSET


class DecoderCalls:
    """The causal-LM calls of :class:`~adapterhub.runtime.AdapterHub` (see each method).

    Uses the hub's public ``base``, ``tokenizer``, ``domain`` and ``residency``.
    """

    def generate(self, prompt: str | Sequence[str], *, domain: Any = _UNSET, domains: Sequence[str | None] | None = None,
                 max_new_tokens: int | None = None, chat: bool = True, schema: Any = None, stop: Any = None,
                 **generate_kwargs: Any) -> Any:
        """Generate answers; each prompt row uses its own adapter, all in one batch.

        Args:
            prompt: one prompt or a list.
            domain: adapter for every prompt (``None``: the bare base); default: :attr:`domain`. A
                weighted mix of LoRA-family adapters is ``{"finance": 0.7, "legal": 0.3}`` or
                ``"finance:0.7+legal:0.3"``: it equals PEFT's ``cat`` merge of them with those weights,
                computed from the resident adapters (see :mod:`adapterhub.runtime.mixing`).
            domains: one adapter, mix (or ``None``) per prompt, for a mixed batch; ``"auto"`` (or
                ``"auto:finance,legal"``) lets the hub's router choose from the text (:meth:`use_router`).
                A pin the caller holds (``hub.residency.pin(...)``) may stand for a name: it is used as it is.
            max_new_tokens: new tokens per answer (default: the adapter's contract, else 64).
            chat: render each prompt the way its adapter was taught (template, system
                prompt, chat template); ``False`` feeds the raw text.
            schema: constrain every answer to this JSON schema (a dict, a pydantic model class or
                ``"json_object"``); each row keeps its own grammar state (:mod:`adapterhub.runtime.structured`).
                Default: the adapter's contract schema; ``"text"`` asks for free text.
            stop: stop strings (default: the adapter's contract).
            **generate_kwargs: passed to transformers' ``generate`` (``do_sample``,
                ``temperature``, ``num_beams``, ``num_return_sequences``, ...); greedy by default. With a
                schema, stop strings or contract defaults only ``do_sample``, ``temperature``, ``top_p``,
                ``top_k`` and ``seed`` apply (the adapter's contract fills in what is not given).

        Returns:
            The answer (``str``) for one prompt, a list for a list; with
            ``num_return_sequences > 1`` each answer is a list of strings.

        Raises:
            UnknownDomainError, ConfigError (``domains`` length differs from the prompts).

        >>> hub.generate(["Chest pain ...", "Revenue fell ..."], domains=["medical", "finance"])  # doctest: +SKIP
        ['cardiology', 'negative']
        >>> hub.generate("Is this disclosure material?", domain={"finance": 0.7, "legal": 0.3})  # doctest: +SKIP
        """
        import torch

        if self.base.kind == "encoder":
            raise TaskMismatchError(f"generate needs a decoder base; {self.base.spec.name!r} is an encoder: "
                                    "use hub.classify or hub.tag")
        single = isinstance(prompt, str)
        prompts = [prompt] if single else list(prompt)
        names = self.resolve_auto_rows(mixing.call_rows(len(prompts), domain, domains, default=self.domain), prompts)
        if max_new_tokens is not None:
            _check_count("max_new_tokens", max_new_tokens)
        for key in ("num_beams", "num_return_sequences"):
            if generate_kwargs.get(key) is not None:
                _check_count(key, generate_kwargs[key])
        if not prompts:
            return []
        explicit = schema is not None or stop is not None
        if explicit or set(generate_kwargs) <= set(constrained.SAMPLING_KWARGS):  # the per-row loop (contracts too)
            rows = self.generate_rows(prompts, domain=domain, domains=domains, schema=schema, stop=stop,
                                      max_new_tokens=max_new_tokens, chat=chat, generate_kwargs=generate_kwargs,
                                      only_if_needed=not explicit)
            if rows is not None:
                return rows[0].text.strip() if single else [row.text.strip() for row in rows]
        max_new_tokens = max_new_tokens or 64
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        with self.residency.pinned(names) as rows:
            order = generation.grouped_order([BARE if entry is None else entry.slot for entry in rows])
            rows, prompts = [rows[i] for i in order], [prompts[i] for i in order]
            tasks = [entry.task if entry else TaskSpec() for entry in rows]
            input_ids, attention_mask = left_pad(generation.encode(self.tokenizer, prompts, tasks, chat=chat),
                                                 pad_id=pad_id_of(self.tokenizer), device=self.residency.device)
            routing = self.residency.routing(rows, repeat=generation.expansion(self.base.model, generate_kwargs))
            prefix = 0 if routing.prefix is None else int(routing.prefix.mask.shape[1])
            self._check_context(input_ids.shape[1] + prefix + max_new_tokens,
                                f"the longest prompt ({input_ids.shape[1]} tokens"
                                + (f", {prefix} prefix tokens" if prefix else "") + f") + max_new_tokens={max_new_tokens}")
            with routing.applied(), torch.inference_mode():
                new_tokens = generation.generate_tokens(self.base.model, input_ids, attention_mask, routing.prefix,
                                                        max_new_tokens=max_new_tokens, **generate_kwargs)
        per_prompt = int(generate_kwargs.get("num_return_sequences") or 1)
        new_tokens = generation.restore_order(new_tokens, order, per_prompt=per_prompt)
        texts = [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        answers: list[Any] = texts if per_prompt == 1 else [texts[i:i + per_prompt]
                                                            for i in range(0, len(texts), per_prompt)]
        return answers[0] if single else answers

    def predict(self, texts: str | Sequence[str], *, domain: Any = _UNSET,
                domains: Sequence[str | None] | None = None, batch_size: int = 32) -> Any:
        """Classify by label scoring with each classification adapter's recorded task.

        Args:
            texts: one text or a list.
            domain / domains: as in :meth:`generate`; every row needs a classification adapter.
            batch_size: (text, label) rows per forward pass.

        Returns:
            The label (``str``) for one text, a list for a list.

        Raises:
            TaskMismatchError: a row's adapter is a generation adapter, or the bare base.

        >>> hub.predict("Shares jumped 8% after earnings.", domain="finance")  # doctest: +SKIP
        'positive'
        """
        scores = self.label_scores(texts, domain=domain, domains=domains, batch_size=batch_size)
        if isinstance(texts, str):
            return max(scores, key=scores.get)
        return [max(row, key=row.get) for row in scores]

    def label_scores(self, texts: str | Sequence[str], *, domain: Any = _UNSET,
                     domains: Sequence[str | None] | None = None, batch_size: int = 32,
                     normalize: bool = False) -> Any:
        """Summed log-likelihood of every label of each row's classification adapter.

        Each prompt runs once; its cache scores all of that adapter's labels
        (:mod:`adapterhub.scoring`). :meth:`predict` picks the best.

        Args:
            normalize: return each label's share of the probability the labels hold
                (a softmax over their log-likelihoods; what ``adapterhub predict --scores`` prints).

        Returns:
            ``{label: log-likelihood}`` (or ``{label: probability}``) in the adapter's label
            order, for one text; a list of them for a list.

        Raises:
            TaskMismatchError: a row's adapter is a generation adapter, or the bare base.

        >>> hub.label_scores("Shares jumped 8%.", domain="finance")  # doctest: +SKIP
        {'positive': -0.2, 'negative': -9.1, 'neutral': -6.4}
        >>> hub.label_scores("Shares jumped 8%.", domain="finance", normalize=True)  # doctest: +SKIP
        {'positive': 0.998, 'negative': 0.0001, 'neutral': 0.0019}
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        names = self.resolve_auto_rows(mixing.call_rows(len(items), domain, domains, default=self.domain), items,
                                       task="predict")
        _check_count("batch_size", batch_size)
        with self.residency.pinned(names) as rows:
            tasks = [scoring.classification_task(entry, mixing.row_label(name)) for entry, name in zip(rows, names)]
            if items:
                lengths = [len(ids) for ids in generation.encode(self.tokenizer, items, tasks, chat=True)]
                longest = max(range(len(items)), key=lengths.__getitem__)
                label = max(len(self.tokenizer(label)["input_ids"]) for label in tasks[longest].labels) + 1
                self._check_context(lengths[longest] + label,
                                    f"text {longest} ({lengths[longest]} prompt tokens + its longest label)")
            scores = label_scores(self.base.model, self.tokenizer, tasks, items,
                                  lambda chunk: self.residency.routing([rows[i] for i in chunk]),
                                  batch_size=batch_size, device=self.residency.device)
        found = [dict(zip(task.labels, row)) for task, row in zip(tasks, scores)]
        if normalize:
            found = [label_probabilities(row) for row in found]
        return found[0] if single else found

    def logits(self, input_ids: Any, attention_mask: Any = None, *, domain: Any = _UNSET,
               domains: Sequence[str | None] | None = None) -> Any:
        """Next-token logits ``[batch, seq, vocab]`` of one routed forward pass.

        Args:
            input_ids: ``[batch, seq]`` token ids (a ``[seq]`` tensor is one row).
            attention_mask: ``[batch, seq]``; default all ones.
            domain / domains: as in :meth:`generate`.

        >>> hub.logits(ids, mask, domains=["legal", None, "finance"]).shape  # doctest: +SKIP
        torch.Size([3, 12, 49152])
        """
        import torch

        input_ids = torch.as_tensor(input_ids)
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise ConfigError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                              f"{tuple(input_ids.shape)}; they must match")
        names = mixing.call_rows(input_ids.shape[0], domain, domains, default=self.domain)
        self._check_context(input_ids.shape[1], f"input_ids ({input_ids.shape[1]} tokens)")
        with self.residency.pinned(names) as rows, torch.no_grad():
            routing = self.residency.routing(rows)
            with routing.applied():
                device = self.residency.device
                return generation.forward_logits(self.base.model, input_ids.to(device), attention_mask.to(device),
                                                 routing.prefix)

    def _check_context(self, tokens: int, what: str) -> None:
        """One clear error instead of positions past what the base was trained on (garbage, and slow)."""
        limit = getattr(text_config(self.base.model.config), "max_position_embeddings", None)
        if limit and tokens > limit:
            raise ConfigError(f"{what} needs {tokens} positions but base {self.base.spec.name!r} has a context of "
                              f"{limit} tokens; shorten the input or ask for fewer new tokens")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
