"""Answer bodies in the shapes OpenAI's and LoRAX/TGI's clients parse.

Finish reasons arrive from the scheduler as ``eos``, ``stop`` or ``length``;
OpenAI calls the first two ``stop``, TGI ``eos_token`` and ``stop_sequence``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

OPENAI_FINISH = {"eos": "stop", "stop": "stop", "length": "length"}
TGI_FINISH = {"eos": "eos_token", "stop": "stop_sequence", "length": "length"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as JSON (or a literal string such as ``[DONE]``)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(rid: str, model: str, text: str, finish: str, prompt: int, generated: int) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": OPENAI_FINISH[finish]}],
            "usage": usage(prompt, generated)}


def completion_chunk(rid: str, model: str, text: str, finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": OPENAI_FINISH[finish] if finish else None}]}


def chat(rid: str, model: str, text: str, finish: str, prompt: int, generated: int) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": OPENAI_FINISH[finish]}],
            "usage": usage(prompt, generated)}


def chat_chunk(rid: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": OPENAI_FINISH[finish] if finish else None}]}


def usage_chunk(rid: str, model: str, obj: str, prompt: int, generated: int) -> dict[str, Any]:
    """The last chunk OpenAI sends with ``stream_options.include_usage``: no choices, only usage."""
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model, "choices": [],
            "usage": usage(prompt, generated)}


def tgi_token(event: dict[str, Any], text: str) -> dict[str, Any]:
    return {"id": event["id"], "text": text, "logprob": event["logprob"], "special": event["special"]}


def tgi_details(finish: str, prompt: int, tokens: list[dict[str, Any]], seed: int | None) -> dict[str, Any]:
    return {"finish_reason": TGI_FINISH[finish], "prompt_tokens": prompt, "generated_tokens": len(tokens),
            "seed": seed, "prefill": [], "tokens": tokens}


def tgi_stream(event: dict[str, Any], token_text: str, done: dict[str, Any] | None, prompt: int,
               seed: int | None, full_text: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"token": tgi_token(event, token_text), "generated_text": None, "details": None}
    if done is not None:
        body["generated_text"] = full_text
        body["details"] = {"finish_reason": TGI_FINISH[done["finish"]], "prompt_tokens": prompt,
                           "generated_tokens": done["tokens"], "seed": seed}
    return body
