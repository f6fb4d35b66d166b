"""The registry as the web console shows it: one summary row per adapter name, filtered and paged, and
one adapter's whole story (versions, metrics, recipe, contract, lineage, channel history, model card).

Every page is answered by the registry's index (:class:`~adapterhub.registry.listing.ListQuery` with
``latest=True``: one row per name), so a page stays cheap at 10,000 entries; a key's allow list is a filter
of the same query, applied before anything is counted or paged.

>>> page = catalog_page(registry, Filters(query="fin"), limit=20, offset=0)  # doctest: +SKIP
>>> page["total"], [row["name"] for row in page["data"]]  # doctest: +SKIP
(1, ['finance'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..registry.headline import headline as registry_headline

MAX_PAGE = 200
"""Most rows one page may ask for."""

HEADLINE_METRICS = ("accuracy", "micro_f1", "exact_match", "macro_f1", "loss")
"""The first of these a version's test (else validation) metrics hold is its headline figure."""


@dataclass(frozen=True)
class Filters:
    """What the adapter list is narrowed to (every field optional; an adapter is judged by its newest version,
    except ``tag``, which any version may carry)."""

    query: str = ""  # text in the name or description, any case
    domain: str = ""
    method: str = ""
    base: str = ""  # a base fingerprint or its leading part
    tag: str = ""  # a tag or channel

    def registry_filters(self) -> dict[str, Any]:
        """The same filters as :meth:`Registry.list <adapterhub.registry.Registry.list>` keywords."""
        chosen = {"text": self.query, "domain": self.domain, "method": self.method, "base": self.base,
                  "tag": self.tag}
        return {key: value for key, value in chosen.items() if value}


def headline(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"split", "metric", "value"}``: the figure a list shows for a version, or ``None`` without metrics."""
    found = registry_headline(metrics, splits=("test", "validation"), names=HEADLINE_METRICS)
    return None if found is None else dict(zip(("split", "metric", "value"), found))


def group_by_name(records: Iterable[Any]) -> dict[str, list[Any]]:
    """Records grouped by adapter name, each group ordered by version."""
    groups: dict[str, list[Any]] = {}
    for record in records:
        groups.setdefault(record.name, []).append(record)
    for versions in groups.values():
        versions.sort(key=lambda record: record.version)
    return groups


def catalog_page(registry: Any, filters: Filters = Filters(), *, limit: int = 50, offset: int = 0,
                 names: Sequence[str] | None = None) -> dict[str, Any]:
    """One page of adapter summaries: ``{"total", "limit", "offset", "data": [...], "facets": {...}}``.

    Args:
        registry: the :class:`~adapterhub.registry.Registry` to read.
        filters: what to keep.
        limit: rows per page (1..:data:`MAX_PAGE`).
        offset: rows to skip.
        names: the only adapter names the caller may see (a key's allow list; ``None``: every name).

    ``facets`` lists the domains, methods and tags of what the caller may see, for the filter menus.
    """
    limit, offset = max(1, min(int(limit), MAX_PAGE)), max(0, int(offset))
    scope = {} if names is None else {"names": tuple(names)}
    if names is not None and not names:
        return {"total": 0, "limit": limit, "offset": offset, "data": [],
                "facets": {"domains": [], "methods": [], "tags": []}}
    chosen = {**filters.registry_filters(), **scope}
    latest = registry.list(latest=True, limit=limit, offset=offset, **chosen)
    versions = group_by_name(registry.list(names=tuple(r.name for r in latest))) if latest else {}
    return {"total": registry.count(latest=True, **chosen), "limit": limit, "offset": offset,
            "data": [summary(versions[record.name]) for record in latest],
            "facets": registry.facets(**scope)}


def summary(versions: Sequence[Any]) -> dict[str, Any]:
    """One adapter's row in the list: its latest version and what a reader compares at a glance."""
    latest = versions[-1]
    base = latest.manifest.get("base") or {}
    return {"name": latest.name, "latest": latest.version, "versions": len(versions), "domain": latest.domain,
            "method": latest.method, "task": (latest.manifest.get("task") or {}).get("type", "generation"),
            "description": latest.manifest.get("description") or "", "base": base.get("name"),
            "tags": sorted({tag for record in versions for tag in record.tags}),
            "created": latest.manifest.get("created"), "headline": headline(latest.manifest.get("metrics"))}


def adapter_story(versions: Sequence[Any], *, card: Callable[[Any], str],
                  history: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Everything the adapter page shows: every version (newest first) with its metrics, recipe, contract
    and lineage, the channel history (newest move first), and the model card of the latest version
    (``card(record)``)."""
    latest = versions[-1]
    return {**summary(versions), "card": card(latest), "history": list(history),
            "versions_detail": [_version(record) for record in reversed(versions)]}


def _version(record: Any) -> dict[str, Any]:
    manifest = record.manifest
    source = manifest.get("source") or {}
    parents = [parent.get("ref") if isinstance(parent, Mapping) else str(parent)
               for parent in source.get("parents") or source.get("adapters") or ()]
    return {"ref": record.ref, "version": record.version, "tags": list(record.tags), "method": record.method,
            "created": manifest.get("created"), "task": manifest.get("task") or {}, "metrics": manifest.get("metrics") or {},
            "headline": headline(manifest.get("metrics")), "recipe": manifest.get("recipe"),
            "contract": manifest.get("contract") or (manifest.get("recipe") or {}).get("serve"),
            "source": {"kind": source.get("kind"), "parents": [p for p in parents if p],
                       **{k: v for k, v in source.items() if k in ("repo_id", "revision", "how", "weights")}},
            "base": manifest.get("base") or {},
            "files": {name: entry.get("size") for name, entry in (manifest.get("files") or {}).items()
                      if isinstance(entry, Mapping)}}
