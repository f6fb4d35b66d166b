"""Who may ask for what: the ``Authorization: Bearer`` key, its rate limit, admin rights and the models
it may use. Every refusal is a :class:`~.protocol.ServeError` in OpenAI's shape.

>>> gate = Gate(engine, KeyStore(path))  # doctest: +SKIP
>>> key = await gate.authenticate(request)  # doctest: +SKIP

Keys are looked up in a worker thread (SQLite never runs on the event loop) and a verified key is
remembered for :data:`KEY_CACHE_S` seconds (a revocation takes effect within that); a key store locked
by another process answers 503 ``keys_busy`` after :data:`KEY_BUSY_S` seconds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .access import note
from .auth import ApiKey, KeyStore, KeyStoreBusy, RateLimiter
from .protocol import ServeError

KEY_CACHE_S = 5.0
KEY_BUSY_S = 2.0
_CACHED = 10_000  # verified keys remembered at most


class Gate:
    """Checks each request's key (``keys=None``: no auth, everyone may use every model)."""

    def __init__(self, engine: Any, keys: KeyStore | None):
        self.engine = engine
        self.keys = keys
        if keys is not None:
            keys.busy_timeout = min(keys.busy_timeout, KEY_BUSY_S)
        self.limiter = RateLimiter()
        self._verified: dict[bytes, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    async def authenticate(self, request: Request, *, admin: bool = False) -> ApiKey | None:
        """The request's valid key (``None`` without auth), noted for the access log.

        Raises:
            ServeError: 401 no or bad key, 403 not an admin key where one is needed, 429 over its limit.
        """
        if self.keys is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ServeError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
        key = await self._verify(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise ServeError(401, "invalid or revoked API key", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
        note(request, key=key.name)
        request.scope.setdefault("state", {})["admin"] = key.admin
        if admin and not key.admin:
            raise ServeError(403, f"key {key.name!r} is not an admin key (adapterhub keys create NAME --admin)",
                             code="admin_required")
        wait = self.limiter.check(key.name, key.rpm)
        if wait is not None:
            raise ServeError(429, f"key {key.name!r} is over its limit of {key.rpm} requests per minute",
                             code="rate_limit_exceeded", headers={"Retry-After": str(wait)})
        return key

    async def _verify(self, token: str) -> ApiKey | None:
        """The live key ``token`` is (cached for :data:`KEY_CACHE_S`), looked up off the event loop."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            key = await run_in_threadpool(self.keys.verify, token)
        except KeyStoreBusy:
            raise ServeError(503, "the key store is busy (another process holds its lock); retry shortly",
                             code="keys_busy", headers={"Retry-After": "1"}) from None
        if key is not None:
            with self._lock:
                if len(self._verified) >= _CACHED:
                    self._verified = {d: entry for d, entry in self._verified.items() if entry[1] > now}
                    if len(self._verified) >= _CACHED:
                        self._verified.clear()
                self._verified[digest] = (key, now + KEY_CACHE_S)
        return key

    def permit(self, request: Request, key: ApiKey | None, model: str) -> str | None:
        """The adapter reference ``model`` means now (``None``: the bare base; a channel: its version), if ``key``
        may use it.

        Raises:
            ServeError: 403 the key's allow list does not cover it, or it names ``hf://`` and the key may not pull
                from the Hub (:meth:`~.auth.ApiKey.may_pull`); or the engine's errors for ``model``.
        """
        note(request, model=model[:200])
        ref = self.engine.model_ref(model)
        pulls = [] if key is None or ref is None else [part for part in _parts(ref) if part.startswith("hf://")]
        if any(not key.may_pull(part) for part in pulls):
            raise ServeError(403, f"key {key.name!r} may not pull {model!r} from the Hugging Face Hub (an admin key "
                             "may, or one created with --allow 'hf://ORG/*')", code="hf_pull_not_allowed")
        if key is not None and not all(key.may_use(part) for part in _parts(ref) if part not in pulls):
            raise ServeError(403, f"key {key.name!r} may not use {model!r} (allowed: {', '.join(key.allow)})",
                             code="model_not_allowed")
        return self.engine.rollout.route(ref)  # a channel (finance@prod) runs on the version it holds now


def _parts(ref: str | None) -> list[str | None]:
    """The adapters ``ref`` names: a weighted mix's members, else ``ref`` itself."""
    from ..runtime.mixing import parse_mix

    mix = None if ref is None else parse_mix(ref)
    return [name for name, _ in mix.parts] if mix is not None else [ref]
