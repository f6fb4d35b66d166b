"""The ``Host`` check: a page in the operator's browser that rebinds its own DNS name to 127.0.0.1 still sends its
own name as ``Host``, so a server answers only the names it was bound to (and ``--allowed-hosts``).

A loopback server answers ``localhost``, ``127.0.0.1`` and ``[::1]``; a server bound to one address answers that
address; one bound to every address (``0.0.0.0``, ``::``) answers any name unless ``--allowed-hosts`` lists them.
``*`` in the list allows every name.

>>> HostCheck.names_for("127.0.0.1", ["api.example"]) >= {"localhost", "127.0.0.1", "api.example"}
True
>>> HostCheck.names_for("0.0.0.0", []) is None
True
"""

from __future__ import annotations

import json
from typing import Any, Iterable

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
_EVERY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


def host_name(header: str) -> str:
    """The name part of a ``Host`` header (port and IPv6 brackets removed), lower case.

    >>> host_name("[::1]:8000"), host_name("Example.COM:80")
    ('::1', 'example.com')
    """
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Pure ASGI middleware answering 421 ``host_not_allowed`` to a request whose ``Host`` is not served here."""

    def __init__(self, app: Any, *, bound: str, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.names = self.names_for(bound, allowed)

    @staticmethod
    def names_for(bound: str, allowed: Iterable[str]) -> frozenset[str] | None:
        """The ``Host`` names a server bound to ``bound`` answers (``None``: every name)."""
        from .server import is_loopback

        extra = {host_name(name) for name in allowed}
        if "*" in extra:
            return None
        bound = host_name(bound)
        if bound in _EVERY_ADDRESS and not extra:
            return None
        names = set(extra) | ({bound} if bound not in _EVERY_ADDRESS else set())
        if is_loopback(bound):
            names |= _LOOPBACK_NAMES
        return frozenset(names)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.names is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not name or name in self.names:  # no Host at all: not a browser (HTTP/1.0, an in-process replica call)
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"message": f"Host {name[:100]!r} is not served here; start the server with "
                                                "--allowed-hosts NAME to serve it", "type": "invalid_request_error",
                                     "code": "host_not_allowed"}}).encode()
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
