"""Pull adapters from, and push them to, the Hugging Face Hub (or any Hub-compatible server).

A pull downloads only the adapter's files at one commit, checks them, and
registers a new version whose source is ``{"kind": "pulled", "repo_id", "commit"}``;
the same commit pulled again returns the version it already made. Repos made by
plain PEFT (no ``adapterhub.json``) and repos we pushed (manifest with domain,
task, labels and metrics) both work. A push uploads the PEFT files, the manifest
and a model card in one commit.

The standard environment is read at call time: ``HF_ENDPOINT``, ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_TOKEN`` (else the ``hf auth login`` token file) and
``HF_HUB_OFFLINE=1`` (pull only what the cache already holds). Tokens are
never printed.

>>> parse_hub_ref("hf://acme/legal-lora@v2")
HubRef(repo_id='acme/legal-lora', revision='v2')
>>> record = pull(Registry(), "acme/legal-lora", revision="v2")  # doctest: +SKIP
>>> push(Registry(), "legal@3", "acme/legal-lora").commit  # doctest: +SKIP
'5f1c...'
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import (AdapterHubError, HubConnectionError, HubError, HubFileNotFoundError,
                     HubIncompatibleBaseError, HubNotAnAdapterError, HubPermissionError, HubPickleWeightsError,
                     HubRepoNotFoundError, HubRevisionNotFoundError, IncompatibleBaseError, InvalidNameError)
from .manifest import CONFIG_FILE, MANIFEST_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE, check_file

HUB_SCHEME = "hf://"
CARD_FILE = "README.md"
PULL_PATTERNS = [CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, CARD_FILE]
_ADAPTER_WORDS = {"lora", "qlora", "dora", "adapter", "adapters", "peft", "prefix", "tuning"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


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


@dataclass(frozen=True)
class PushResult:
    """Where a push landed."""

    repo_id: str
    revision: str
    commit: str
    url: str


def is_hub_ref(ref: Any) -> bool:
    """Whether ``ref`` names a Hub adapter (``hf://org/repo[@revision]``) rather than a registry entry.

    >>> is_hub_ref("hf://acme/legal-lora"), is_hub_ref("legal@3")
    (True, False)
    """
    return isinstance(ref, str) and ref.startswith(HUB_SCHEME)


def parse_hub_ref(ref: str, *, revision: str | None = None) -> HubRef:
    """Parse ``org/repo``, ``org/repo@revision`` or ``hf://org/repo@revision``.

    Args:
        ref: the reference; the ``hf://`` scheme is optional.
        revision: a revision given separately; it must agree with one inside ``ref``.

    Returns:
        The :class:`HubRef`.

    Raises:
        InvalidNameError: not a model repo id (``org/name``), a dataset/space URI, a path
            inside the repo, or two different revisions.

    >>> parse_hub_ref("acme/legal-lora", revision="main")
    HubRef(repo_id='acme/legal-lora', revision='main')
    """
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    usage = "use 'org/repo', 'org/repo@revision' or 'hf://org/repo@revision'"
    try:
        uri = parse_hf_uri(ref if is_hub_ref(ref) else HUB_SCHEME + str(ref))
    except HfUriError as error:
        raise InvalidNameError(f"invalid Hub reference {ref!r} ({str(error).strip()}); {usage}") from None
    if uri.type != "model" or uri.path_in_repo:
        raise InvalidNameError(f"invalid Hub reference {ref!r}: adapters live at the root of model repos; {usage}")
    if revision is not None and uri.revision not in (None, revision):
        raise InvalidNameError(f"{ref!r} names revision {uri.revision!r} but revision={revision!r} was also given; "
                               "give the revision once")
    return HubRef(uri.id, revision or uri.revision)


def pull(registry: Any, repo_id: str, *, revision: str | None = None, name: str | None = None,
         domain: str | None = None, base: Any = None) -> Any:
    """Download an adapter from the Hub and register it (once per commit).

    Args:
        registry: the :class:`adapterhub.Registry` to add it to.
        repo_id: ``org/repo``, ``org/repo@revision`` or ``hf://org/repo@revision``.
        revision: branch, tag or commit sha (default: the repo's ``main``).
        name: registry name (default: the manifest's name, else the repo name).
        domain: domain label (default: the manifest's domain, else the repo name
            without adapter words: ``acme/legal-lora`` -> ``legal``).
        base: an :class:`adapterhub.Base` the adapter must fit.

    Returns:
        The :class:`AdapterRecord`; the existing one if this commit was pulled before under this name.

    Raises:
        InvalidNameError: malformed reference or name.
        HubRepoNotFoundError, HubRevisionNotFoundError, HubFileNotFoundError: no such repo/revision/file.
        HubNotAnAdapterError: the repo holds no ``adapter_config.json``.
        HubPickleWeightsError: the weights exist only as pickle.
        HubIncompatibleBaseError: the adapter does not fit ``base``.
        HubPermissionError: private or gated repo and no (valid) token.
        HubConnectionError: the endpoint is unreachable, or offline and the revision is not cached.

    >>> pull(Registry(), "hf://acme/legal-lora@v2", base=load_base()).ref  # doctest: +SKIP
    'legal-lora@1'
    """
    ref = parse_hub_ref(repo_id, revision=revision)
    settings = HubSettings.from_env()
    snapshot = _download(ref, settings)
    commit = snapshot.name
    source = {"kind": "pulled", "repo_id": ref.repo_id, "commit": commit}
    with _incompatible_base(ref, commit):
        existing = _find_pulled(registry, source, name)
        if existing is not None:
            if base is not None:
                registry.load(existing.ref, base=base)
            return existing
        _check_repo_files(ref, commit, snapshot, settings)
        manifest = _json_or_none(snapshot / MANIFEST_FILE)
        name = name or manifest.get("name") or _name_from_repo(ref.repo_id)
        if domain is None and not manifest.get("domain"):
            domain = _domain_from_repo(ref.repo_id)
        return registry.add(snapshot, name, domain=domain, base=base, source=source)


def push(registry: Any, ref: str, repo_id: str, *, private: bool = False, revision: str = "main",
         commit_message: str | None = None) -> PushResult:
    """Upload a registered adapter, its manifest and a model card to a Hub repo in one commit.

    Args:
        registry: the :class:`adapterhub.Registry` holding ``ref``.
        ref: registry reference (``name``, ``name@3``, ``name@tag``).
        repo_id: ``org/repo`` (created if missing).
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to (created from ``main`` if missing).
        commit_message: default ``"adapterhub: push <name@version>"``.

    Returns:
        :class:`PushResult` with the commit sha and its URL.

    Raises:
        AdapterNotFoundError / IntegrityError: ``ref`` is unknown or its files are damaged.
        HubPermissionError: no token, or it may not write to the namespace.
        HubConnectionError: unreachable endpoint, or ``HF_HUB_OFFLINE=1``.

    >>> push(Registry(), "legal@3", "acme/legal-lora", private=True).url  # doctest: +SKIP
    'https://huggingface.co/acme/legal-lora/commit/5f1c...'
    """
    from huggingface_hub import CommitOperationAdd

    from .modelcard import render_model_card

    target = parse_hub_ref(repo_id, revision=revision)
    settings = HubSettings.from_env()
    if settings.offline:
        raise HubConnectionError(f"cannot push to {target}: HF_HUB_OFFLINE=1 forbids network access; "
                                 "unset HF_HUB_OFFLINE to push")
    record = registry.get(ref)
    files = {file: (record.path / file).read_bytes() for file in record.manifest["files"]}
    for file, data in files.items():  # exactly the bytes we upload
        check_file(data, record.manifest["files"][file], where=str(record.path / file), ref=record.ref)
    config = json.loads(files[CONFIG_FILE])
    files[MANIFEST_FILE] = (json.dumps(record.manifest, indent=2, sort_keys=True) + "\n").encode()
    files[CARD_FILE] = render_model_card(record.manifest, config, repo_id=target.repo_id).encode()
    operations = [CommitOperationAdd(path_in_repo=file, path_or_fileobj=data) for file, data in files.items()]
    api = _api(settings)
    with hub_errors(target, settings, action="push to"):
        api.create_repo(target.repo_id, private=private, exist_ok=True)
        if target.revision != "main":
            api.create_branch(target.repo_id, branch=target.revision, exist_ok=True)
        info = api.create_commit(target.repo_id, operations, revision=target.revision,
                                 commit_message=commit_message or f"adapterhub: push {record.ref}")
    return PushResult(repo_id=target.repo_id, revision=target.revision, commit=info.oid, url=info.commit_url)


# --- pulling ---------------------------------------------------------------------------------
def _download(ref: HubRef, settings: HubSettings) -> Path:
    """Fetch the adapter files of one commit into the Hugging Face cache; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    with hub_errors(ref, settings, action="pull"):
        snapshot = Path(snapshot_download(
            ref.repo_id, revision=ref.revision, allow_patterns=PULL_PATTERNS, cache_dir=settings.cache_dir,
            endpoint=settings.endpoint, token=settings.token, local_files_only=settings.offline,
            library_name="adapterhub"))
    if not _COMMIT.match(snapshot.name):  # snapshot folders are named by commit sha
        raise HubError(f"the Hub cache returned {snapshot} for {ref}, which is not a commit snapshot; "
                       f"clear {settings.cache_dir} and pull again")
    return snapshot


def _find_pulled(registry: Any, source: dict[str, str], name: str | None) -> Any:
    for record in registry.list():
        if (record.manifest.get("source") or {}) == source and name in (None, record.name):
            return record
    return None


def _check_repo_files(ref: HubRef, commit: str, snapshot: Path, settings: HubSettings) -> None:
    """Explain a repo that is no usable adapter, using its file list at ``commit``."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        repo_files = {entry.path for entry in get_cached_repo_tree(ref.repo_id, revision=commit,
                                                                   cache_dir=settings.cache_dir)}
    except CachedRepoTreeNotFoundError:
        repo_files = {entry.name for entry in snapshot.iterdir()} if snapshot.is_dir() else set()
    where = f"{ref.repo_id} at commit {commit[:12]}"
    if CONFIG_FILE not in repo_files:
        listing = ", ".join(sorted(repo_files)[:8]) or "nothing"
        raise HubNotAnAdapterError(f"{where} holds no PEFT adapter: there is no {CONFIG_FILE} at the repo root "
                                   f"(it has {listing}); pull a repo made by PeftModel.push_to_hub or `adapterhub push`")
    if WEIGHTS_FILE not in repo_files:
        pickles = sorted(file for file in repo_files if file.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise HubPickleWeightsError(
                f"{where} has only pickle weights ({', '.join(pickles)}), which adapterhub never loads (unpickling "
                f"can run code); ask the author to push {WEIGHTS_FILE} (save_pretrained(..., safe_serialization=True))")
        raise HubFileNotFoundError(f"{where} has {CONFIG_FILE} but no {WEIGHTS_FILE}; the upload is incomplete, "
                                   "pull another revision or ask the author to push the weights")


def _json_or_none(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _name_from_repo(repo_id: str) -> str:
    """A valid registry name from a repo name: ``acme/Legal_LoRA`` -> ``Legal_LoRA``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", repo_id.split("/")[-1]).replace("..", ".")
    return name.lstrip("._-")[:100] or "adapter"


def _domain_from_repo(repo_id: str) -> str:
    """``acme/legal-lora`` -> ``legal``; ``acme/finance_sentiment`` -> ``finance-sentiment``."""
    words = [word for word in re.split(r"[-_.]+", repo_id.split("/")[-1].lower()) if word]
    kept = [word for word in words if word not in _ADAPTER_WORDS]
    return _name_from_repo("x/" + "-".join(kept or words))


@contextlib.contextmanager
def _incompatible_base(ref: HubRef, commit: str) -> Iterator[None]:
    try:
        yield
    except HubError:
        raise
    except IncompatibleBaseError as error:
        raise HubIncompatibleBaseError(f"{ref.repo_id} at commit {commit[:12]} does not fit this base: {error}; "
                                       "nothing was registered") from error


# --- talking to the Hub ----------------------------------------------------------------------------
def _api(settings: HubSettings) -> Any:
    from huggingface_hub import HfApi

    from . import __version__

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


__all__ = ["HubRef", "HubSettings", "PushResult", "hub_errors", "is_hub_ref", "parse_hub_ref", "pull", "push"]
