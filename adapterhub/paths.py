"""Where adapterhub keeps things on disk, and how much of it there is.

* ``ADAPTERHUB_HOME`` (default ``~/.cache/adapterhub``): converted base models
  (``models/``), downloads (``downloads/``, empty after a conversion unless kept),
  the bench's adapters (``bench/``) and other caches.
* the registry root: ``ADAPTERHUB_REGISTRY`` if set; else the ``registry/``
  folder of the adapterhub project checkout you are working in (found by
  walking up from the current directory); else ``$ADAPTERHUB_HOME/registry``.
* the quickstart's training run folders: ``runs/`` beside the registry root.

:func:`cache_usage` sizes all of these; :func:`clean_cache` removes what can be made again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


def home() -> Path:
    """The cache root, ``$ADAPTERHUB_HOME`` or ``~/.cache/adapterhub``."""
    return Path(os.environ.get("ADAPTERHUB_HOME") or Path.home() / ".cache" / "adapterhub").expanduser()


def models_dir() -> Path:
    """Converted base models, one folder per embedded alias."""
    return home() / "models"


def downloads_dir() -> Path:
    """Downloaded files kept for a conversion (the default base's GGUF)."""
    return home() / "downloads"


def project_root(start: Path | None = None) -> Path | None:
    """The adapterhub checkout that contains ``start`` (default: cwd), if any."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        marker = folder / "pyproject.toml"
        if marker.is_file() and (folder / "registry").is_dir():
            try:
                if 'name = "adapterhub"' in marker.read_text(encoding="utf-8"):
                    return folder
            except OSError:
                return None
    return None


REGISTRY_DEFAULT = ("$ADAPTERHUB_REGISTRY if set, else registry/ of the adapterhub checkout you run inside, "
                    "else $ADAPTERHUB_HOME/registry")
"""The rule :func:`default_registry_root` follows, in words: every ``--registry`` help says this."""

REGISTRY_HELP = f"registry folder (default: {REGISTRY_DEFAULT})"


def default_registry_root() -> Path:
    """The registry root used when none is given (see the module docstring)."""
    return registry_origin()[0]


def registry_origin(root: str | os.PathLike | None = None) -> tuple[Path, str]:
    """``(root, why)``: the registry root that ``root`` (``None``: the default rule) means, and why.

    >>> registry_origin("/srv/adapters")
    (PosixPath('/srv/adapters'), 'given explicitly')
    """
    if root is not None:
        return Path(root).expanduser(), "given explicitly"
    env = os.environ.get("ADAPTERHUB_REGISTRY")
    if env:
        return Path(env).expanduser(), "from $ADAPTERHUB_REGISTRY"
    project = project_root()
    if project is not None:
        return project / "registry", f"the registry/ of the adapterhub checkout {project}"
    where = "$ADAPTERHUB_HOME" if os.environ.get("ADAPTERHUB_HOME") else "~/.cache/adapterhub ($ADAPTERHUB_HOME unset)"
    return home() / "registry", (f"the default under {where}: not inside an adapterhub checkout and "
                                 "$ADAPTERHUB_REGISTRY unset")


def runs_root(registry_root: str | os.PathLike) -> Path:
    """Where the quickstart keeps training run folders: ``runs/`` beside the registry folder.

    >>> runs_root("/work/adapterhub/registry")
    PosixPath('/work/adapterhub/runs')
    """
    return Path(registry_root).expanduser().resolve().parent / "runs"


@dataclass(frozen=True)
class CacheEntry:
    """One thing adapterhub keeps on disk."""

    kind: str  # "models", "downloads", "bench", "runs", "registry", "seats" or "other"
    path: Path
    bytes: int
    note: str  # what it is and what removing it costs

    @property
    def cleanable(self) -> bool:
        """Whether :func:`clean_cache` may remove it (everything but registries and unknown files)."""
        return self.kind in CLEANABLE


CLEANABLE = ("downloads", "bench", "models", "runs")
_NOTES = {
    "models": "converted base model; removing it means a new download and conversion on next use",
    "downloads": "downloaded model files (the default base's GGUF), only needed to convert again",
    "bench": "adapters, registry and tiny model of `adapterhub bench`; made again by the next bench",
    "runs": "training runs (adapter, metrics, plots) of `adapterhub train` or the quickstart; the registry keeps "
            "its own copy of what it registered (an adapter refused registration lives only here)",
    "seats": "CPU seats of running adapterhub processes (how they share the cores); tiny, freed as they end",
    "registry": "your registered adapters: never cleaned here (see `adapterhub registry rm`)",
    "other": "not adapterhub's own layout",
}


def folder_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except OSError:
                continue
    return total


def cache_usage() -> list[CacheEntry]:
    """What ``$ADAPTERHUB_HOME`` holds, plus the default registry and the quickstart's runs beside it.

    >>> [entry.kind for entry in cache_usage()]  # doctest: +SKIP
    ['models', 'downloads', 'bench', 'runs', 'registry']
    """
    entries: list[CacheEntry] = []
    seen: set[Path] = set()

    def add(kind: str, path: Path) -> None:
        if path.exists() and path.resolve() not in seen:
            seen.add(path.resolve())
            entries.append(CacheEntry(kind, path, folder_bytes(path), _NOTES[kind]))

    for model in sorted(models_dir().glob("*")) if models_dir().is_dir() else []:
        add("models", model)
    add("downloads", downloads_dir())
    add("bench", home() / "bench")
    registry = default_registry_root()
    for root in dict.fromkeys([registry, home() / "registry"]):
        add("runs", runs_root(root))
        add("registry", root)
    if _holds_runs(Path.cwd() / "runs"):  # `adapterhub train`'s default: runs/ in the current folder
        add("runs", Path.cwd() / "runs")
    add("seats", seats_dir())
    if home().is_dir():
        for path in sorted(home().iterdir()):
            if path.resolve() not in seen and path.resolve() != models_dir().resolve():
                add("other", path)
    return entries


def seats_dir() -> Path:
    """Where running adapterhub processes hold their CPU seats (:mod:`adapterhub.cpu`): ``$ADAPTERHUB_HOME/cpu``."""
    return home() / "cpu"


def _holds_runs(folder: Path) -> bool:
    """Whether ``folder`` holds training run folders (each with the ``recipe.yaml`` a run writes first)."""
    try:
        return folder.is_dir() and any((run / "recipe.yaml").is_file() for run in folder.iterdir())
    except OSError:
        return False


def clean_cache(kinds: Iterable[str]) -> list[CacheEntry]:
    """Remove the :func:`cache_usage` entries of these kinds; returns what was removed.

    Raises:
        ValueError: a kind that is not one of :data:`CLEANABLE` (registries are never removed here).
    """
    kinds = set(kinds)
    unknown = kinds - set(CLEANABLE)
    if unknown:
        raise ValueError(f"cannot clean {sorted(unknown)}; choose from {', '.join(CLEANABLE)}")
    removed = [entry for entry in cache_usage() if entry.kind in kinds]
    for entry in removed:
        if entry.path.is_dir():
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            entry.path.unlink(missing_ok=True)
    return removed
