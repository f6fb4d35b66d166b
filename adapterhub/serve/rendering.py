"""The scheduler's events rendered as each protocol's answer: OpenAI completion and chat chunks, LoRAX/TGI
stream events and details, and the rows of ``/v1/classify`` and ``/v1/tag``.

The body shapes themselves are :mod:`.responses`; this module walks a generation's events into them.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from . import responses as shape
from .streaming import Render

OnDone = Callable[[dict[str, Any]], None]
"""Called with the ``done`` event before its chunk is sent (counts the tokens)."""


def openai_answer(chat: bool, rid: str, model: str, prompt_tokens: int, done: dict[str, Any]) -> dict[str, Any]:
    """A whole ``chat.completion`` or ``text_completion``."""
    make = shape.chat if chat else shape.completion
    return make(rid, model, done["text"], done["finish"], prompt_tokens, done["tokens"])


def openai_events(chat: bool, rid: str, model: str, prompt_tokens: int, *, include_usage: bool,
                  on_done: OnDone) -> Render:
    """Chunks as OpenAI streams them: (chat: a role chunk first), one per token, a finish chunk, the usage
    chunk if asked for, then ``[DONE]``."""

    def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
        if chat:
            return shape.chat_chunk(rid, model, {} if text is None else {"content": text}, finish)
        return shape.completion_chunk(rid, model, text or "", finish)

    async def render(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
        if chat:
            yield shape.sse(shape.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
        async for event in events:
            if event["type"] == "token" and event["text"]:
                yield shape.sse(chunk(event["text"], None))
            elif event["type"] == "done":
                on_done(event)
                yield shape.sse(chunk(None, event["finish"]))
                if include_usage:
                    yield shape.sse(shape.usage_chunk(rid, model, "chat.completion.chunk" if chat
                                                      else "text_completion", prompt_tokens, event["tokens"]))
        yield shape.sse("[DONE]")

    return render


def tgi_answer(done: dict[str, Any], *, prefix: str, prompt_tokens: int, seed: int | None, details: bool,
               decode: Callable[[list[int]], str]) -> dict[str, Any]:
    """A whole ``/generate`` answer: the text (after ``prefix``) and, with ``details``, every token."""
    answer: dict[str, Any] = {"generated_text": prefix + done["text"]}
    if details:
        tokens = [shape.tgi_token(event, decode([event["id"]])) for event in done["token_events"]]
        answer["details"] = shape.tgi_details(done["finish"], prompt_tokens, tokens, seed)
    return answer


def tgi_events(*, prefix: str, prompt_tokens: int, seed: int | None, on_done: OnDone) -> Render:
    """Events as LoRAX streams them: one per token, the last one carrying the full text and details
    (so each token is held until the next event shows whether it was the last)."""

    async def render(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
        held = None
        async for event in events:
            if event["type"] == "token":
                if held is not None:
                    yield shape.sse(shape.tgi_stream(held, held["text"], None, 0, seed, None))
                held = event
            elif held is not None:
                on_done(event)
                yield shape.sse(shape.tgi_stream(held, held["text"], event, prompt_tokens, seed,
                                                 prefix + event["text"]))

    return render


def class_row(index: int, row: dict[str, Any]) -> dict[str, Any]:
    """One text's ``/v1/classify`` answer: the label, and every label's probability and score."""
    return {"index": index, "label": row["label"], "probs": row["probs"], "labels": row["labels"],
            "scores": row["scores"], "num_classes": len(row["labels"])}


def tag_row(index: int, entities: list[dict[str, Any]]) -> dict[str, Any]:
    """One text's ``/v1/tag`` answer: its entities."""
    return {"index": index, "entities": entities}
