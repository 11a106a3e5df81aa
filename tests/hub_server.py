"""A real, minimal Hugging Face Hub HTTP server for tests (stdlib only, bound to 127.0.0.1).

It implements exactly the endpoints that ``huggingface_hub`` 2.4 calls for ``create_repo``, ``create_branch``,
``create_commit`` / ``upload_file`` / ``upload_folder`` (non-Xet path), ``repo_info`` / ``model_info``,
``list_repo_refs`` and the README metadata validation, so that the real client can be tested end to end:

* ``POST /api/repos/create`` -- ``create_repo``
* ``POST /api/validate-yaml`` (public) -- README metadata check done by ``create_commit``
* ``GET /api/agent-harnesses`` (public) -- user-agent telemetry registry (answered empty)
* ``GET /api/{type}s/{repo}`` and ``.../revision/{rev}`` -- ``repo_info`` (also used after a no-op commit)
* ``GET /api/{type}s/{repo}/refs`` -- ``list_repo_refs``
* ``POST /api/{type}s/{repo}/branch/{branch}`` -- ``create_branch``
* ``POST /api/{type}s/{repo}/preupload/{rev}`` -- upload mode ("regular" / "lfs") and remote oid of each file
* ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON body, ``?create_pr=1``) -- the commit itself
* ``POST /{repo}.git/info/lfs/objects/batch`` and ``.../verify`` -- LFS upload (only with ``lfs_threshold``)
* ``PUT /__lfs_upload__/{ticket}`` (pre-signed, no auth) -- LFS "basic" transfer

and the read side that ``hf_hub_download``, ``HfFileSystem`` and ``datasets.load_dataset`` (streaming or not) use,
at any revision (a branch, ``refs/convert/parquet``, a commit id):

* ``GET``/``HEAD /[{type}s/]{repo}/resolve/{rev}/{path}`` -- file contents (``Range`` requests answered ``206``), with
  the ``X-Repo-Commit`` / ``ETag`` headers of the Hub; a missing file is ``404`` ``EntryNotFound``
* ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``) -- ``list_repo_tree`` / ``list_repo_files``
* ``POST /api/{type}s/{repo}/paths-info/{rev}`` -- ``get_paths_info`` (``HfFileSystem.info``)

:meth:`LocalHubServer.add_files` commits files directly on the server side, e.g. the ``refs/convert/parquet`` ref that
the Hub itself writes for a dataset.

By default the preupload endpoint answers ``"regular"`` for every file, so contents arrive inline (base64) in the
commit payload. With ``lfs_threshold=N``, files of N bytes or more are answered ``"lfs"`` and go through the LFS
batch API; the client must then run with ``HF_HUB_DISABLE_XET=1`` because this server does not speak Xet (any
``*xet*`` endpoint answers 501 with a message saying so, and the batch answer only offers the "basic" transfer).

Every endpoint except ``validate-yaml`` and ``agent-harnesses`` (public on the real Hub too), the pre-signed LFS PUT
and the reads of a public repository requires ``Authorization: Bearer <token>`` with one of the server's tokens;
anything else gets a 401. Every request is
recorded in :attr:`LocalHubServer.requests`, every commit in :attr:`Repo.commits`.

Usage::

    with LocalHubServer(tokens={"hf_test"}) as hub:
        HfApi(endpoint=hub.endpoint, token="hf_test").create_repo("user/model")
        hub.files("user/model")  # {path: bytes} at main
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

__all__ = ["Commit", "LocalHubServer", "RecordedRequest", "Repo"]

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(content: bytes) -> str:
    """Git's blob SHA-1, the oid the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request received by the server."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool


@dataclass
class Commit:
    """A commit received by the server.

    Attributes:
        oid: 40-hex commit id.
        revision: the ref the commit was made on (``main``, a branch, or ``refs/pr/N``).
        message / description: commit summary and description.
        create_pr: the commit was sent with ``create_pr=1`` (it opened pull request ``pr_num``).
        added: files added or updated by this commit, ``{path: content}``.
        lfs_paths: the subset of ``added`` that was uploaded through LFS.
        deleted: deleted paths.
    """

    oid: str
    revision: str
    message: str
    description: str
    create_pr: bool
    pr_num: int | None
    added: dict[str, bytes]
    lfs_paths: frozenset[str]
    deleted: tuple[str, ...]
    parent: str | None


@dataclass
class Repo:
    """In-memory repository: refs point at commit oids, each oid at a full snapshot ``{path: content}``."""

    repo_id: str
    repo_type: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)
    lfs_files: dict[str, set[str]] = field(default_factory=dict)  # commit oid -> paths stored as LFS
    commits: list[Commit] = field(default_factory=list)
    next_pr: int = 1

    @property
    def branches(self) -> list[str]:
        return [ref for ref in self.refs if not ref.startswith("refs/pr/")]


@dataclass(frozen=True)
class _Raw:
    """A non-JSON answer (file contents); ``body`` is not sent for ``HEAD``."""

    status: int
    body: bytes
    headers: dict[str, str]


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_TYPE = r"(?P<type>model|dataset|space)s"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/branch/(?P<rev>[^/]+)$"), "create_branch"),
    ("GET", re.compile(rf"^/api/{_TYPE}/{_REPO}/refs$"), "list_refs"),
    ("GET", re.compile(rf"^/api/{_TYPE}/{_REPO}/revision/(?P<rev>[^/]+)$"), "repo_info"),
    ("GET", re.compile(rf"^/api/{_TYPE}/{_REPO}$"), "repo_info"),
    ("POST", re.compile(rf"^/(?:(?P<prefix>datasets|spaces)/)?{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("POST", re.compile(rf"^/(?:(?P<prefix>datasets|spaces)/)?{_REPO}\.git/info/lfs/objects/verify$"), "lfs_verify"),
    ("PUT", re.compile(r"^/__lfs_upload__/(?P<ticket>[0-9a-f]+)$"), "lfs_put"),
    ("GET", re.compile(rf"^/api/{_TYPE}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    (
        "GET",
        re.compile(rf"^/(?:(?P<prefix>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"),
        "resolve",
    ),
]
_PUBLIC_ACTIONS = {"validate_yaml", "agent_harnesses", "lfs_put"}
# Reads that a public repository answers without a token.
_READ_ACTIONS = {"repo_info", "list_refs", "tree", "paths_info", "resolve"}


def _route(method: str, path: str) -> tuple[str, re.Match[str]]:
    for route_method, pattern, action in _ROUTES:
        match = pattern.match(path)
        if match and (route_method == method or (method == "HEAD" and route_method == "GET")):
            return action, match
    if "xet" in path:
        raise _HubError(501, "This local test Hub does not support Xet storage: set HF_HUB_DISABLE_XET=1.")
    raise _HubError(404, f"No route for {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every response sets Content-Length
    # Headers and body go out in two writes: with Nagle's algorithm the body waited for the client's delayed ACK,
    # 40 ms per request (2 ms without).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        # Always consume the body first: on a keep-alive connection, unread bytes would corrupt the next request.
        body = self._read_body()
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        hub = self.server.hub
        authorized = hub.is_authorized(self.headers.get("Authorization"))
        hub.record(RecordedRequest(method, url.path, query, authorized))
        try:
            action, match = _route(method, url.path)
            params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
            if action not in _PUBLIC_ACTIONS and not authorized:
                if action not in _READ_ACTIONS:
                    raise _HubError(401, "Invalid credentials in Authorization header")
                if hub.is_private(params):  # like the Hub: a private repo and a missing one look the same
                    raise _HubError(401, f"Repository Not Found for url: {url.path}", code="RepoNotFound")
            answer = getattr(hub, f"_api_{action}")(params=params, query=query, body=body, headers=self.headers)
        except _HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            answer = (err.status, {"error": err.message, **err.extra}, headers)
        if isinstance(answer, _Raw):
            status, data, headers = answer.status, answer.body, answer.headers
        else:
            status, payload, headers = answer
            data = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **headers}
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LocalHubServer


class LocalHubServer:
    """Minimal Hub served from a background thread on ``127.0.0.1:<free port>``.

    Args:
        tokens: accepted bearer tokens.
        lfs_threshold: if set, files of at least this many bytes are uploaded through LFS instead of inline.
        fail_commits_adding: commits that add any of these paths are answered with a 500 (to test partial
            failures); the failure is recorded in :attr:`failed_commits`.
    """

    def __init__(
        self,
        *,
        tokens: set[str] | frozenset[str] = frozenset({"hf_test_token"}),
        lfs_threshold: int | None = None,
        fail_commits_adding: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.tokens = set(tokens)
        self.lfs_threshold = lfs_threshold
        self.fail_commits_adding = set(fail_commits_adding)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.failed_commits: list[dict[str, Any]] = []
        self._lfs_store: dict[str, bytes] = {}  # sha256 -> content (verified uploads)
        self._lfs_tickets: dict[str, tuple[str, int]] = {}  # ticket -> (oid, size)
        self._lock = threading.RLock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> LocalHubServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``, to use as ``HF_ENDPOINT``."""
        if self._httpd is None:
            raise RuntimeError("LocalHubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- inspection helpers ------------------------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Snapshot ``{path: content}`` of ``revision`` (a branch or ``refs/pr/N``)."""
        repo = self.repo(repo_id, repo_type)
        return dict(repo.snapshots[repo.refs[revision]])

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """All commits of the repo in the order they were received (the initial commit first)."""
        return list(self.repo(repo_id, repo_type).commits)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def is_private(self, params: dict[str, str]) -> bool:
        """Whether the repository named by a route's parameters is private (an unknown one counts as private)."""
        with self._lock:
            try:
                return self._get_repo(params).private
            except _HubError:
                return True

    def add_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        repo_type: str = "model",
        message: str = "Update files",
        private: bool = False,
    ) -> Commit:
        """Commits ``files`` to ``revision`` on the server side (creating the repo and the ref if needed), as the Hub
        itself does for ``refs/convert/parquet``. The new ref starts empty."""
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                repo = self.repos[(repo_type, repo_id)] = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
            return self._new_commit(
                repo, ref=revision, parent=repo.refs.get(revision), message=message, added=dict(files)
            )

    def is_authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return header.removeprefix("Bearer ").strip() in self.tokens

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _get_repo(self, params: dict[str, str]) -> Repo:
        repo_type = params.get("type") or {"datasets": "dataset", "spaces": "space"}.get(
            params.get("prefix", ""), "model"
        )
        repo = self.repos.get((repo_type, params["repo"]))
        if repo is None:
            raise _HubError(404, f"Repository Not Found: {params['repo']}", code="RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> str:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.snapshots:  # a commit oid
            return revision
        raise _HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as err:
            raise _HubError(400, f"Invalid JSON body: {err}") from err

    def _new_commit(
        self,
        repo: Repo,
        *,
        ref: str,
        parent: str | None,
        message: str,
        description: str = "",
        added: dict[str, bytes],
        lfs_paths: set[str] = frozenset(),
        deleted: tuple[str, ...] = (),
        create_pr: bool = False,
        pr_num: int | None = None,
    ) -> Commit:
        snapshot = dict(repo.snapshots[parent]) if parent else {}
        lfs = set(repo.lfs_files.get(parent, set())) if parent else set()
        for path in deleted:
            for existing in [p for p in snapshot if p == path or p.startswith(path.rstrip("/") + "/")]:
                snapshot.pop(existing)
                lfs.discard(existing)
        snapshot.update(added)
        lfs = (lfs - set(added)) | set(lfs_paths)
        digest = hashlib.sha1(json.dumps([parent, message, ref, len(repo.commits)]).encode())
        for path in sorted(snapshot):
            digest.update(path.encode() + hashlib.sha256(snapshot[path]).digest())
        oid = digest.hexdigest()
        repo.snapshots[oid] = snapshot
        repo.lfs_files[oid] = lfs
        repo.refs[ref] = oid
        commit = Commit(
            oid=oid,
            revision=ref,
            message=message,
            description=description,
            create_pr=create_pr,
            pr_num=pr_num,
            added=dict(added),
            lfs_paths=frozenset(lfs_paths),
            deleted=tuple(deleted),
            parent=parent,
        )
        repo.commits.append(commit)
        return commit

    # -- endpoints ---------------------------------------------------------------------------------------------------
    # Each returns (status, json payload, extra headers).

    def _api_create_repo(self, *, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        payload = self._json(body)
        name, organization = payload.get("name"), payload.get("organization")
        if not name:
            raise _HubError(400, "Missing repository name")
        repo_id = f"{organization}/{name}" if organization else f"user/{name}"
        repo_type = payload.get("type") or "model"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.endpoint}/{prefix}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                # Like the Hub, the 409 carries the repo URL: `create_repo(exist_ok=True)` reads it.
                raise _HubError(409, "You already created this model repo", url=url)
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=payload.get("visibility") == "private")
            self.repos[(repo_type, repo_id)] = repo
            self._new_commit(
                repo, ref="main", parent=None, message="initial commit", added={".gitattributes": GITATTRIBUTES}
            )
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _api_validate_yaml(self, *, body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        content = self._json(body).get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
        if not match:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, {}
        errors = []
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            metadata, errors = None, [{"message": f"Invalid YAML: {err}"}]
        if not errors and not isinstance(metadata, dict):
            errors.append({"message": "YAML metadata must be a mapping"})
        if not errors:
            errors.extend({"message": message} for message in _model_index_errors(metadata.get("model-index")))
        if errors:
            return 400, {"errors": errors, "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _api_agent_harnesses(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        # Public registry that huggingface_hub fetches (at most daily) to tag its user agent; answer "no harness".
        return 200, {"standardEnvVars": [], "harnesses": {}}, {}

    def _api_repo_info(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            repo = self._get_repo(params)
            sha = self._resolve(repo, params.get("rev", "main"))
            siblings = [{"rfilename": path} for path in sorted(repo.snapshots[sha])]
        return 200, {"id": repo.repo_id, "sha": sha, "private": repo.private, "siblings": siblings}, {}

    def _api_list_refs(self, *, params: dict[str, str], **_: Any) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            repo = self._get_repo(params)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": repo.refs[name]}
                for name in repo.branches
                if not name.startswith("refs/")
            ]
            converts = [
                {"name": name.split("/")[-1], "ref": name, "targetCommit": oid}
                for name, oid in repo.refs.items()
                if name.startswith("refs/convert/")
            ]
        return 200, {"branches": branches, "tags": [], "converts": converts}, {}

    # -- read side ---------------------------------------------------------------------------------------------------

    def _snapshot(self, params: dict[str, str]) -> tuple[Repo, str, dict[str, bytes]]:
        repo = self._get_repo(params)
        oid = self._resolve(repo, params["rev"])
        return repo, oid, repo.snapshots[oid]

    @staticmethod
    def _entry(repo: Repo, oid: str, path: str, content: bytes | None) -> dict[str, Any]:
        """A ``tree`` / ``paths-info`` entry: a file (``content``) or a folder (``None``)."""
        if content is None:
            return {"type": "directory", "path": path, "oid": hashlib.sha1(f"{oid}:{path}".encode()).hexdigest()}
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)}
        if path in repo.lfs_files.get(oid, set()):
            entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
        return entry

    def _entries(self, repo: Repo, oid: str, snapshot: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        files, folders = [], set()
        for path in sorted(snapshot):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                if depth == 1 or recursive:
                    folders.add(prefix + "/".join(rest[:depth]))
            if len(rest) == 1 or recursive:
                files.append(self._entry(repo, oid, path, snapshot[path]))
        return [self._entry(repo, oid, path, None) for path in sorted(folders)] + files

    def _api_tree(
        self, *, params: dict[str, str], query: dict[str, list[str]], **_: Any
    ) -> tuple[int, Any, dict[str, str]]:
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        folder = params.get("path", "")
        with self._lock:
            repo, oid, snapshot = self._snapshot(params)
            if folder.strip("/") and not any(p.startswith(folder.strip("/") + "/") for p in snapshot):
                raise _HubError(404, f"Entry not found: {folder}", code="EntryNotFound")
            return 200, self._entries(repo, oid, snapshot, folder, recursive), {}

    def _api_paths_info(self, *, params: dict[str, str], body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        form = parse_qs(body.decode())
        answer = []
        with self._lock:
            repo, oid, snapshot = self._snapshot(params)
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in snapshot:
                    answer.append(self._entry(repo, oid, path, snapshot[path]))
                elif any(p.startswith(path + "/") for p in snapshot):
                    answer.append(self._entry(repo, oid, path, None))
        return 200, answer, {}

    def _api_resolve(self, *, params: dict[str, str], headers: Any, **_: Any) -> _Raw:
        with self._lock:
            repo, oid, snapshot = self._snapshot(params)
            content = snapshot.get(params["path"])
            lfs = params["path"] in repo.lfs_files.get(oid, set())
        if content is None:
            raise _HubError(404, f"Entry not found: {params['path']}", code="EntryNotFound")
        etag = hashlib.sha256(content).hexdigest() if lfs else git_blob_oid(content)
        answer_headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": oid,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(params['path'].split('/')[-1])}",
        }
        if lfs:
            answer_headers["X-Linked-Etag"] = f'"{etag}"'
            answer_headers["X-Linked-Size"] = str(len(content))
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("Range") or "")
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), len(content) - 1) if match.group(2) else len(content) - 1
            else:  # a suffix: the last N bytes
                start, end = max(0, len(content) - int(match.group(2))), len(content) - 1
            if start >= len(content):
                return _Raw(416, b"", {"Content-Range": f"bytes */{len(content)}"})
            answer_headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return _Raw(206, content[start : end + 1], answer_headers)
        return _Raw(200, content, answer_headers)

    def _api_create_branch(self, *, params: dict[str, str], body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        branch = params["rev"]
        start = self._json(body).get("startingPoint") or "main"
        with self._lock:
            repo = self._get_repo(params)
            if branch in repo.refs:
                raise _HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.refs[branch] = self._resolve(repo, start)
        return 200, {}, {}

    def _api_preupload(self, *, params: dict[str, str], body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        files = self._json(body).get("files", [])
        with self._lock:
            repo = self._get_repo(params)
            head = self._resolve(repo, params["rev"])
            snapshot, lfs = repo.snapshots[head], repo.lfs_files[head]
            answer = []
            for info in files:
                path, size = info["path"], int(info["size"])
                mode = "lfs" if self.lfs_threshold is not None and size >= self.lfs_threshold else "regular"
                remote = snapshot.get(path)
                oid = None
                if remote is not None:
                    oid = hashlib.sha256(remote).hexdigest() if path in lfs else git_blob_oid(remote)
                answer.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": answer, "commitOid": head}, {}

    def _api_commit(
        self, *, params: dict[str, str], query: dict[str, list[str]], body: bytes, **_: Any
    ) -> tuple[int, Any, dict[str, str]]:
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true", "True")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "Commit payload must start with a header line")
        header = lines[0]["value"]
        added: dict[str, bytes] = {}
        lfs_paths: set[str] = set()
        deleted: list[str] = []
        with self._lock:
            repo = self._get_repo(params)
            base = self._resolve(repo, params["rev"])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HubError(400, f"Unsupported encoding for {value['path']}")
                    added[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    content = self._lfs_store.get(value["oid"])
                    if content is None or ("size" in value and len(content) != value["size"]):
                        raise _HubError(422, f"LFS object {value['oid']} for {value['path']} was not uploaded")
                    added[value["path"]] = content
                    lfs_paths.add(value["path"])
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:
                    raise _HubError(400, f"Unsupported commit operation {key!r}")
            failing = sorted(self.fail_commits_adding & set(added))
            if failing:
                self.failed_commits.append({"revision": params["rev"], "paths": sorted(added), "message": header})
                raise _HubError(500, f"Internal Error - simulated failure while committing {failing}")
            parent_commit = header.get("parentCommit")
            if parent_commit and not create_pr and not base.startswith(parent_commit):
                raise _HubError(412, "A commit has happened since. Please refresh and try again.")
            pr_num, ref = None, params["rev"]
            if create_pr:
                if params["rev"] not in repo.branches:
                    raise _HubError(400, f"Pull requests can only target a branch, got {params['rev']!r}")
                pr_num, repo.next_pr = repo.next_pr, repo.next_pr + 1
                ref = f"refs/pr/{pr_num}"
            commit = self._new_commit(
                repo,
                ref=ref,
                parent=base,
                message=header.get("summary", ""),
                description=header.get("description", ""),
                added=added,
                lfs_paths=lfs_paths,
                deleted=tuple(deleted),
                create_pr=create_pr,
                pr_num=pr_num,
            )
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        repo_url = f"{self.endpoint}/{prefix}{repo.repo_id}"
        return (
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{repo_url}/commit/{commit.oid}",
                "pullRequestUrl": f"{repo_url}/discussions/{pr_num}" if pr_num else None,
                "hookOutput": "",
            },
            {},
        )

    def _api_lfs_batch(self, *, params: dict[str, str], body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        payload = self._json(body)
        if payload.get("operation") != "upload":
            raise _HubError(400, "Only the 'upload' operation is supported")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise _HubError(400, "Only the 'basic' LFS transfer is supported (no Xet, no multipart)")
        objects = []
        with self._lock:
            self._get_repo(params)
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in self._lfs_store:
                    ticket = secrets.token_hex(16)
                    self._lfs_tickets[ticket] = (oid, size)
                    repo_path = ("" if params.get("prefix") is None else params["prefix"] + "/") + params["repo"]
                    answer["actions"] = {
                        "upload": {"href": f"{self.endpoint}/__lfs_upload__/{ticket}", "header": {}},
                        "verify": {"href": f"{self.endpoint}/{repo_path}.git/info/lfs/objects/verify", "header": {}},
                    }
                objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _api_lfs_put(self, *, params: dict[str, str], body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            ticket = self._lfs_tickets.pop(params["ticket"], None)
            if ticket is None:
                raise _HubError(403, "Invalid or expired upload URL")
            oid, size = ticket
            if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                raise _HubError(400, f"Uploaded content does not match oid {oid} / size {size}")
            self._lfs_store[oid] = body
        return 200, {}, {"ETag": f'"{oid}"'}

    def _api_lfs_verify(self, *, params: dict[str, str], body: bytes, **_: Any) -> tuple[int, Any, dict[str, str]]:
        payload = self._json(body)
        with self._lock:
            self._get_repo(params)
            content = self._lfs_store.get(payload.get("oid"))
        if content is None or len(content) != payload.get("size"):
            raise _HubError(404, f"LFS object {payload.get('oid')} not found")
        return 200, {"success": True}, {}


def _model_index_errors(model_index: Any) -> list[str]:
    """Structural checks of ``model-index`` (the subset of the Hub's validation that cards tend to get wrong)."""
    if model_index is None:
        return []
    if not isinstance(model_index, list) or not model_index:
        return ['"model-index" must be a non-empty array']
    errors = []
    for entry in model_index:
        if not isinstance(entry, dict) or not entry.get("name") or not isinstance(entry.get("results"), list):
            errors.append('"model-index[]" needs a "name" and a "results" array')
            continue
        for result in entry["results"]:
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, dict) or not task.get("type"):
                errors.append('"model-index[].results[].task.type" is required')
            if not isinstance(dataset, dict) or not dataset.get("type") or not dataset.get("name"):
                errors.append('"model-index[].results[].dataset" needs "type" and "name"')
            if not isinstance(metrics, list) or not all(
                isinstance(m, dict) and m.get("type") and "value" in m for m in metrics
            ):
                errors.append('"model-index[].results[].metrics[]" need "type" and "value"')
    return errors
