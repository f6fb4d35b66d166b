"""The registry as the web console shows it: one summary row per adapter name, filtered and paged, and
one adapter's whole story (versions, metrics, recipe, contract, lineage, channel history, model card).

Pure functions over :class:`~adapterhub.registry.AdapterRecord` lists, so the routes in :mod:`.console`
stay thin and a key's allow list is applied before anything is counted or paged.

>>> page = catalog_page(records, query="fin", limit=20, offset=0)  # doctest: +SKIP
>>> page["total"], [row["name"] for row in page["data"]]  # doctest: +SKIP
(1, ['finance'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

MAX_PAGE = 200
"""Most rows one page may ask for."""

HEADLINE_METRICS = ("accuracy", "micro_f1", "exact_match", "macro_f1", "loss")
"""The first of these a version's test (else validation) metrics hold is its headline figure."""


@dataclass(frozen=True)
class Filters:
    """What the adapter list is narrowed to (every field optional; text matches are case-insensitive)."""

    query: str = ""  # a substring of the name or description
    domain: str = ""
    method: str = ""
    base: str = ""  # a substring of the base's name or its fingerprint
    tag: str = ""  # a tag or channel any version carries

    def keeps(self, versions: Sequence[Any]) -> bool:
        latest = versions[-1]
        base = latest.manifest.get("base") or {}
        text = f"{latest.name} {latest.manifest.get('description') or ''}".lower()
        return ((not self.query or self.query.lower() in text)
                and (not self.domain or (latest.domain or "").lower() == self.domain.lower())
                and (not self.method or latest.method.lower() == self.method.lower())
                and (not self.base or self.base.lower() in f"{base.get('name', '')} {base.get('fingerprint', '')}".lower())
                and (not self.tag or any(self.tag in record.tags for record in versions)))


def headline(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{"split", "metric", "value"}``: the figure a list shows for a version, or ``None`` without metrics."""
    for split in ("test", "validation"):
        values = (metrics or {}).get(split) or {}
        for metric in HEADLINE_METRICS:
            if isinstance(values.get(metric), (int, float)):
                return {"split": split, "metric": metric, "value": values[metric]}
    return None


def group_by_name(records: Iterable[Any]) -> dict[str, list[Any]]:
    """Records grouped by adapter name, each group ordered by version."""
    groups: dict[str, list[Any]] = {}
    for record in records:
        groups.setdefault(record.name, []).append(record)
    for versions in groups.values():
        versions.sort(key=lambda record: record.version)
    return groups


def catalog_page(records: Iterable[Any], *, filters: Filters = Filters(), limit: int = 50, offset: int = 0,
                 visible: Callable[[str], bool] = lambda name: True) -> dict[str, Any]:
    """One page of adapter summaries: ``{"total", "limit", "offset", "data": [...], "facets": {...}}``.

    Args:
        records: every registry entry (all versions).
        filters: what to keep.
        limit: rows per page (1..:data:`MAX_PAGE`).
        offset: rows to skip.
        visible: whether the caller may see an adapter name (a key's allow list).

    ``facets`` lists the domains, methods and tags of what the caller may see, for the filter menus.
    """
    limit, offset = max(1, min(int(limit), MAX_PAGE)), max(0, int(offset))
    groups = {name: versions for name, versions in group_by_name(records).items() if visible(name)}
    kept = [versions for name, versions in sorted(groups.items()) if filters.keeps(versions)]
    every = [record for versions in groups.values() for record in versions]
    return {"total": len(kept), "limit": limit, "offset": offset,
            "data": [summary(versions) for versions in kept[offset:offset + limit]],
            "facets": {"domains": sorted({r.domain for r in every if r.domain}),
                       "methods": sorted({r.method for r in every}),
                       "tags": sorted({tag for r in every for tag in r.tags})}}


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
