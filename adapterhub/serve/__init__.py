"""``adapterhub serve``: an OpenAI- and LoRAX-compatible HTTP service over one :class:`~adapterhub.AdapterHub`.

Requests name their adapter (``model`` / ``adapter_id``); a scheduler keeps one running
batch in which rows of every adapter (LoRA, prefix, bare base) advance together
token by token (:mod:`.scheduler`, on :mod:`adapterhub.runtime.stepping`). Keys,
limits, metrics and the access log wrap the routes, not the scheduler.

>>> from adapterhub import AdapterHub
>>> from adapterhub.serve import ServeOptions, ServerThread, build_app
>>> hub = AdapterHub("smollm2-135m-instruct")  # doctest: +SKIP
>>> with ServerThread(build_app(hub, ServeOptions(max_rows=32))) as server:  # doctest: +SKIP
...     print(server.url)
"""

from __future__ import annotations

from .app import build_app
from .auth import ApiKey, KeyStore
from .engine import Engine, ServeOptions
from .server import ServerThread, check_exposure, serve

__all__ = ["ApiKey", "Engine", "KeyStore", "ServeOptions", "ServerThread", "build_app", "check_exposure", "serve"]
