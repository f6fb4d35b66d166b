"""Talking to a Hugging Face Hub with ``huggingface_hub``: the environment, and one error mapping.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` once, when it is imported; :class:`HubSettings` reads them
when asked, so a process (or a test) that changes them later is honoured.
:func:`hub_errors` turns every ``huggingface_hub``/HTTP failure into one
adapterhub ``Hub*`` error whose message names the repo and the fix (and never
the token).

>>> settings = HubSettings.from_env()
>>> with hub_errors(HubRef("acme/legal-lora"), settings, action="pull"):  # doctest: +SKIP
...     snapshot_download("acme/legal-lora", endpoint=settings.endpoint)
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import (AdapterHubError, HubConnectionError, HubError, HubFileNotFoundError, HubPermissionError,
                     HubRepoNotFoundError, HubRevisionNotFoundError)

HUB_SCHEME = "hf://"


@dataclass(frozen=True)
class HubRef:
    """A model repository and an optional revision (branch, tag or commit sha)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_SCHEME + self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class HubSettings:
    """The Hub environment as it is now (``huggingface_hub`` itself reads it once, at import)."""

    endpoint: str
    cache_dir: Path
    offline: bool
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> HubSettings:
        """Read the environment now.

        ``endpoint``: ``HF_ENDPOINT``; ``cache_dir``: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``;
        ``token``: ``HF_TOKEN``, else the login file (``HF_TOKEN_PATH``, else ``$HF_HOME/token``);
        ``offline``: ``HF_HUB_OFFLINE``. Unset values fall back to ``huggingface_hub``'s defaults.

        >>> HubSettings.from_env().endpoint  # doctest: +SKIP
        'https://huggingface.co'
        """
        from huggingface_hub import constants

        env = os.environ
        home = env.get("HF_HOME")
        cache = env.get("HF_HUB_CACHE") or (str(Path(home) / "hub") if home else constants.HF_HUB_CACHE)
        token_file = Path(env.get("HF_TOKEN_PATH") or Path(home or constants.HF_HOME) / "token").expanduser()
        token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
        if not token and token_file.is_file():
            token = token_file.read_text(encoding="utf-8").strip()
        offline = env.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        return cls(endpoint=(env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"),
                   cache_dir=Path(cache).expanduser(), offline=offline or constants.HF_HUB_OFFLINE,
                   token=token or None)


def hf_api(settings: HubSettings) -> Any:
    """An ``HfApi`` for ``settings`` (endpoint and token), identifying itself as adapterhub."""
    from huggingface_hub import HfApi

    from .. import __version__

    return HfApi(endpoint=settings.endpoint, token=settings.token, library_name="adapterhub",
                 library_version=__version__)


@contextlib.contextmanager
def hub_errors(ref: HubRef, settings: HubSettings, *, action: str) -> Iterator[None]:
    """Turn ``huggingface_hub`` / HTTP failures inside the block into one adapterhub ``Hub*`` error.

    Args:
        ref: the repo (and revision) being talked to, for the message.
        settings: the environment, for the endpoint and offline hints.
        action: a verb phrase for the message (``"pull"``, ``"push to"``).

    >>> with hub_errors(HubRef("acme/x"), HubSettings.from_env(), action="pull"):  # doctest: +SKIP
    ...     snapshot_download("acme/x")
    """
    try:
        yield
    except AdapterHubError:
        raise
    except Exception as error:
        mapped = _map_error(error, ref, settings, action)
        if mapped is None:
            raise
        raise mapped from error


def _map_error(error: BaseException, ref: HubRef, settings: HubSettings, action: str) -> HubError | None:
    from huggingface_hub import errors as hf

    revision = ref.revision or "main"
    if isinstance(error, hf.LocalEntryNotFoundError):  # nothing usable cached; the cause says why
        cause = error.__cause__
        if settings.offline or isinstance(cause, hf.OfflineModeIsEnabled):
            return HubConnectionError(f"{ref.repo_id}@{revision} is not in the local Hugging Face cache "
                                      f"({settings.cache_dir}) and offline mode (HF_HUB_OFFLINE=1) forbids "
                                      "downloading it; pull it once online, or unset HF_HUB_OFFLINE")
        mapped = _map_error(cause, ref, settings, action) if cause is not None else None
        return mapped or HubConnectionError(f"could not {action} {ref.repo_id}@{revision} from {settings.endpoint} "
                                            f"and it is not cached in {settings.cache_dir}; check the network")
    if isinstance(error, hf.RevisionNotFoundError):
        return HubRevisionNotFoundError(f"{ref.repo_id} has no revision {revision!r}; use an existing branch, "
                                        "tag or commit sha (the default is 'main')")
    if isinstance(error, hf.GatedRepoError):
        return HubPermissionError(f"{ref.repo_id} is gated: accept its conditions on the repo page, then use a "
                                  "token of that account (HF_TOKEN or `hf auth login`)")
    if isinstance(error, hf.RepositoryNotFoundError):
        hint = "" if settings.token else "; if it is private, set HF_TOKEN or run `hf auth login`"
        return HubRepoNotFoundError(f"no model repository {ref.repo_id!r} at {settings.endpoint} (or your token "
                                    f"cannot see it){hint}; check the org/name spelling")
    if isinstance(error, hf.EntryNotFoundError):
        return HubFileNotFoundError(f"a file of the adapter is missing from {ref.repo_id}@{revision}: "
                                    f"{getattr(error, 'server_message', None) or error}")
    if isinstance(error, hf.OfflineModeIsEnabled):
        return HubConnectionError(f"cannot {action} {ref.repo_id}: offline mode (HF_HUB_OFFLINE=1) is on")
    if isinstance(error, hf.HfHubHTTPError) and error.response is not None:
        return _map_status(error, ref, settings, action)
    if isinstance(error, _transport_errors()):
        offline_hint = ", or set HF_HUB_OFFLINE=1 to use what is cached" if action == "pull" else ""
        return HubConnectionError(f"cannot reach the Hub at {settings.endpoint} to {action} {ref.repo_id} "
                                  f"({type(error).__name__}); check the network and HF_ENDPOINT{offline_hint}")
    if isinstance(error, ValueError) and "README.md" in str(error):
        return HubError(f"the Hub rejected the model card of {ref.repo_id}: {error}")
    return None


def _map_status(error: Any, ref: HubRef, settings: HubSettings, action: str) -> HubError:
    status = error.response.status_code
    if status == 401:
        fix = ("the token was rejected; set a valid HF_TOKEN or run `hf auth login`" if settings.token
               else "a token is required; set HF_TOKEN or run `hf auth login`")
        return HubPermissionError(f"cannot {action} {ref.repo_id} (401 Unauthorized): {fix}")
    if status == 403:
        return HubPermissionError(f"cannot {action} {ref.repo_id} (403 Forbidden): the token lacks the rights for "
                                  f"namespace {ref.repo_id.split('/')[0]!r}; use a token with write access to it")
    detail = getattr(error, "server_message", None) or f"HTTP {status}"
    return HubError(f"the Hub at {settings.endpoint} failed to {action} {ref.repo_id} (HTTP {status}): {detail}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):  # the HTTP client huggingface_hub uses (httpx2 since 2.x)
        with contextlib.suppress(ImportError):
            found.append(importlib.import_module(module).TransportError)
    return tuple(found)
