"""The web console: ``/ui`` (static files shipped in the package) and the JSON routes its pages read.

- ``GET /ui`` — the page (registry browser, playground, live view; see ``adapterhub/serve/ui/``);
- ``GET /v1/whoami`` — what the caller's key may do (the page hides admin actions from other keys);
- ``GET /v1/registry/adapters`` — adapter summaries, filtered (``q``, ``domain``, ``method``, ``base``,
  ``tag``) and paged (``limit``, ``offset``);
- ``GET /v1/registry/adapters/{name}`` — one adapter's versions, metrics, recipe, contract, lineage,
  channel history and model card;
- ``GET /v1/registry/adapters/{name}/{version}/export`` — the version as a zip of what ``adapterhub registry export`` writes;
- ``GET /v1/console/errors`` — the last failed requests (admin keys; everyone without ``--auth``).

A key restricted with ``--allow`` sees and exports only its adapters; every route authenticates like the
API routes do. The page keeps the key in the browser tab's session storage only.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .catalog import Filters, adapter_story, catalog_page
from .protocol import ServeError

UI_DIR = Path(__file__).with_name("ui")
"""The console's static files (HTML, JavaScript, CSS), shipped as package data."""


def add_console_routes(app: FastAPI, serving: Any) -> None:
    """Add ``/ui``, its static files and the JSON routes it reads to ``app``."""
    engine, gate = serving.engine, serving.gate
    app.mount("/ui/static", StaticFiles(directory=UI_DIR), name="console-static")

    @app.get("/ui", response_class=HTMLResponse)
    async def console_page() -> HTMLResponse:
        return HTMLResponse((UI_DIR / "index.html").read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                                                "style-src 'self'; script-src 'self'"})

    @app.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        key = await gate.authenticate(request)
        routing = engine.hub.router is not None  # the playground offers model="auto"
        if key is None:
            return {"auth": False, "name": None, "admin": True, "allow": [], "routing": routing}
        return {"auth": True, "name": key.name, "admin": key.admin, "allow": list(key.allow), "routing": routing}

    def allowed(key: Any) -> list[str] | None:
        """The adapter names ``key`` may see (``None``: every name)."""
        if key is None or not key.allow:
            return None
        return sorted({entry.split("@", 1)[0] for entry in key.allow if not entry.startswith("hf://")})

    @app.get("/v1/registry/adapters")
    async def adapters(request: Request, q: str = "", domain: str = "", method: str = "", base: str = "",
                       tag: str = "", limit: int = 50, offset: int = 0) -> dict[str, Any]:
        key = await gate.authenticate(request)
        filters = Filters(query=q, domain=domain, method=method, base=base, tag=tag)
        return await run_in_threadpool(lambda: catalog_page(engine.hub.registry, filters, limit=limit, offset=offset,
                                                            names=allowed(key)))

    @app.get("/v1/registry/adapters/{name}")
    async def adapter(request: Request, name: str) -> dict[str, Any]:
        key = await gate.authenticate(request)
        versions = await run_in_threadpool(_versions, engine.hub.registry, name, allowed(key))
        history, channels = await run_in_threadpool(_channels, engine.hub.registry, name)
        return {**adapter_story(versions, card=_model_card, history=history), "channels": channels}

    @app.get("/v1/registry/adapters/{name}/{version}/export")
    async def export(request: Request, name: str, version: int) -> Response:
        key = await gate.authenticate(request)
        versions = await run_in_threadpool(_versions, engine.hub.registry, name, allowed(key))
        record = next((r for r in versions if r.version == version), None)
        if record is None:
            raise ServeError(404, f"{name} has no version {version} (versions: "
                             f"{', '.join(str(r.version) for r in versions)})", code="model_not_found")
        data = await run_in_threadpool(_zip, engine.hub.registry, record)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{record.name}-{record.version}.zip"'})

    @app.get("/v1/console/errors")
    async def recent_errors(request: Request) -> dict[str, Any]:
        await gate.authenticate(request, admin=True)
        return {"data": list(reversed(engine.metrics.recent_errors))}


def _versions(registry: Any, name: str, allowed: list[str] | None) -> list[Any]:
    """Every version of ``name`` the caller may see (404 otherwise: a restricted key learns nothing)."""
    visible = allowed is None or name in allowed
    versions = registry.list(names=(name,)) if visible and _plausible(name) else []
    if not versions:
        raise ServeError(404, f"no adapter named {name!r} in this server's registry", code="model_not_found")
    return versions


def _channels(registry: Any, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``name``'s channel moves (newest first) and each channel's holder and canary now."""
    rows = registry.history(name)
    states = [registry.channel(name, channel) for channel in sorted({row.channel for row in rows})]
    return ([row.to_dict() for row in reversed(rows)],
            [{"channel": s.channel, "holder": s.holder, "canary": s.canary, "percent": s.canary_percent}
             for s in states])


def _model_card(record: Any) -> str:
    from ..hf.modelcard import render_model_card
    from ..registry.files import parse_json

    config_path = record.path / "adapter_config.json"
    config = parse_json(config_path.read_bytes(), where=str(config_path)) if config_path.is_file() else {}
    return render_model_card(record.manifest, config, repo_id=f"<org>/{record.name}")


def _zip(registry: Any, record: Any) -> bytes:
    """The version as ``adapterhub registry export`` writes it (verified files, the base's public id, model card,
    ``label_scoring.py`` for decoder classifiers), zipped in memory (adapters are small)."""
    from ..hf.export import export_adapter

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as scratch:
        folder = export_adapter(record.ref, Path(scratch) / "export", registry=registry).path
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, f"{record.name}-{record.version}/{path.name}")
    return buffer.getvalue()


def _plausible(name: str) -> bool:
    """Whether ``name`` could be an adapter name (anything else is simply not there: 404, not 400)."""
    from ..errors import InvalidNameError
    from ..registry.refs import validate_name

    try:
        validate_name(name)
    except InvalidNameError:
        return False
    return True
