"""A registered adapter as a folder to share: plain PEFT files that name the base's public id, the manifest,
a model card (``README.md``) and, for decoder classifiers, ``label_scoring.py``.

``adapterhub registry export`` and ``adapterhub push`` both write it. The registry's own copy keeps the bytes it
was trained with (``base_model_name_or_path`` is where the base was on the training machine); the shared copy
names the base's Hub id instead, and the manifest's checksum of ``adapter_config.json`` follows the change.
The base's fingerprint travels in the manifest and the card.

>>> export_adapter("support@1", "out/support")  # doctest: +SKIP
Export(path=PosixPath('out/support'), base_id='HuggingFaceTB/SmolLM2-135M-Instruct', files=[...])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry.manifest import CONFIG_FILE, MANIFEST_FILE, file_entry
from .label_snippet import SCRIPT_FILE, has_label_scoring, label_scoring_script
from .modelcard import CARD_FILE, hub_base_model, render_model_card


@dataclass(frozen=True)
class Export:
    """What :func:`export_adapter` wrote."""

    path: Path
    base_id: str | None  # the public id written as base_model_name_or_path (None: none known, left as it was)
    files: list[str]


def export_adapter(ref: str, directory: str | Path, *, registry: Any = None, base_id: str | None = None,
                   repo_id: str | None = None) -> Export:
    """Write a verified, shareable copy of a registered adapter to ``directory``.

    Args:
        ref: registry reference (``name``, ``name@3``, ``name@tag``).
        directory: a new or empty folder.
        registry: a :class:`~adapterhub.registry.Registry` (default: the default registry).
        base_id: the base's public id to write (default: the embedded base's Hub id, or a Hub id the adapter
            already names; a local path is never written when one is known).
        repo_id: where the copy will live on the Hub (``org/name``), for the card's usage lines
            (default ``<your-org>/<name>``).

    Returns:
        An :class:`Export`: the folder, the base id written (``None`` when no public id is known) and the files.

    Raises:
        AdapterNotFoundError / IntegrityError: as :meth:`Registry.export`.
        ConfigError: ``directory`` exists and is not empty.
    """
    from ..registry import Registry

    registry = registry if registry is not None else Registry()
    record = registry.get(ref)
    folder = registry.export(record.ref, directory)
    manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
    config = json.loads((folder / CONFIG_FILE).read_bytes())
    public = base_id or hub_base_model(manifest, config)
    if public:
        config["base_model_name_or_path"] = public
        data = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
        (folder / CONFIG_FILE).write_bytes(data)
        manifest["files"][CONFIG_FILE] = file_entry(data)  # the shared copy's manifest describes its own bytes
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    (folder / CARD_FILE).write_text(render_model_card(manifest, config, repo_id=repo_id or f"<your-org>/{record.name}"),
                                    encoding="utf-8")
    if has_label_scoring(manifest):
        script = label_scoring_script(manifest["task"], base_id=public or "<the base model>")
        (folder / SCRIPT_FILE).write_text(script, encoding="utf-8")
    return Export(path=folder, base_id=public, files=sorted(path.name for path in folder.iterdir()))
