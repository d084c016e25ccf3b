"""A small Hugging Face Hub emulator on 127.0.0.1, for tests that must never reach the real Hub.

It speaks the part of the Hub's HTTP API that ``huggingface_hub`` (2.x) uses to download
model repos, with the same headers and redirects:

- ``HEAD/GET /{repo_id}/resolve/{revision}/{path}``
    - regular (git) files: ``307`` to ``/api/resolve-cache/models/{repo_id}/{sha}/{path}`` on
      the same host, which answers with ``X-Repo-Commit``, ``ETag`` (the git blob sha1) and the
      body. ``huggingface_hub`` follows same-host redirects.
    - LFS files (``*.safetensors``, ``*.bin``, ...): ``302`` to a second listener (the "CDN",
      another origin) with ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256 of the content) and
      ``X-Linked-Size``. ``huggingface_hub`` stops at that redirect for the metadata, then
      downloads from the CDN without the ``Authorization`` header. The CDN honours ``Range``.
    - errors: ``404`` with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` /
      ``EntryNotFound`` (the latter with ``X-Repo-Commit``, so the client caches the absence);
      ``401`` + ``RepoNotFound`` for anonymous requests to a private or missing repo (as the
      real Hub does), ``401`` "Invalid credentials" for an unknown token.
- ``GET /api/models/{repo_id}[/revision/{revision}]``: repo info (``sha``, ``siblings``).
- ``GET /api/models/{repo_id}/tree/{revision}[/{path}]?recursive=...``: the file listing
  ``snapshot_download`` and ``list_repo_tree`` use.

Faults can be injected per ``(repo_id, filename)`` to test the client's defences: corrupted
bytes of the right length (headers still advertise the real sha256), a redirect loop, a slow
body, and a body longer than advertised.

Example:
    >>> with HubServer() as hub:
    ...     sha = hub.add_repo("user/tiny", {"config.json": b"{}"})
    ...     hub.url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

DEFAULT_TOKEN = "hf_vaekit_test_token"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx")
FaultKind = Literal["corrupt", "redirect_loop", "slow", "oversize"]


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as ``ETag`` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_hex(data: bytes) -> str:
    """The sha256 of a file: what the Hub reports as ``X-Linked-Etag`` for LFS files."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class LoggedRequest:
    """One request the emulator received (``server`` is ``"hub"`` or ``"cdn"``)."""

    server: str
    method: str
    path: str
    headers: Mapping[str, str]
    status: int


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    parent: str | None
    message: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_patterns: tuple[str, ...] = LFS_PATTERNS

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)

    def is_lfs(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.lfs_patterns)


@dataclass
class Fault:
    kind: FaultKind
    remaining: int | None  # requests still affected; None = all of them
    delay: float = 0.0
    extra_bytes: int = 0


class _Stop(Exception):
    """Raised in a handler thread to abandon a response (client gone or server stopping)."""


class HubServer:
    """Hub emulator: a hub listener and a CDN listener on 127.0.0.1, random ports.

    Args:
        token: The one valid access token; it can read every private repo.

    Attributes:
        url: Base URL of the hub listener, to use as ``HF_ENDPOINT``.
        cdn_url: Base URL of the CDN listener (a different origin).
        token: The valid token.
    """

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> content, served by the CDN
        self._faults: dict[tuple[str, str], Fault] = {}
        self._log: list[LoggedRequest] = []
        self._stopping = threading.Event()
        self._commit_counter = 0
        self._hub = self._make_listener("hub")
        self._cdn = self._make_listener("cdn")
        self._threads: list[threading.Thread] = []
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        for listener in (self._hub, self._cdn):
            thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05})
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for listener in (self._hub, self._cdn):
            listener.shutdown()
            listener.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- repos
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        branch: str = "main",
        private: bool = False,
        message: str = "Upload",
    ) -> str:
        """Commit ``files`` as the whole tree of ``branch`` (creating repo and branch if needed).

        A new branch starts from ``main``'s head. Each call makes a new commit, so the same
        branch gets a new sha every time.

        Returns:
            The 40-hex commit sha.
        """
        for path, data in files.items():
            if not isinstance(data, bytes):
                raise TypeError(f"file {path!r}: expected bytes, got {type(data).__name__}")
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                repo = self._repos[repo_id] = Repo(repo_id=repo_id, private=private)
            repo.private = private
            parent = repo.branches.get(branch, repo.branches.get("main"))
            self._commit_counter += 1
            digest = hashlib.sha1()
            digest.update(f"{repo_id}\0{branch}\0{parent}\0{self._commit_counter}".encode())
            for path in sorted(files):
                digest.update(f"\0{path}\0{sha256_hex(files[path])}".encode())
            sha = digest.hexdigest()
            repo.commits[sha] = Commit(sha=sha, files=dict(files), parent=parent, message=message)
            repo.branches[branch] = sha
            for data in files.values():
                self._blobs[sha256_hex(data)] = data
            return sha

    def branch_sha(self, repo_id: str, branch: str = "main") -> str:
        with self._lock:
            return self._repos[repo_id].branches[branch]

    # ---------------------------------------------------------------- faults
    def inject_fault(
        self,
        repo_id: str,
        filename: str,
        kind: FaultKind,
        *,
        times: int | None = None,
        delay: float = 1.0,
        extra_bytes: int = 16,
    ) -> None:
        """Make the next ``times`` downloads of ``filename`` misbehave (all of them if None).

        Kinds:
            ``corrupt``: same length, a few bits flipped near the end; headers still advertise
                the real sha256 and size (LFS files: served by the CDN).
            ``redirect_loop``: ``/resolve`` answers with a redirect to itself, forever.
            ``slow``: headers at once, then the body only after ``delay`` seconds.
            ``oversize``: ``extra_bytes`` more bytes than ``X-Linked-Size`` advertises.
        """
        if kind not in ("corrupt", "redirect_loop", "slow", "oversize"):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._faults[(repo_id, filename)] = Fault(kind, times, delay, extra_bytes)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, repo_id: str, filename: str, kinds: Iterable[str]) -> Fault | None:
        with self._lock:
            fault = self._faults.get((repo_id, filename))
            if fault is None or fault.kind not in kinds:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[(repo_id, filename)]
            return fault

    # ---------------------------------------------------------------- request log
    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of every request received so far, in order."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def client_env(self) -> dict[str, str]:
        """Environment variables that point a subprocess's ``huggingface_hub`` here."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "5",
        }

    # ---------------------------------------------------------------- HTTP plumbing
    def _make_listener(self, name: str) -> ThreadingHTTPServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def do_HEAD(self) -> None:
                self._dispatch("HEAD")

            def do_GET(self) -> None:
                self._dispatch("GET")

            def _dispatch(self, method: str) -> None:
                response = _Response(self, method)
                try:
                    if name == "hub":
                        server._handle_hub(method, self.path, self.headers, response)
                    else:
                        server._handle_cdn(method, self.path, self.headers, response)
                except (BrokenPipeError, ConnectionResetError, _Stop):
                    self.close_connection = True
                finally:
                    with server._lock:
                        server._log.append(
                            LoggedRequest(
                                server=name,
                                method=method,
                                path=self.path,
                                headers={k.lower(): v for k, v in self.headers.items()},
                                status=response.status,
                            )
                        )

        listener = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        listener.daemon_threads = True
        listener.block_on_close = False
        return listener

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stop

    # ---------------------------------------------------------------- hub routes
    def _check_access(
        self, repo: Repo | None, headers: Mapping[str, str], response: _Response
    ) -> bool:
        """False (and an error sent) when the caller may not see ``repo``."""
        auth = headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if token is not None and token != self.token:
            response.error(401, None, "Invalid credentials in Authorization header")
            return False
        if repo is None or (repo.private and token is None):
            # Like the real Hub: anonymous callers get 401 for both private and missing repos.
            status = 401 if token is None else 404
            response.error(status, "RepoNotFound", "Repository not found")
            return False
        return True

    def _handle_hub(
        self, method: str, raw_path: str, headers: Mapping[str, str], response: _Response
    ) -> None:
        split = urllib.parse.urlsplit(raw_path)
        parts = split.path.strip("/").split("/")
        query = urllib.parse.parse_qs(split.query)
        if parts[:3] == ["api", "resolve-cache", "models"]:
            return self._serve_resolve_cache(method, parts[3:], headers, response)
        if parts[:2] == ["api", "models"]:
            return self._serve_api(method, parts[2:], query, headers, response)
        for n_repo in (1, 2):
            if len(parts) > n_repo + 2 and parts[n_repo] == "resolve":
                repo_id = "/".join(parts[:n_repo])
                revision = urllib.parse.unquote(parts[n_repo + 1])
                path = urllib.parse.unquote("/".join(parts[n_repo + 2 :]))
                return self._serve_resolve(
                    method, raw_path, repo_id, revision, path, headers, response
                )
        response.error(404, None, "Not found")

    def _lookup(self, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def _serve_resolve(
        self,
        method: str,
        raw_path: str,
        repo_id: str,
        revision: str,
        path: str,
        headers: Mapping[str, str],
        response: _Response,
    ) -> None:
        repo = self._lookup(repo_id)
        if not self._check_access(repo, headers, response):
            return
        assert repo is not None
        commit = repo.resolve(revision)
        if commit is None:
            return response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        data = commit.files.get(path)
        if data is None:
            return response.error(
                404, "EntryNotFound", f"{path} does not exist on {revision}", commit=commit.sha
            )
        if self._take_fault(repo_id, path, ("redirect_loop",)):
            return response.redirect(302, raw_path, {"X-Repo-Commit": commit.sha})
        quoted_repo = urllib.parse.quote(repo_id)
        quoted_path = urllib.parse.quote(path)
        if repo.is_lfs(path):
            oid = sha256_hex(data)
            query = urllib.parse.urlencode({"repo": repo_id, "file": path, "sig": "emulated"})
            return response.redirect(
                302,
                f"{self.cdn_url}/cdn/{oid}?{query}",
                {
                    "X-Repo-Commit": commit.sha,
                    "ETag": f'"{git_blob_sha1(data)}"',
                    "X-Linked-Etag": f'"{oid}"',
                    "X-Linked-Size": str(len(data)),
                },
            )
        return response.redirect(
            307,
            f"/api/resolve-cache/models/{quoted_repo}/{commit.sha}/{quoted_path}",
            {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"'},
        )

    def _serve_resolve_cache(
        self, method: str, parts: list[str], headers: Mapping[str, str], response: _Response
    ) -> None:
        # /api/resolve-cache/models/{repo_id}/{sha}/{path}: the same-host target of /resolve.
        repo, n_repo = None, 1
        for n_repo in (2, 1):
            repo = self._lookup("/".join(parts[:n_repo]))
            if repo is not None and len(parts) > n_repo + 1:
                break
            repo = None
        if not self._check_access(repo, headers, response):
            return
        assert repo is not None
        commit = repo.commits.get(parts[n_repo])
        if commit is None:
            return response.error(404, "RevisionNotFound", "Invalid rev id")
        path = urllib.parse.unquote("/".join(parts[n_repo + 1 :]))
        data = commit.files.get(path)
        if data is None:
            return response.error(404, "EntryNotFound", "Entry not found", commit=commit.sha)
        self._send_body(
            method,
            data,
            repo.repo_id,
            path,
            headers,
            response,
            {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha1(data)}"'},
        )

    def _serve_api(
        self,
        method: str,
        parts: list[str],
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        response: _Response,
    ) -> None:
        # /api/models/{repo_id}[/revision/{rev}] or /api/models/{repo_id}/tree/{rev}[/{path}]
        n_repo = 2 if len(parts) >= 2 and self._lookup("/".join(parts[:2])) is not None else 1
        repo = self._lookup("/".join(parts[:n_repo]))
        rest = parts[n_repo:]
        if not self._check_access(repo, headers, response):
            return
        assert repo is not None
        if not rest or rest[0] == "revision":
            revision = urllib.parse.unquote(rest[1]) if len(rest) > 1 else "main"
            commit = repo.resolve(revision)
            if commit is None:
                return response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            info = {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": [self._sibling(repo, p, d) for p, d in sorted(commit.files.items())],
            }
            return response.json(method, info)
        if rest[0] == "tree" and len(rest) >= 2:
            revision = urllib.parse.unquote(rest[1])
            prefix = urllib.parse.unquote("/".join(rest[2:])).strip("/")
            commit = repo.resolve(revision)
            if commit is None:
                return response.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return response.json(method, self._tree(repo, commit, prefix, recursive))
        response.error(404, None, "Not found")

    @staticmethod
    def _sibling(repo: Repo, path: str, data: bytes) -> dict[str, Any]:
        sibling: dict[str, Any] = {
            "rfilename": path,
            "size": len(data),
            "blobId": git_blob_sha1(data),
        }
        if repo.is_lfs(path):
            sibling["lfs"] = {"sha256": sha256_hex(data), "size": len(data), "pointerSize": 134}
        return sibling

    @staticmethod
    def _tree(repo: Repo, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        base = f"{prefix}/" if prefix else ""
        for path, data in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rel_parts = path[len(base) :].split("/")
            # Directories on the way to this file.
            depth = len(rel_parts) - 1 if recursive else min(1, len(rel_parts) - 1)
            for i in range(depth):
                dir_path = base + "/".join(rel_parts[: i + 1])
                entries.setdefault(
                    dir_path,
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(dir_path.encode()).hexdigest(),
                        "size": 0,
                        "path": dir_path,
                    },
                )
            if recursive or len(rel_parts) == 1:
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": git_blob_sha1(data),
                    "size": len(data),
                    "path": path,
                }
                if repo.is_lfs(path):
                    entry["lfs"] = {"oid": sha256_hex(data), "size": len(data), "pointerSize": 134}
                entries[path] = entry
        return list(entries.values())

    # ---------------------------------------------------------------- CDN route
    def _handle_cdn(
        self, method: str, raw_path: str, headers: Mapping[str, str], response: _Response
    ) -> None:
        split = urllib.parse.urlsplit(raw_path)
        parts = split.path.strip("/").split("/")
        query = urllib.parse.parse_qs(split.query)
        with self._lock:
            data = self._blobs.get(parts[1]) if len(parts) == 2 and parts[0] == "cdn" else None
        if data is None:
            return response.error(404, None, "NoSuchKey")
        repo_id = query.get("repo", [""])[0]
        path = query.get("file", [""])[0]
        self._send_body(method, data, repo_id, path, headers, response, {"ETag": f'"{parts[1]}"'})

    def _send_body(
        self,
        method: str,
        data: bytes,
        repo_id: str,
        path: str,
        headers: Mapping[str, str],
        response: _Response,
        extra_headers: Mapping[str, str],
    ) -> None:
        fault = None
        if method == "GET":
            fault = self._take_fault(repo_id, path, ("corrupt", "slow", "oversize"))
        body = data
        if fault is not None and fault.kind == "corrupt":
            # Same length, low bits flipped in the last bytes (tensor data, not the header).
            tail = bytes(b ^ 0x01 for b in body[-8:])
            body = body[:-8] + tail
        if fault is not None and fault.kind == "oversize":
            body = body + b"\0" * fault.extra_bytes
        status, range_headers = 200, {}
        range_header = headers.get("Range")
        if range_header and range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header[len("bytes=") : -1])
            if start < len(body):
                status = 206
                range_headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                body = body[start:]
        response.start(status, {**extra_headers, **range_headers, "Content-Length": str(len(body))})
        if method == "HEAD":
            return
        if fault is not None and fault.kind == "slow":
            self._sleep(fault.delay)
        response.write(body)


class _Response:
    """Tiny helper around BaseHTTPRequestHandler that remembers the status for the log."""

    def __init__(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.handler = handler
        self.method = method
        self.status = 0

    def start(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.handler.send_response(status)
        for key, value in headers.items():
            self.handler.send_header(key, value)
        self.handler.end_headers()

    def write(self, body: bytes) -> None:
        self.handler.wfile.write(body)
        self.handler.wfile.flush()

    def error(
        self, status: int, code: str | None, message: str, *, commit: str | None = None
    ) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if code is not None:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        self.start(status, headers)
        if self.method != "HEAD":
            self.write(body)

    def redirect(self, status: int, location: str, headers: Mapping[str, str]) -> None:
        self.start(status, {**headers, "Location": location, "Content-Length": "0"})

    def json(self, method: str, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.start(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
        if method != "HEAD":
            self.write(body)


__all__ = ["DEFAULT_TOKEN", "HubServer", "LoggedRequest", "git_blob_sha1", "sha256_hex"]
