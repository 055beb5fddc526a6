"""A test Hub on 127.0.0.1: the endpoints ``huggingface_hub`` (snapshot_download, repo_info, HfFileSystem)
and ``datasets`` call, serving repos built in the tests. Point ``HF_ENDPOINT`` at ``FakeHub.url``.

| request                                                    | answer                                       |
|------------------------------------------------------------|----------------------------------------------|
| GET  /api/{models,datasets}/ORG/NAME[/revision/REV]        | repo info: id, sha (the commit), siblings    |
| GET  /api/{models,datasets}/ORG/NAME/tree/REV[/PATH]       | files (oid, size, lfs {oid: sha256, size})   |
| POST /api/{models,datasets}/ORG/NAME/paths-info/REV        | the same entries for the form's ``paths``    |
| HEAD/GET [/datasets]/ORG/NAME/resolve/REV/PATH             | the bytes; X-Repo-Commit, ETag, X-Linked-Etag|

Errors as the real Hub sends them: unknown repo 404 ``X-Error-Code: RepoNotFound``, unknown revision
404 ``RevisionNotFound``, unknown file 404 ``EntryNotFound``, a gated repo without an Authorization
header 401 ``GatedRepo``. Files named ``*.safetensors`` are LFS files (their ETag is their sha256), the
others plain git files (ETag: the git blob sha1), as on the Hub.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

API = re.compile(r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>revision|tree|paths-info)/(?P<rest>.+))?$")
RESOLVE = re.compile(r"^/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def is_lfs(path: str) -> bool:
    """Files stored with LFS on the fake Hub (as on the real one: the weights)."""
    return path.endswith((".safetensors", ".parquet"))


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file's bytes."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    """One repo: commits (files by path) and refs (branch or tag -> commit)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    is_gated: bool = False


@dataclass
class FakeHub:
    """The test Hub's repos and its server; ``requests`` logs every (method, path) served."""

    repos: dict[tuple[str, str], FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def add_commit(self, repo: str, files: dict[str, bytes], *, kind: str = "models", ref: str = "main",
                   is_gated: bool = False) -> str:
        """Commit ``files`` (the whole tree) to ``repo`` on branch/tag ``ref``; returns the commit id."""
        fake = self.repos.setdefault((kind, repo), FakeRepo())
        fake.is_gated = fake.is_gated or is_gated
        digest = hashlib.sha1(f"{repo}:{len(fake.commits)}".encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        commit = digest.hexdigest()
        fake.commits[commit] = dict(files)
        fake.refs[ref] = commit
        return commit

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        assert self.server is not None, "start the hub first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeHub:
        """Serve on a free port of 127.0.0.1 in a daemon thread."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (later requests are refused connections)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _entry(path: str, content: bytes) -> dict:
    """A tree / paths-info entry as the Hub lists it."""
    entry = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
    if is_lfs(path):
        entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content), "pointerSize": 134}
    return entry


def _directories(paths: list[str]) -> list[str]:
    """Every folder above the given file paths."""
    return sorted({"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)})


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, *, is_head: bool = False):
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not is_head:
                self.wfile.write(body)

        def _json(self, value: object) -> None:
            self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def _error(self, status: int, code: str, *, is_head: bool = False) -> None:
            body = json.dumps({"error": code}).encode()
            self._send(status, body, {"X-Error-Code": code, "X-Error-Message": code,
                                      "Content-Type": "application/json"}, is_head=is_head)

        def _repo(self, kind: str, repo: str, is_head: bool = False) -> FakeRepo | None:
            fake = hub.repos.get((kind, repo))
            if fake is None:
                self._error(404, "RepoNotFound", is_head=is_head)
                return None
            if fake.is_gated and not self.headers.get("Authorization"):
                self._error(401, "GatedRepo", is_head=is_head)
                return None
            return fake

        def _commit(self, fake: FakeRepo, revision: str, is_head: bool = False) -> str | None:
            revision = unquote(revision)
            commit = fake.refs.get(revision, revision if revision in fake.commits else None)
            if commit is None:
                self._error(404, "RevisionNotFound", is_head=is_head)
            return commit

        def _api(self, match: re.Match, query: dict) -> None:
            kind, op = match["kind"], match["op"]
            fake = self._repo(kind, match["repo"])
            if fake is None:
                return
            revision, _, sub = (match["rest"] or "main").partition("/")
            commit = self._commit(fake, revision)
            if commit is None:
                return
            files = fake.commits[commit]
            if op in (None, "revision"):
                self._json({"id": match["repo"], "sha": commit, "private": False,
                            "gated": "auto" if fake.is_gated else False,
                            "siblings": [{"rfilename": p} for p in sorted(files)]})
            elif op == "tree":
                self._json(self._tree(files, unquote(sub), query.get("recursive", ["false"])[0] == "true"))
            else:
                wanted = query.get("paths", [])
                known = [_entry(p, files[p]) for p in wanted if p in files]
                known += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0}
                          for d in _directories(list(files)) if d in wanted]
                self._json(known)

        def _tree(self, files: dict[str, bytes], under: str, recursive: bool) -> list[dict]:
            prefix = f"{under.rstrip('/')}/" if under else ""
            inside = [p for p in sorted(files) if p.startswith(prefix)]
            if not inside and under:
                return []
            entries = []
            for folder in _directories(inside):
                if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix):]):
                    entries.append({"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
            for path in inside:
                if recursive or "/" not in path[len(prefix):]:
                    entries.append(_entry(path, files[path]))
            return entries

        def _resolve(self, match: re.Match, is_head: bool) -> None:
            fake = self._repo(match["kind"] or "models", match["repo"], is_head)
            if fake is None:
                return
            commit = self._commit(fake, match["rev"], is_head)
            if commit is None:
                return
            path = unquote(match["path"])
            if path not in fake.commits[commit]:
                self._error(404, "EntryNotFound", is_head=is_head)
                return
            content = fake.commits[commit][path]
            etag = hashlib.sha256(content).hexdigest() if is_lfs(path) else git_blob_sha1(content)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"',
                       "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            status, body = 200, content
            ranged = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if ranged:
                start = int(ranged[1])
                end = int(ranged[2]) if ranged[2] else len(content) - 1
                body = content[start:end + 1]
                status = 206
                headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(content)}"
            self._send(status, body, headers, is_head=is_head)

        def _route(self, method: str) -> None:
            split = urlsplit(self.path)
            hub.requests.append((method, split.path))
            query = parse_qs(split.query)
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                query.update(parse_qs(raw) if "=" in raw else json.loads(raw or "{}"))
            api = API.match(split.path)
            if api:
                self._api(api, query)
                return
            resolve = RESOLVE.match(split.path)
            if resolve and method in ("GET", "HEAD"):
                self._resolve(resolve, is_head=method == "HEAD")
                return
            self._error(404, "EntryNotFound", is_head=method == "HEAD")

        def do_GET(self) -> None:  # noqa: N802
            self._route("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._route("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

    return Handler
