"""A local stand-in for the Hugging Face Hub: the endpoints `huggingface_hub` and `transformers` use to push and load.

No mock-Hub package works offline, so push/load round trips are tested against this server instead. It keeps
repositories in memory with a real commit history (every commit gets a new sha; branches, and `revision=` a
full commit sha, resolve), stores LFS objects uploaded through the basic transfer adapter, and answers with the
headers clients rely on (`ETag`, `X-Repo-Commit`, `X-Linked-Etag`, `X-Error-Code`).

Clients must see `HF_ENDPOINT=<server url>` before `huggingface_hub` is imported (run them in a subprocess),
with `HF_HUB_DISABLE_XET=1` (else uploads go through Xet) and any `HF_TOKEN` (writes need an Authorization
header; private repositories are invisible without one).

Example:
    ```python
    with LocalHub() as hub:
        env = {**os.environ, **hub.client_env(token="hf_dummy")}
        subprocess.run([sys.executable, "push.py"], env=env, check=True)
        assert hub.repo("org/model").branches["main"]
    ```

`python3 -m tests.hub_server --port 8765` serves until interrupted (for trying `examples/push_to_hub.py` by hand).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml  # a dependency of huggingface_hub; only used to read card metadata

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Blob", "Commit", "HubError", "LocalHub", "Repo"]

# Files the Hub stores through LFS: binary content, large files, or these suffixes (the default .gitattributes).
#: Prefix of a client script that must load a repository's custom code only (`trust_remote_code=True`): importing
#: the installed PLACE packages raises, so nothing of them can be used by mistake.
BLOCK_PACKAGES = """
import sys
class BlockPackages:  # only the repositories' custom code may be used, never the installed packages
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_place", "processing", "training"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, BlockPackages())
"""
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npz", ".npy",
                ".arrow", ".parquet", ".zip", ".gz", ".tar", ".png", ".jpg", ".jpeg")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"^/api/(?P<kind>models|datasets|spaces)/" + _REPO
_RESOLVE = r"^/(?:(?P<kind>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def git_blob_oid(content: bytes) -> str:
    """The sha1 git gives a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubError(Exception):
    """An HTTP error answered as `{"error": message}` with an optional `X-Error-Code` header."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


# ------------------------------------------------------------------------------------------------ storage
@dataclass(frozen=True)
class Blob:
    """One file version; `lfs` files are reported with their sha256 like the Hub does."""

    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_oid(self.content)

    def entry(self, path: str) -> dict[str, Any]:
        """The tree / paths-info description of this blob stored at `path`."""
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(self.content),
                                 "oid": git_blob_oid(self.content)}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": 134}
        return entry


@dataclass(frozen=True)
class Commit:
    oid: str
    files: dict[str, Blob]
    title: str
    parent: str | None
    date: str


@dataclass
class Repo:
    """A repository: commits by oid, branches by name (each points at a commit)."""

    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> Commit:
        """A branch name or a full commit sha -> the commit; else a RevisionNotFound error."""
        oid = self.branches.get(revision, revision)
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def head(self, branch: str) -> Commit:
        """The tip of `branch`; committing to anything but a branch (e.g. a commit sha) is refused."""
        if branch in self.branches:
            return self.commits[self.branches[branch]]
        if _COMMIT_OID.match(branch) and branch in self.commits:
            raise HubError(400, f"Cannot commit to a commit sha ({branch}); pass a branch name")
        raise HubError(404, f"Branch {branch!r} not found in {self.repo_id}", "RevisionNotFound")

    def add_commit(self, branch: str, title: str, files: dict[str, Blob], parent: str | None) -> Commit:
        """Record a commit with the full file set `files` and move `branch` to it."""
        digest = hashlib.sha1(json.dumps(
            [parent, title, sorted((path, blob.etag) for path, blob in files.items()), len(self.commits), _now()]
        ).encode()).hexdigest()
        commit = Commit(oid=digest, files=files, title=title, parent=parent, date=_now())
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


# ------------------------------------------------------------------------------------------------ the hub
class LocalHub:
    """An in-memory Hub served on 127.0.0.1 (ephemeral port) from a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self.lock = threading.RLock()
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client_env(self, token: str = "hf_local_hub_dummy_token") -> dict[str, str]:
        """Environment variables that point a fresh `huggingface_hub` process at this server."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": token,
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "30", "HF_HUB_DOWNLOAD_TIMEOUT": "30"}

    def repo(self, repo_id: str, repo_type: str = "model", authorized: bool = True) -> Repo:
        """The stored repository, or RepoNotFound (also for a private one asked for without a token)."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(401 if not authorized else 404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_id: str, repo_type: str, private: bool) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                prefix = "" if repo_type == "model" else f"{repo_type}s/"  # the Hub answers a conflict with the url
                raise HubError(409, f"You already created this {repo_type} repo", url=f"{self.url}/{prefix}{repo_id}")
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
            repo.add_commit("main", "initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)}, None)
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def apply_commit(self, repo: Repo, branch: str, lines: list[dict[str, Any]]) -> Commit:
        """Apply NDJSON commit operations (header, file, lfsFile, deletedFile, deletedFolder) on `branch`."""
        with self.lock:
            head = repo.head(branch)
            header = next((line["value"] for line in lines if line.get("key") == "header"), None)
            if header is None or not header.get("summary"):
                raise HubError(400, "The commit payload needs a header line with a summary")
            if header.get("parentCommit") not in (None, head.oid):
                raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of {branch}")
            files = dict(head.files)
            for line in lines:
                self._apply_operation(files, line.get("key"), line.get("value") or {})
            return repo.add_commit(branch, header["summary"], files, head.oid)

    def _apply_operation(self, files: dict[str, Blob], key: str | None, value: dict[str, Any]) -> None:
        path = value.get("path", "")
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"file {path}: only base64 content is supported")
            files[path] = Blob(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            if value.get("oid") not in self.lfs_objects:
                raise HubError(422, f"lfsFile {path}: LFS object {value.get('oid')} was never uploaded")
            files[path] = Blob(self.lfs_objects[value["oid"]], lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"deletedFile {path}: no such file", "EntryNotFound")
        elif key == "deletedFolder":
            for name in [name for name in files if name.startswith(path.rstrip("/") + "/")]:
                del files[name]
        elif key != "header":
            raise HubError(400, f"Unknown commit operation {key!r}")


# ------------------------------------------------------------------------------------------------ endpoints
def _upload_mode(path: str, size: int, sample: bytes) -> str:
    binary = b"\0" in sample
    return "lfs" if binary or size >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES) else "regular"


def _folders(paths: list[str]) -> set[str]:
    return {"/".join(parts[:depth]) for parts in (p.split("/") for p in paths) for depth in range(1, len(parts))}


def _tree(commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """Entries under `prefix` (immediate children, or all descendants when `recursive`)."""
    base = prefix.strip("/")
    inside = [path for path in commit.files if not base or path.startswith(base + "/")]
    if base and not inside:
        raise HubError(404, f"{prefix} does not exist at {commit.oid}", "EntryNotFound")
    depth = base.count("/") + 1 if base else 0

    def wanted(path: str) -> bool:
        return recursive or path.count("/") == depth

    folders = [{"type": "directory", "path": path, "oid": hashlib.sha1(path.encode() + commit.oid.encode()).hexdigest()}
               for path in sorted(_folders(inside)) if (not base or path.startswith(base + "/")) and wanted(path)]
    return folders + [commit.files[path].entry(path) for path in sorted(inside) if wanted(path)]


def _card_data(commit: Commit) -> dict[str, Any] | None:
    readme = commit.files.get("README.md")
    if readme is None:
        return None
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", readme.content.decode("utf-8"), re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else None


def _repo_info(repo: Repo, commit: Commit) -> dict[str, Any]:
    card = _card_data(commit) or {}
    return {
        "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
        "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private, "disabled": False,
        "gated": False, "lastModified": commit.date, "createdAt": repo.created_at, "downloads": 0, "likes": 0,
        "tags": list(card.get("tags") or []), "pipeline_tag": card.get("pipeline_tag"),
        "library_name": card.get("library_name"), "cardData": card or None,
        "siblings": [{"rfilename": path} for path in sorted(commit.files)],
    }


def validate_card_metadata(content: str) -> None:
    """The checks of `/api/validate-yaml`: a YAML mapping, a string license, a well-formed `model-index`."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if match is None:
        raise HubError(400, "The card has no YAML metadata block")
    try:
        metadata = yaml.safe_load(match.group(1))
    except yaml.YAMLError as error:
        raise HubError(400, f"Invalid YAML metadata: {error}") from error
    if not isinstance(metadata, dict):
        raise HubError(400, "The YAML metadata must be a mapping")
    if "license" in metadata and not isinstance(metadata["license"], str):
        raise HubError(400, '"license" must be a string')
    if metadata.get("license") == "other" and not isinstance(metadata.get("license_name"), str):
        raise HubError(400, '"license: other" needs a "license_name"')
    for model in metadata.get("model-index") or []:
        for result in model.get("results") or []:
            if not (result.get("task", {}).get("type") and result.get("dataset", {}).get("type")
                    and result.get("dataset", {}).get("name")):
                raise HubError(400, '"model-index" results need task.type, dataset.type and dataset.name')
            if any("type" not in m or not isinstance(m.get("value"), (int, float, str)) for m in result["metrics"]):
                raise HubError(400, '"model-index" metrics need a type and a value')


Route = tuple[str, re.Pattern[str], Callable[..., Any]]


class _Endpoints:
    """The handlers; each takes the request and the named groups of its route, returns (status, body, headers)."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub

    def routes(self) -> list[Route]:
        table = [
            ("POST", r"^/api/repos/create$", self.create_repo),
            ("POST", r"^/api/validate-yaml$", self.validate_yaml),
            ("POST", _API + r"/preupload/(?P<rev>[^/]+)$", self.preupload),
            ("POST", _API + r"/commit/(?P<rev>[^/]+)$", self.commit),
            ("POST", _API + r"/paths-info/(?P<rev>[^/]+)$", self.paths_info),
            ("POST", _API + r"/branch/(?P<rev>[^/]+)$", self.create_branch),
            ("GET", _API + r"/refs$", self.refs),
            ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$", self.tree),
            ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?$", self.info),
            ("POST", r"^/(?:(?P<kind>datasets|spaces)/)?" + _REPO + r"\.git/info/lfs/objects/batch$", self.lfs_batch),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", self.lfs_upload),
            ("GET", _RESOLVE, self.resolve),
            ("HEAD", _RESOLVE, self.resolve),
        ]
        return [(method, re.compile(pattern), handler) for method, pattern, handler in table]

    # -- helpers
    def _repo(self, request: _Request, kind: str | None, repo: str) -> Repo:
        repo_type = REPO_TYPES.get(kind or "models", "model")
        return self.hub.repo(unquote(repo), repo_type, authorized=request.authorized)

    @staticmethod
    def _require_token(request: _Request) -> None:
        if not request.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

    # -- repositories
    def create_repo(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        self._require_token(request)
        payload = request.json()
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        self.hub.create_repo(repo_id, repo_type, private)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return 200, {"url": f"{self.hub.url}/{prefix}{repo_id}", "name": repo_id}, {}

    def create_branch(self, request: _Request, kind: str, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        self._require_token(request)
        stored, branch = self._repo(request, kind, repo), unquote(rev)
        start = (request.json() if request.body else {}).get("startingPoint") or "main"
        with self.hub.lock:
            if branch in stored.branches:
                raise HubError(409, f"Branch {branch} already exists")
            stored.branches[branch] = stored.resolve(start).oid
        return 200, {}, {}

    def refs(self, request: _Request, kind: str, repo: str) -> tuple[int, Any, dict[str, str]]:
        stored = self._repo(request, kind, repo)
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                    for name, oid in sorted(stored.branches.items())]
        return 200, {"branches": branches, "converts": [], "tags": []}, {}

    def info(self, request: _Request, kind: str, repo: str, rev: str | None) -> tuple[int, Any, dict[str, str]]:
        stored = self._repo(request, kind, repo)
        return 200, _repo_info(stored, stored.resolve(unquote(rev or "main"))), {}

    def tree(self, request: _Request, kind: str, repo: str, rev: str, path: str | None) -> tuple[int, Any, dict]:
        commit = self._repo(request, kind, repo).resolve(unquote(rev))
        recursive = request.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        return 200, _tree(commit, unquote(path or ""), recursive), {}

    def paths_info(self, request: _Request, kind: str, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        commit = self._repo(request, kind, repo).resolve(unquote(rev))
        form = parse_qs(request.body.decode())
        found = []
        for path in form.get("paths", []):
            if path in commit.files:
                found.append(commit.files[path].entry(path))
            elif path.strip("/") in _folders(list(commit.files)):
                found.append({"type": "directory", "path": path.strip("/"), "oid": git_blob_oid(path.encode())})
        return 200, found, {}

    def validate_yaml(self, request: _Request) -> tuple[int, Any, dict[str, str]]:
        validate_card_metadata(request.json().get("content", ""))
        return 200, {"errors": [], "warnings": []}, {}

    # -- uploads
    def preupload(self, request: _Request, kind: str, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        self._require_token(request)
        if "create_pr" in request.query:
            raise HubError(400, "Pull requests are not supported by the local Hub")
        head = self._repo(request, kind, repo).head(unquote(rev))
        answers = []
        for item in request.json()["files"]:
            mode = _upload_mode(item["path"], item["size"], base64.b64decode(item["sample"]))
            existing = head.files.get(item["path"])
            answers.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False,
                            "oid": None if existing is None else existing.etag})
        return 200, {"files": answers, "commitOid": head.oid}, {}

    def lfs_batch(self, request: _Request, kind: str | None, repo: str) -> tuple[int, Any, dict[str, str]]:
        self._require_token(request)
        self._repo(request, kind, repo)
        payload = request.json()
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "Only the basic LFS upload transfer is supported")
        objects = []
        for item in payload["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.hub.lfs_objects:
                answer["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{item['oid']}"}}
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def lfs_upload(self, request: _Request, oid: str) -> tuple[int, Any, dict[str, str]]:
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match LFS oid {oid}")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = request.body
        return 200, {}, {}

    def commit(self, request: _Request, kind: str, repo: str, rev: str) -> tuple[int, Any, dict[str, str]]:
        self._require_token(request)
        if "create_pr" in request.query:
            raise HubError(400, "Pull requests are not supported by the local Hub")
        stored = self._repo(request, kind, repo)
        lines = [json.loads(line) for line in request.body.decode().splitlines() if line.strip()]
        commit = self.hub.apply_commit(stored, unquote(rev), lines)
        prefix = "" if stored.repo_type == "model" else f"{stored.repo_type}s/"
        url = f"{self.hub.url}/{prefix}{stored.repo_id}/commit/{commit.oid}"
        return 200, {"success": True, "commitOid": commit.oid, "commitUrl": url}, {}

    # -- downloads
    def resolve(self, request: _Request, kind: str | None, repo: str, rev: str, path: str) -> tuple[int, Any, dict]:
        commit = self._repo(request, kind, repo).resolve(unquote(rev))
        blob = commit.files.get(unquote(path))
        if blob is None:
            raise HubError(404, f"Entry not found: {unquote(path)}", "EntryNotFound")
        headers = {"ETag": f'"{blob.etag}"', "X-Repo-Commit": commit.oid, "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.content))})
        return 200, blob.content, headers


# ------------------------------------------------------------------------------------------------ HTTP glue
@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes

    @property
    def authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Malformed JSON body: {error}") from error


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    routes = _Endpoints(hub).routes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            request = _Request(self.command, url.path, parse_qs(url.query), self.headers, body)
            with hub.lock:
                hub.requests.append((self.command, url.path))
            try:
                status, payload, headers = _route(routes, request)
            except HubError as error:
                code_header = {"X-Error-Code": error.code} if error.code else {}
                status, payload, headers = error.status, {"error": error.message, **error.extra}, code_header
            except (KeyError, TypeError, ValueError) as error:  # malformed client payloads
                status, payload, headers = 400, {"error": f"Bad request: {error!r}"}, {}
            self._send(status, payload, headers)

        def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
            content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers, "Content-Length": str(len(content))}
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _dispatch

    return Handler


def _route(routes: list[Route], request: _Request) -> tuple[int, Any, dict[str, str]]:
    for method, pattern, handler in routes:
        match = pattern.match(request.path)
        if match and method == request.method:
            return handler(request, **match.groupdict())
    raise HubError(404, f"The local Hub does not implement {request.method} {request.path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an in-memory Hugging Face Hub on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    port = parser.parse_args(argv).port
    hub = LocalHub(port=port).start()
    print(f"Local Hub at {hub.url}; set HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 and any HF_TOKEN.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()

