"""Where adapterhub keeps things on disk.

* ``ADAPTERHUB_HOME`` (default ``~/.cache/adapterhub``): converted base models
  and other caches.
* the registry root: ``ADAPTERHUB_REGISTRY`` if set; else the ``registry/``
  folder of the adapterhub project checkout you are working in (found by
  walking up from the current directory); else ``$ADAPTERHUB_HOME/registry``.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root, ``$ADAPTERHUB_HOME`` or ``~/.cache/adapterhub``."""
    return Path(os.environ.get("ADAPTERHUB_HOME") or Path.home() / ".cache" / "adapterhub").expanduser()


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


def default_registry_root() -> Path:
    """The registry root used when none is given (see the module docstring)."""
    env = os.environ.get("ADAPTERHUB_REGISTRY")
    if env:
        return Path(env).expanduser()
    project = project_root()
    if project is not None:
        return project / "registry"
    return home() / "registry"
