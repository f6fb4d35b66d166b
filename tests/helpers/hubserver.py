"""A small Hugging Face Hub-compatible HTTP server for tests (binds 127.0.0.1 only).

It speaks the subset of the Hub protocol that ``huggingface_hub`` 2.x uses to
create repos, commit files and download them, with the Hub's status codes and
headers (``X-Error-Code``, ``X-Error-Message``, ``ETag``, ``X-Repo-Commit``):

* ``POST /api/repos/create`` (409 when the repo exists)
* ``POST /api/validate-yaml`` (README front matter must be a YAML mapping)
* ``POST /api/models/{repo}/preupload/{rev}`` (always answers ``"regular"``: no LFS, no Xet)
* ``POST /api/models/{repo}/commit/{rev}`` (NDJSON body: header, file, deletedFile, deletedFolder)
* ``POST /api/models/{repo}/branch/{branch}``
* ``GET  /api/models/{repo}[/revision/{rev}]``, ``GET /api/models/{repo}/tree/{rev}[/{path}]``,
  ``POST /api/models/{repo}/paths-info/{rev}``
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``

Tokens map to the namespaces they may write to (and whose private repos they
may read). Everything lives in memory.

>>> with HubServer(tokens={"hf_alice": ("alice",)}) as hub:  # doctest: +SKIP
...     hub.add_repo("alice/demo", {"README.md": "# hi"})
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = re.compile(rf"^/api/models/{_REPO}(?:/(?P<verb>revision|tree|paths-info|preupload|commit|branch)"
                  r"/(?P<rev>[^/]+)(?P<rest>/.*)?)?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(content: bytes) -> str:
    """The git sha1 of a blob: what the Hub sends as a regular file's ETag and tree ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> str:
        date = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        seed = json.dumps([self.repo_id, branch, len(self.commits), message, sorted(
            (path, git_blob_oid(content)) for path, content in files.items())])
        oid = hashlib.sha1(seed.encode()).hexdigest()
        self.commits[oid] = Commit(oid, dict(files), message, date)
        self.branches[branch] = oid
        return oid


class HubError(Exception):
    """An HTTP error answer: status, optional X-Error-Code, message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class HubServer:
    """The in-memory Hub; use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        tokens: ``{token: namespaces}``; a token writes to (and reads private repos of) its namespaces.
    """

    def __init__(self, *, tokens: dict[str, tuple[str, ...]] | None = None):
        self.tokens = dict(tokens or {})
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HubServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- seeding and inspection from tests -----------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes | str], *, private: bool = False,
                 branch: str = "main", message: str = "seed") -> str:
        """Create ``repo_id`` if needed and commit ``files`` (replacing the tree) on ``branch``; returns the oid."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id, private))
            blobs = {path: content.encode() if isinstance(content, str) else content for path, content in files.items()}
            return repo.commit(branch, blobs, message)

    def head(self, repo_id: str, branch: str = "main") -> Commit:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches[branch]]

    # --- request handling (called from handler threads) ------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        url = urlsplit(raw_path)
        with self._lock:
            self.requests.append((method, url.path))
            try:
                return self._route(method, url.path, parse_qs(url.query), headers, body)
            except HubError as error:
                out = {"X-Error-Message": error.message, **error.headers}
                if error.code:
                    out["X-Error-Code"] = error.code
                return _json(error.status, {"error": error.message}, out)

    def _route(self, method: str, path: str, query: dict, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        namespaces = self._namespaces(headers.get("Authorization"))
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body), namespaces)
        if method == "POST" and path == "/api/validate-yaml":
            return _validate_yaml(json.loads(body)["content"])
        if match := _RESOLVE.match(path):
            repo, commit = self._read(match["repo"], unquote(match["rev"]), namespaces)
            return self._resolve(repo, commit, unquote(match["path"]), send_body=method == "GET")
        match = _API.match(path)
        if match is None:
            raise HubError(404, f"no route for {method} {path}")
        verb, revision = match["verb"], unquote(match["rev"] or "main")
        if method == "GET" and verb in (None, "revision"):
            repo, commit = self._read(match["repo"], revision, namespaces)
            return _json(200, self._model_info(repo, commit))
        if method == "GET" and verb == "tree":
            repo, commit = self._read(match["repo"], revision, namespaces)
            prefix = unquote(match["rest"] or "").strip("/")
            return _json(200, _tree(commit, prefix, recursive=query.get("recursive", ["False"])[0].lower() == "true"))
        if method == "POST" and verb == "paths-info":
            repo, commit = self._read(match["repo"], revision, namespaces)
            wanted = parse_qs(body.decode())["paths"]
            return _json(200, [entry for entry in _tree(commit, "", recursive=True) if entry["path"] in wanted])
        if method == "POST" and verb in ("preupload", "commit", "branch"):
            repo = self._writable(match["repo"], namespaces)
            handler = {"preupload": self._preupload, "commit": self._commit, "branch": self._branch}[verb]
            return handler(repo, revision, body)
        raise HubError(405, f"{method} not allowed on {path}")

    # --- auth ------------------------------------------------------------------------
    def _namespaces(self, authorization: str | None) -> tuple[str, ...] | None:
        """None for anonymous; raises 401 for an unknown token (as the Hub does)."""
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _visible(self, repo_id: str, namespaces: tuple[str, ...] | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and repo_id.split("/")[0] not in (namespaces or ())):
            # the Hub hides private repos and answers 401 to anonymous callers
            raise HubError(401 if namespaces is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _read(self, repo_id: str, revision: str, namespaces: tuple[str, ...] | None) -> tuple[Repo, Commit]:
        repo = self._visible(repo_id, namespaces)
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, commit

    def _writable(self, repo_id: str, namespaces: tuple[str, ...] | None) -> Repo:
        repo = self._visible(repo_id, namespaces)
        if namespaces is None:
            raise HubError(401, "You must be authenticated to write to this repository")
        if repo_id.split("/")[0] not in namespaces:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    # --- handlers --------------------------------------------------------------------
    def _create_repo(self, payload: dict, namespaces: tuple[str, ...] | None) -> tuple[int, dict, bytes]:
        if namespaces is None:
            raise HubError(401, "You must be authenticated to create a repository")
        namespace = payload.get("organization") or namespaces[0]
        repo_id = f"{namespace}/{payload['name']}"
        if namespace not in namespaces:
            raise HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')
        if repo_id in self.repos:
            return _json(409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.repos[repo_id] = Repo(repo_id, private)
        repo.commit("main", {".gitattributes": _GITATTRIBUTES}, "initial commit")
        return _json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _model_info(self, repo: Repo, commit: Commit) -> dict:
        return {"id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
                "sha": commit.oid, "private": repo.private, "disabled": False, "gated": False,
                "lastModified": commit.date, "tags": [], "downloads": 0, "likes": 0,
                "siblings": [{"rfilename": path} for path in sorted(commit.files)]}

    def _resolve(self, repo: Repo, commit: Commit, path: str, *, send_body: bool) -> tuple[int, dict, bytes]:
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        content = commit.files[path]
        headers = {"ETag": f'"{git_blob_oid(content)}"', "X-Repo-Commit": commit.oid,
                   "Content-Type": "application/octet-stream", "Content-Length": str(len(content))}
        return 200, headers, content if send_body else b""

    def _preupload(self, repo: Repo, revision: str, body: bytes) -> tuple[int, dict, bytes]:
        commit = repo.resolve(revision)
        existing = commit.files if commit else {}
        files = [{"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": git_blob_oid(existing[item["path"]]) if item["path"] in existing else None}
                 for item in json.loads(body)["files"]]
        return _json(200, {"files": files, "commitOid": commit.oid if commit else None})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> tuple[int, dict, bytes]:
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit body must start with a header line")
        files = dict(repo.commits[repo.branches[revision]].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:  # lfsFile: this server never asks for LFS uploads
                raise HubError(400, f"unsupported commit operation {key!r}")
        oid = repo.commit(revision, files, lines[0]["value"]["summary"])
        return _json(200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo.repo_id}/commit/{oid}"})

    def _branch(self, repo: Repo, branch: str, body: bytes) -> tuple[int, dict, bytes]:
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        commit = repo.resolve(start)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {start}", "RevisionNotFound")
        repo.branches[branch] = commit.oid
        return _json(200, {})


def _tree(commit: Commit, prefix: str, *, recursive: bool) -> list[dict]:
    entries, folders = [], set()
    for path in sorted(commit.files):
        if prefix and not path.startswith(prefix + "/"):
            continue
        relative = path[len(prefix) + 1:] if prefix else path
        if "/" in relative and not recursive:
            folders.add(f"{prefix}/{relative.split('/')[0]}".lstrip("/"))
            continue
        content = commit.files[path]
        entries.append({"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": path})
    directories = [{"type": "directory", "oid": git_blob_oid(f.encode()), "size": 0, "path": f} for f in sorted(folders)]
    return directories + entries


def _validate_yaml(content: str) -> tuple[int, dict, bytes]:
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
    if match is None:
        return _json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
    try:
        metadata = yaml.safe_load(match[1])
    except yaml.YAMLError as error:
        return _json(400, {"errors": [{"message": f"invalid YAML: {error}"}]})
    if not isinstance(metadata, dict):
        return _json(400, {"errors": [{"message": "metadata must be a YAML mapping"}]})
    problems = [f'"{key}" must be a string' for key in ("library_name", "pipeline_tag", "license")
                if key in metadata and not isinstance(metadata[key], str)]
    problems += [f'"{key}" must be a string or an array of strings' for key in ("tags", "base_model")
                 if key in metadata and not _strings(metadata[key])]
    if problems:
        return _json(400, {"errors": [{"message": problem} for problem in problems]})
    return _json(200, {"errors": [], "warnings": []})


def _strings(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))


def _json(status: int, payload: Any, headers: dict | None = None) -> tuple[int, dict, bytes]:
    body = json.dumps(payload).encode()
    return status, {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}, body


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = hub.handle(self.command, self.path, self.headers, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
