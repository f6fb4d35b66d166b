"""What the routes ask of the model: resolve a model name, check a request against the limits, run it
through the scheduler as a stream of events, classify, tag, load and unload.

No request or response object reaches it (the routes parse and render), but its refusals are already
HTTP answers: a :class:`~adapterhub.serve.protocol.ServeError` carries the status (400, 403, 404, 503)
and the error code the routes send back; library errors pass through to
:func:`~adapterhub.serve.protocol.from_exception`.

>>> engine = Engine(hub, ServeOptions(max_rows=16))  # doctest: +SKIP
>>> job, events = engine.submit(engine.prepare("finance", engine.acquire("finance"), text="Revenue fell",
...                                            max_tokens=8, temperature=0, top_p=None, seed=None, stops=[]))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from ..runtime.constrained import ConstrainedSampler
from ..runtime.sampling import Sampler
from ..runtime.residency import Held
from . import limits
from .limits import MAX_CLASSIFY_INPUTS
from .classifiers import answers_with_label
from .metrics import Metrics
from .redact import Redactor
from .protocol import ServeError
from .rollout import Rollout
from .routing import decide_each
from .scheduler import Job, Scheduler
from .tier_metrics import TierCollector

if TYPE_CHECKING:
    from ..runtime.hub import AdapterHub

log = logging.getLogger("adapterhub.serve")


@dataclass
class ServeOptions:
    """Limits and switches of one server (the ``adapterhub serve`` flags)."""

    max_rows: int = 32  # rows in the running batch; 1 = batching off
    max_queue: int = 256  # requests waiting for a row before 503
    max_new_tokens: int = 512  # cap on max_tokens / max_new_tokens
    default_max_tokens: int = 16  # OpenAI completions' default
    auth: bool = False
    keys_path: str | None = None  # default $ADAPTERHUB_HOME/keys.sqlite
    log_text: bool = False
    allow_hf: bool = False  # hf:// references may load on first use
    base_name: str | None = None  # the base's model id (default: its alias or folder name)
    host: str = "127.0.0.1"  # the address served (the Host check answers its names)
    allowed_hosts: tuple[str, ...] = ()  # more Host names to answer ("*": any)
    max_inputs: int = MAX_CLASSIFY_INPUTS  # texts in one /v1/classify or /v1/tag request
    max_connections: int = 1024  # open connections before new requests get 503
    header_timeout_s: float = 10.0  # a connection must finish its request headers within this
    metrics_top_k: int = 32  # adapters with their own /metrics series (by traffic); the rest count as "other"
    channel: str | None = None  # a bare adapter name means name@channel when that channel exists (see rollout.py)
    channel_poll_s: float = 1.0  # how often followed channels are read again
    strict: bool = False  # refuse adapters whose contract was never evaluated on this base's quantisation


@dataclass
class Prepared:
    """A checked generation request, holding its adapter's pin until it is submitted or dropped."""

    ref: str | None
    entry: Held | None
    prompt: list[int]
    max_new_tokens: int
    sampler: Sampler
    stops: list[str]
    stop_at_eos: bool = True

    @property
    def label(self) -> str:
        return "base" if self.ref is None else self.ref


class Engine:
    """One hub, its stepper, the scheduler thread and the metrics."""

    def __init__(self, hub: AdapterHub, options: ServeOptions | None = None, metrics: Metrics | None = None) -> None:
        self.hub = hub
        self.options = options or ServeOptions()
        self.metrics = metrics or Metrics(top_k=self.options.metrics_top_k)
        self.redact = Redactor.for_hub(hub)
        self._chars_per_token: int | None = None
        self.stepper = hub.stepper()
        self.scheduler = Scheduler(self.stepper, max_rows=self.options.max_rows, max_queue=self.options.max_queue,
                                   on_step=self.metrics.batch_rows.observe, on_queue=self.metrics.queue,
                                   route_batch=lambda jobs: decide_each(hub, jobs))
        spec_name = hub.base.spec.name
        self.base_id = self.options.base_name or (Path(spec_name).name if os.sep in spec_name else spec_name)
        self._base_names = {self.base_id, spec_name, "base"}
        self.draining = False
        self.metrics.resident.set(len(hub.resident()))
        hub.residency.counters.subscribe(self._count_residency)
        self.metrics.registry.register(TierCollector(hub.residency))
        # loads wait here (reading, or for a free slot) without taking the shared threadpool's threads
        self._loads = ThreadPoolExecutor(max_workers=max(4, self.options.max_queue), thread_name_prefix="adapterhub-load")
        self.rollout = Rollout(hub, self.metrics, unload=self.unload, default_channel=self.options.channel,
                               poll_s=self.options.channel_poll_s)
        hub.contracts.strict = hub.contracts.strict or self.options.strict

    def start(self) -> None:
        self.scheduler.start()
        self.rollout.start()

    def stop(self) -> None:
        self.rollout.stop()
        self.scheduler.stop()
        self._loads.shutdown(wait=False)

    # --- names -------------------------------------------------------------------------
    def model_ref(self, model: str) -> str | None:
        """``None`` when ``model`` names the base, else the adapter reference in its canonical spelling (checked
        for shape; see :func:`.limits.canonical_model`)."""
        if model in self._base_names:
            return None
        model = limits.canonical_model(model, latest_is_bare=self.options.channel is None)
        if model.startswith("hf://") and not self.options.allow_hf:
            raise ServeError(403, f"{model!r}: hf:// references are not served here (start the server with "
                             "--allow-hf, or ask an admin to load it)", code="hf_refs_disabled")
        if "/" in model and not model.startswith("hf://") or model.startswith((".", "~")):
            raise ServeError(404, f"model {model!r} is a path; only registry references and loaded names are "
                             "served (an admin loads folders with /v1/load_lora_adapter)", code="model_not_found")
        return model

    def models(self) -> list[dict[str, Any]]:
        """The base and every servable adapter (resident, or registered for this base)."""
        names = {info.name: info for info in self.hub.resident()}
        try:
            registered = [r.name for r in self.hub.registry.list(base=self.hub.base.fingerprint)]
        except Exception:  # noqa: BLE001 - no registry: only resident adapters are servable
            registered = []
        ids = [self.base_id, *dict.fromkeys([*names, *registered])]
        return [{"id": name, "object": "model", "created": 0, "owned_by": "adapterhub",
                 "root": self.base_id, "parent": None if name == self.base_id else self.base_id,
                 "resident": name in names or name == self.base_id,
                 **({"method": names[name].method, "task": names[name].task} if name in names else {}),
                 **_contract(self.hub.contracts.view(names[name].source if name in names else name))}
                for name in ids]

    # --- adapters -----------------------------------------------------------------------
    def acquire(self, ref: str | None) -> Held | None:
        """Pin (loading on first use) the adapter for a request; blocking, run it in a worker thread.

        Release it with ``engine.stepper.release`` (or hand it to :meth:`prepare`, which passes it on).

        Raises:
            ServeError: 404 ``model_not_found`` for a name that is neither the base, loaded nor registered;
                other library errors pass through (see :func:`protocol.from_exception`).
        """
        from ..errors import UnknownDomainError

        try:
            return self.stepper.acquire(ref)
        except UnknownDomainError:
            known = ", ".join(m["id"] for m in self.models())
            raise ServeError(404, f"model {ref!r} does not exist: it is not the base, a loaded adapter or a "
                             f"registered one (servable: {known})", code="model_not_found") from None

    async def acquire_async(self, ref: str | None) -> Held | None:
        """:meth:`acquire` on a load worker: the request's adapter is read (host tier, disk or an ``hf://`` pull)
        and put in a slot there while the scheduler's running rows keep decoding."""
        return await asyncio.get_running_loop().run_in_executor(self._loads, self.acquire, ref)

    def adapters(self) -> dict[str, Any]:
        """Every adapter held in any residency tier (tier, bytes, pins, hits, last use) and each tier's usage."""
        rows = [{"name": info.name, "tier": info.tier, "bytes": info.bytes, "pins": info.pins, "hits": info.hits,
                 "last_used": info.last_used.isoformat(), "method": info.method, "source": info.source}
                for info in self.hub.resident(tier="all")]
        return {"object": "list", "data": rows, "tiers": self.hub.residency.usage()}

    def load(self, name: str, path: str | None, *, detailed: bool = False) -> dict[str, Any]:
        """Load ``path`` (or the registry reference ``name``) as ``name``.

        ``detailed``: a folder's load error says what is wrong with it; otherwise every failing folder gets the
        same answer, so a caller cannot tell which paths exist.
        """
        from ..errors import AdapterHubError
        from ..runtime.sources import is_path

        limits.check_lora_name(name, reserved=self._base_names, registered=self._registered(name), path=path)
        source = path or name
        if source.startswith("hf://") and not self.options.allow_hf:
            raise ServeError(403, "hf:// references are not served here (start the server with --allow-hf)",
                             code="hf_refs_disabled")
        try:
            info = self.hub.load(source, name=name)
        except AdapterHubError as error:
            if path is None or detailed or not is_path(path):  # a registry reference reveals no file
                raise
            log.warning("loading lora_path %r failed: %s", path, error)
            raise ServeError(400, "lora_path could not be loaded: it is not a readable PEFT adapter folder made for "
                             "this base (the server log says why)", code="invalid_adapter") from None
        return {"lora_name": info.name, "method": info.method, "source": info.source, "task": info.task}

    def _registered(self, name: str) -> bool:
        try:
            self.hub.registry.get(name)
        except Exception:  # noqa: BLE001 - not registered, or no registry
            return False
        return True

    def unload(self, name: str) -> bool:
        return self.hub.unload(name)

    def _count_residency(self, event: str, tier: str, name: str) -> None:
        """Per-adapter load and eviction counts (device tier), told by the residency as they happen."""
        if tier != "device":
            return
        after = {info.name for info in self.hub.resident()}  # inside the residency's (re-entrant) lock
        before = after - {name} if event == "load" else after | {name}
        self.metrics.residency(before, after)

    # --- generation -----------------------------------------------------------------------
    def prepare(self, ref: str | None, entry: Held | None, *, text: str | None = None,
                messages: list[dict] | None = None,
                chat: bool = False, max_tokens: int | None, temperature: float | None, top_p: float | None,
                top_k: int | None = None, seed: int | None, stops: list[str],
                stop_at_eos: bool = True, schema: Any = None, default_temperature: float = 1.0,
                default_max_tokens: int | None = None) -> Prepared:
        """Tokenize and check one request against the context and token caps (400 on a violation).

        The adapter's contract fills in what the request leaves ``None`` (temperature, top_p, max_tokens, an
        empty ``stops``, ``schema``; see :mod:`adapterhub.runtime.contracts`); ``default_temperature`` applies
        when neither gives one. The caller passes the pinned ``entry`` from :meth:`acquire`; it is released
        here on any error.
        """
        try:
            settings = self.hub.contracts.settings(entry, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                                   stops=stops or None, schema=schema)
            temperature, top_p, max_tokens = settings.temperature, settings.top_p, settings.max_tokens
            stops = [] if settings.schema is not None else settings.stops  # the grammar ends a schema's answer
            temperature = default_temperature if temperature is None else temperature
            if "max_tokens" in settings.from_contract:
                max_tokens = min(max_tokens, self.options.max_new_tokens)
            if self.hub.base.kind == "encoder":
                raise ServeError(400, f"this server's base ({self.base_id}) is an encoder: it classifies "
                                 "(/v1/classify) and tags (/v1/tag) but does not generate text", code="task_mismatch")
            cap = self.options.max_new_tokens
            if max_tokens is not None and max_tokens > cap:
                raise ServeError(400, f"max_tokens={max_tokens} is over this server's cap of {cap} "
                                 "(adapterhub serve --max-new-tokens)", code="max_tokens_over_cap")
            new = max_tokens if max_tokens is not None else min(default_max_tokens or self.options.default_max_tokens, cap)
            limits.check_sampling(temperature=temperature, top_p=top_p, seed=seed)
            texts = [m["content"] for m in messages] if messages is not None else [text or ""]
            limits.check_prompt_chars(texts, context=self.stepper.context_length,
                                      chars_per_token=self.chars_per_token)
            if messages is not None:
                prompt = self.stepper.encode_messages(messages, entry)
            else:
                prompt = self.stepper.encode(text or "", entry, chat=chat or answers_with_label(entry))  # its template
            if not prompt:
                raise ServeError(400, "the prompt is empty; send at least one token of text", code="empty_prompt")
            context = self.stepper.context_length
            used = len(prompt) + self.stepper.prefix_tokens(entry)
            if used > context or used + new > context:
                raise ServeError(400, f"this model's context is {context} tokens, but the request needs {used + new} "
                                 f"({used} in the prompt, {new} to generate); shorten the prompt or lower "
                                 "max_tokens", code="context_length_exceeded")
            sampler = Sampler(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
            if settings.schema is not None:
                sampler = ConstrainedSampler(sampler, self.hub.grammars.state(settings.schema))
        except BaseException:
            self.stepper.release(entry)
            raise
        return Prepared(ref=ref, entry=entry, prompt=prompt, max_new_tokens=new, sampler=sampler, stops=stops,
                        stop_at_eos=stop_at_eos)

    @property
    def chars_per_token(self) -> int:
        """Characters in the tokenizer's longest token (what bounds a prompt's tokens by its characters)."""
        if self._chars_per_token is None:
            self._chars_per_token = limits.longest_token_chars(self.stepper.tokenizer)
        return self._chars_per_token

    def submit(self, prepared: Prepared) -> tuple[Job, AsyncIterator[dict[str, Any]]]:
        """Queue a prepared request now (503 when the queue is full or the server drains).

        Returns the job (``job.cancel()`` frees its row or queue place) and its events; closing the
        events early cancels the job too. The adapter pin passes to the scheduler (released on any refusal).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def emit(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        job = Job(prompt=prepared.prompt, entry=prepared.entry, max_new_tokens=prepared.max_new_tokens,
                  sampler=prepared.sampler, emit=emit, stops=prepared.stops, stop_at_eos=prepared.stop_at_eos)
        if self.draining:
            self.stepper.release(prepared.entry)
            raise ServeError(503, "the server is shutting down", code="shutting_down", headers={"Retry-After": "5"})
        try:
            self.scheduler.submit(job)
        except BaseException:
            self.stepper.release(prepared.entry)
            raise
        return job, self._events(job, queue)

    @staticmethod
    async def _events(job: Job, queue: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                event = await queue.get()
                if event["type"] == "error":
                    raise event["error"]
                yield event
                if event["type"] == "done":
                    return
        finally:
            job.cancel()

    # --- classification -------------------------------------------------------------------
    def classify(self, ref: str | None, texts: list[str]) -> list[dict[str, Any]]:
        """Label log-likelihoods and probability shares per text (the adapter's label order).

        The adapter is pinned once, for the whole call (the hub call uses that pin).
        """
        from ..scoring import label_probabilities

        if ref is None:
            raise ServeError(400, "classification needs a classification adapter as model, not the bare base",
                             code="task_mismatch")
        entry = self.acquire(ref)
        try:
            if entry.task.is_encoder_task:
                return self._classify_encoder(entry, texts)
            scores = self.hub.label_scores(texts, domain=entry)
        finally:
            self.stepper.release(entry)
        rows = []
        for row in scores:
            labels, shares = list(row), label_probabilities(row)
            rows.append({"labels": labels, "scores": [row[label] for label in labels],
                         "probs": [shares[label] for label in labels], "label": max(labels, key=row.get)})
        self.rollout.observe_labels(ref, [row["label"] for row in rows])
        return rows

    def _classify_encoder(self, entry: Held, texts: list[str]) -> list[dict[str, Any]]:
        """An encoder classifier's answer in the same shape (``scores`` are log-probabilities)."""
        import math

        if entry.task.type != "sequence_classification":
            raise ServeError(400, f"{entry.name!r} is a {entry.task.type} adapter; ask /v1/tag for its entities",
                             code="task_mismatch")
        rows = []
        for answer in self.hub.classify(texts, domain=entry):
            labels = list(answer["scores"])
            probs = [answer["scores"][label] for label in labels]
            rows.append({"labels": labels, "probs": probs, "label": answer["label"],
                         "scores": [math.log(max(p, 1e-45)) for p in probs]})
        return rows

    def tag(self, ref: str | None, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Entities (character offsets, label, text, score) per text from a token-classification adapter."""
        if ref is None:
            raise ServeError(400, "tagging needs a token-classification (NER) adapter as model, not the bare base",
                             code="task_mismatch")
        entry = self.acquire(ref)
        try:
            if entry.task.type != "token_classification":
                raise ServeError(400, f"{entry.name!r} is a {entry.task.type} adapter, not a token-classification "
                                 "(NER) one; /v1/tag needs a tagger", code="task_mismatch")
            return self.hub.tag(texts, domain=entry)
        finally:
            self.stepper.release(entry)


def _contract(view: dict[str, Any] | None) -> dict[str, Any]:
    return {} if view is None else {"contract": view}
