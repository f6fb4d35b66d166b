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


REGISTRY_DEFAULT = ("$ADAPTERHUB_REGISTRY if set, else registry/ of the adapterhub checkout you run inside, "
                    "else $ADAPTERHUB_HOME/registry")
"""The rule :func:`default_registry_root` follows, in words: every ``--registry``/``--root`` help says this."""

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
