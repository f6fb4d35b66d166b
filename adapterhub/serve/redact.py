"""Error messages without the server's own paths: the registry, the base's folder and ``$ADAPTERHUB_HOME``
become ``<registry>``, ``<base>`` and ``<home>`` (a caller learns what failed, not where files live).

>>> Redactor({"/srv/reg": "<registry>"})("sha256 mismatch in /srv/reg/adapters/legal/2/a.safetensors")
'sha256 mismatch in <registry>/adapters/legal/2/a.safetensors'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


class Redactor:
    """Replaces each known root (longest first) with its placeholder."""

    def __init__(self, roots: Mapping[str, str]) -> None:
        self.roots = sorted(((root, label) for root, label in roots.items() if len(root) > 1),
                            key=lambda item: -len(item[0]))

    @classmethod
    def for_hub(cls, hub: Any) -> Redactor:
        """The roots of ``hub``: its registry (when one is configured), its base folder, ``$ADAPTERHUB_HOME``."""
        from .. import paths

        roots: dict[str, str] = {}
        try:
            registry = hub.registry
        except Exception:  # noqa: BLE001 - no registry: nothing of it to hide
            registry = None
        for path, label in ((getattr(registry, "root", None), "<registry>"), (hub.base.spec.name, "<base>"),
                            (paths.home(), "<home>")):
            if path and os.path.isabs(os.fspath(path)):
                roots[os.fspath(path)] = label
                roots[str(Path(path).resolve())] = label
        return cls(roots)

    def __call__(self, message: str) -> str:
        for root, label in self.roots:
            message = message.replace(root, label)
        return message
