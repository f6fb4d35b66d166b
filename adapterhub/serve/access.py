"""One JSON access-log line and the request metrics per HTTP request, written after its last byte.

Handlers add what they learn with :func:`note` (key name, adapter, token counts,
and the text, which is logged only with ``--log-text``). The API key itself is
never logged: only the name it was created under.

>>> note(request, adapter="finance", prompt_tokens=12)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

access_log = logging.getLogger("adapterhub.access")

ENDPOINTS = frozenset({"/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/tag",
                       "/generate", "/generate_stream", "/", "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/health",
                       "/ready", "/metrics"})
_TEXT = ("text_in", "text_out")


def note(request: Any, **fields: Any) -> None:
    """Add ``fields`` to this request's access-log record."""
    record = request.scope.get("state", {}).get("access")
    if record is not None:
        record.update(fields)


class AccessLog:
    """Pure ASGI middleware (so streamed answers are timed to their end)."""

    def __init__(self, app: Any, *, metrics: Any, log_text: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_text = log_text

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record: dict[str, Any] = {"key": None, "adapter": "-"}
        scope.setdefault("state", {})["access"] = record
        status = [500]
        started = time.perf_counter()

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if record.get("served_by"):  # model="auto": say what the router chose (serve/routing.py)
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"x-adapterhub-served-by", str(record["served_by"]).encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            if endpoint not in ("/metrics", "/health", "/ready"):
                self.metrics.request(endpoint, str(record["adapter"]), status[0], seconds)
            line = {"ts": round(time.time(), 3), "method": scope.get("method"), "path": endpoint,
                    "status": status[0], "latency_ms": round(seconds * 1e3, 1)}
            line.update({k: v for k, v in record.items() if k not in _TEXT})
            if self.log_text:
                line.update({k: record.get(k) for k in _TEXT})
            access_log.info(json.dumps(line, ensure_ascii=False, default=str))
