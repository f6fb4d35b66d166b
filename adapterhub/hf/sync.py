"""Pull adapters from, and push them to, the Hugging Face Hub (or any Hub-compatible server).

A pull downloads only the adapter's files at one commit, checks them, and
registers a new version whose source is ``{"kind": "pulled", "repo_id", "commit"}``;
the same commit pulled again returns the version it already made. Repos made by
plain PEFT (no ``adapterhub.json``) and repos we pushed (manifest with domain,
task, labels and metrics) both work. A push uploads the PEFT files, the manifest
and a model card in one commit.

The standard environment is read at call time (see :mod:`adapterhub.hf.client`):
``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_TOKEN`` (else the
``hf auth login`` token file) and ``HF_HUB_OFFLINE=1`` (pull only what the
cache already holds). Tokens are never printed.

>>> parse_hub_ref("hf://acme/legal-lora@v2")
HubRef(repo_id='acme/legal-lora', revision='v2')
>>> record = pull(Registry(), "acme/legal-lora", revision="v2")  # doctest: +SKIP
>>> push(Registry(), "legal@3", "acme/legal-lora").commit  # doctest: +SKIP
'5f1c...'
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import (HubConnectionError, HubError, HubFileNotFoundError, HubIncompatibleBaseError,
                     HubInvalidAdapterError, HubNotAnAdapterError, HubPickleWeightsError, IncompatibleBaseError,
                     InvalidAdapterError, InvalidNameError)
from .client import HUB_SCHEME, HubRef, HubSettings, hf_api, hub_errors
from .modelcard import CARD_FILE
from ..registry.files import MAX_JSON_BYTES, parse_json, read_regular
from ..registry.manifest import CONFIG_FILE, MANIFEST_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE

PULL_PATTERNS = [CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, CARD_FILE]
_ADAPTER_WORDS = {"lora", "qlora", "dora", "adapter", "adapters", "peft", "prefix", "tuning"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


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


def pull(repo_id: str, *, registry: Any = None, revision: str | None = None, name: str | None = None,
         domain: str | None = None, base: Any = None) -> Any:
    """Download an adapter from the Hub and register it (once per commit).

    Args:
        repo_id: ``org/repo``, ``org/repo@revision`` or ``hf://org/repo@revision``.
        registry: the :class:`adapterhub.Registry` (or its root folder) to add it to; default: the
            default registry (see :mod:`adapterhub.paths`).
        revision: branch, tag or commit sha (default: the repo's ``main``).
        name: registry name (default: the repo name, ``acme/legal-lora`` -> ``legal-lora``; a repo's own
            manifest never chooses it). Adding to a name whose versions came from elsewhere (trained,
            imported or pulled from another repo) needs this given explicitly.
        domain: domain label (default: the manifest's domain, else the repo name
            without adapter words: ``acme/legal-lora`` -> ``legal``).
        base: an :class:`adapterhub.Base` the adapter must fit.

    Returns:
        The :class:`AdapterRecord`; the existing one if this commit was pulled before under this name.

    Raises:
        InvalidNameError: malformed reference or name, or the default name already holds versions from
            another source (pass ``name`` to add to it anyway, or choose another).
        HubInvalidAdapterError: the repo's files or ``adapterhub.json`` are malformed (every field is checked).
        HubRepoNotFoundError, HubRevisionNotFoundError, HubFileNotFoundError: no such repo/revision/file.
        HubNotAnAdapterError: the repo holds no ``adapter_config.json``.
        HubPickleWeightsError: the weights exist only as pickle.
        HubIncompatibleBaseError: the adapter does not fit ``base``.
        HubPermissionError: private or gated repo and no (valid) token.
        HubConnectionError: the endpoint is unreachable, or offline and the revision is not cached.

    >>> pull("hf://acme/legal-lora@v2", registry=Registry("./registry"), base=load_base()).ref  # doctest: +SKIP
    'legal-lora@1'
    """
    registry = _open_registry(registry)
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
        manifest = _read_manifest(snapshot / MANIFEST_FILE, f"{ref.repo_id} at commit {commit[:12]}")
        if name is None:
            name = _name_from_repo(ref.repo_id)
            _refuse_other_sources(registry, name, ref)
        if domain is None and not manifest.get("domain"):
            domain = _domain_from_repo(ref.repo_id)
        try:
            return registry.add(snapshot, name, domain=domain, base=base, source=source)
        except InvalidAdapterError as error:
            if isinstance(error, HubError):
                raise
            raise HubInvalidAdapterError(f"{ref.repo_id} at commit {commit[:12]} is not a usable adapter: {error}; "
                                         "nothing was registered") from None


def push(ref: str, repo_id: str, *, registry: Any = None, private: bool = False, revision: str = "main",
         commit_message: str | None = None) -> PushResult:
    """Upload a registered adapter, its manifest and a model card to a Hub repo in one commit.

    Args:
        ref: registry reference (``name``, ``name@3``, ``name@tag``).
        repo_id: ``org/repo`` (created if missing).
        registry: the :class:`adapterhub.Registry` (or its root folder) holding ``ref``; default: the
            default registry.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to (created from ``main`` if missing).
        commit_message: default ``"adapterhub: push <name@version>"``.

    Returns:
        :class:`PushResult` with the commit sha and its URL.

    Raises:
        AdapterNotFoundError / IntegrityError: ``ref`` is unknown or its files are damaged.
        HubPermissionError: no token, or it may not write to the namespace.
        HubConnectionError: unreachable endpoint, or ``HF_HUB_OFFLINE=1``.

    >>> push("legal@3", "acme/legal-lora", private=True).url  # doctest: +SKIP
    'https://huggingface.co/acme/legal-lora/commit/5f1c...'
    """
    from huggingface_hub import CommitOperationAdd

    from .export import export_adapter

    target = parse_hub_ref(repo_id, revision=revision)
    settings = HubSettings.from_env()
    if settings.offline:
        raise HubConnectionError(f"cannot push to {target}: HF_HUB_OFFLINE=1 forbids network access; "
                                 "unset HF_HUB_OFFLINE to push")
    registry = _open_registry(registry)
    record = registry.get(ref)
    api = hf_api(settings)
    with tempfile.TemporaryDirectory(prefix="adapterhub-push-") as scratch:
        # verified bytes naming the base's public id, the manifest, the model card (and label_scoring.py)
        folder = export_adapter(record.ref, Path(scratch) / record.name, registry=registry,
                                repo_id=target.repo_id).path
        operations = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=path.read_bytes())
                      for path in sorted(folder.iterdir())]
    with hub_errors(target, settings, action="push to"):
        api.create_repo(target.repo_id, private=private, exist_ok=True)
        if target.revision != "main":
            api.create_branch(target.repo_id, branch=target.revision, exist_ok=True)
        info = api.create_commit(target.repo_id, operations, revision=target.revision,
                                 commit_message=commit_message or f"adapterhub: push {record.ref}")
    return PushResult(repo_id=target.repo_id, revision=target.revision, commit=info.oid, url=info.commit_url)


def _open_registry(registry: Any) -> Any:
    from ..registry import Registry

    return registry if isinstance(registry, Registry) else Registry(registry)


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


def _refuse_other_sources(registry: Any, name: str, ref: HubRef) -> None:
    """A name chosen for the user must not add a version beside versions of other origin."""
    others = [record for record in registry.list() if record.name == name and (
        (record.manifest.get("source") or {}).get("kind") != "pulled"
        or record.manifest["source"].get("repo_id") != ref.repo_id)]
    if others:
        origin = others[-1].manifest.get("source") or {}
        where = origin.get("repo_id") or origin.get("path") or origin.get("kind", "elsewhere")
        raise InvalidNameError(
            f"registry name {name!r} already holds {others[-1].ref} from {where}, not from {ref.repo_id}; nothing "
            f"was pulled. Pass name={name!r} (--name {name}) to add {ref.repo_id} as its next version anyway, "
            f"or choose another name (--name {name}-hub)")


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
                                   f"(it has {listing}); pull a repo made by PeftModel.push_to_hub or "
                                   "`adapterhub push`")
    if WEIGHTS_FILE not in repo_files:
        pickles = sorted(file for file in repo_files if file.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise HubPickleWeightsError(
                f"{where} has only pickle weights ({', '.join(pickles)}), which adapterhub never loads (unpickling "
                f"can run code); ask the author to push {WEIGHTS_FILE} (save_pretrained(..., safe_serialization=True))")
        raise HubFileNotFoundError(f"{where} has {CONFIG_FILE} but no {WEIGHTS_FILE}; the upload is incomplete, "
                                   "pull another revision or ask the author to push the weights")


def _read_manifest(path: Path, where: str) -> dict[str, Any]:
    """The repo's ``adapterhub.json`` as a dict; ``{}`` for plain PEFT repos.

    Raises:
        HubInvalidAdapterError: it is there but not a JSON object (too deep, too large, not JSON).
    """
    if not path.exists():
        return {}
    try:
        return parse_json(read_regular(path, limit=MAX_JSON_BYTES), where=f"{where}: {MANIFEST_FILE}")
    except (InvalidAdapterError, OSError) as error:
        raise HubInvalidAdapterError(f"{error}; nothing was registered") from None


def _name_from_repo(repo_id: str) -> str:
    """A valid registry name from a repo name: ``acme/Legal_LoRA`` -> ``Legal_LoRA``."""
    return _safe_name(repo_id.split("/")[-1])


def _domain_from_repo(repo_id: str) -> str:
    """``acme/legal-lora`` -> ``legal``; ``acme/finance_sentiment`` -> ``finance-sentiment``."""
    words = [word for word in re.split(r"[-_.]+", repo_id.split("/")[-1].lower()) if word]
    return _safe_name("-".join([word for word in words if word not in _ADAPTER_WORDS] or words))


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).replace("..", ".")
    return name.lstrip("._-")[:100] or "adapter"


@contextlib.contextmanager
def _incompatible_base(ref: HubRef, commit: str) -> Iterator[None]:
    try:
        yield
    except HubError:
        raise
    except IncompatibleBaseError as error:
        raise HubIncompatibleBaseError(f"{ref.repo_id} at commit {commit[:12]} does not fit this base: {error}; "
                                       "nothing was registered") from error


__all__ = ["HubRef", "PushResult", "is_hub_ref", "parse_hub_ref", "pull", "push"]
