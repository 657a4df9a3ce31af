"""The HTTP face of the local Hub: the routes the real ``huggingface_hub`` client calls.

Routing is done on the *raw* request path, because revisions arrive percent-encoded
(``refs%2Fpr%2F1``) and must not be confused with the file path that follows them. Every 401/403/404
carries ``X-Error-Code`` so the client raises the right error (see shared/hub-protocol.md §4, §9).
Files are served from disk in chunks, with true Range support, so multi-GB files never sit in memory.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...yaml_limits import MAX_SIZE, expanded_size
from .faults import Cut, FaultPolicy, HubStats
from .storage import FileEntry, NotFound, Operation, RepoRecord, Store, StoreError, is_lfs, lfs_pointer

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_PAGE = 1000
_CARD_BYTES = 1 << 20  # a README read for cardData or a page; a card is kilobytes
_CHUNK = 4 << 20
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_SEG = r"[^/]+"


# ---------------------------------------------------------------------------- helpers


def _error(status: int, message: str, kind: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if kind:
        extra["X-Error-Code"] = kind
    return JSONResponse({"error": message}, status_code=status, headers=extra)


def _raw_path(request: Request) -> str:
    """The path as sent, percent-encoding kept: a revision ``feat%2Fx`` stays one segment."""
    raw = request.scope.get("raw_path", b"").decode("latin-1") or quote(request.url.path)
    return raw.split("?", 1)[0]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _entry_json(path: str, entry: FileEntry) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
    return data


def _dir_json(path: str) -> dict[str, Any]:
    import hashlib

    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end) inclusive, None for no Range, or "unsatisfiable"."""
    if not header:
        return None
    if size == 0:  # no byte of an empty file can be named
        return "unsatisfiable"
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return "unsatisfiable"
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


# ---------------------------------------------------------------------------- the app


class _Hub:
    """Request handlers over one Store; routes are matched on the raw path."""

    def __init__(self, store: Store, tokens: Mapping[str, str], orgs: Mapping[str, list[str]], lfs_threshold: int | None) -> None:
        self.store = store
        self.tokens = dict(tokens)
        self.orgs = {user: list(o) for user, o in orgs.items()}
        self.lfs_threshold = lfs_threshold
        self._secret = os.urandom(32)  # signs LFS upload links for this server's lifetime
        self.stats = HubStats()
        self.faults = FaultPolicy()
        api = rf"/api/(?P<type>models|datasets|spaces)/{_REPO}"
        file_prefix = r"/(?:(?P<tp>datasets|spaces)/)?" + _REPO
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/api/whoami-v2"), self.whoami),
            ("POST", re.compile(r"/api/validate-yaml"), self.validate_yaml),
            ("POST", re.compile(r"/api/repos/create"), self.create_repo),
            ("DELETE", re.compile(r"/api/repos/delete"), self.delete_repo),
            ("PUT", re.compile(r"/api/(?P<type>models|datasets|spaces)/" + _REPO + r"/settings"), self.settings),
            ("GET", re.compile(r"/api/(?P<type>models|datasets|spaces)"), self.list_repos),
            ("GET", re.compile(api + rf"(?:/revision/(?P<rev>{_SEG}))?"), self.repo_info),
            ("GET", re.compile(api + rf"/tree/(?P<rev>{_SEG})(?:/(?P<path>.+))?"), self.tree),
            ("POST", re.compile(api + rf"/paths-info/(?P<rev>{_SEG})"), self.paths_info),
            ("POST", re.compile(api + rf"/preupload/(?P<rev>{_SEG})"), self.preupload),
            ("POST", re.compile(api + rf"/commit/(?P<rev>{_SEG})"), self.commit),
            ("POST", re.compile(api + rf"/branch/(?P<branch>{_SEG})"), self.create_branch),
            ("POST", re.compile(api + rf"/tag/(?P<rev>{_SEG})"), self.create_tag),
            ("DELETE", re.compile(api + rf"/tag/(?P<tag>{_SEG})"), self.delete_tag),
            ("DELETE", re.compile(api + rf"/branch/(?P<branch>{_SEG})"), self.delete_branch),
            ("GET", re.compile(api + r"/refs"), self.list_refs),
            ("GET", re.compile(api + rf"/commits/(?P<rev>{_SEG})"), self.list_commits),
            ("POST", re.compile(file_prefix + r"\.git/info/lfs/objects/batch"), self.lfs_batch),
            ("PUT", re.compile(r"/lfs-upload/(?P<oid>[0-9a-f]{64})"), self.lfs_upload),
            ("POST", re.compile(r"/lfs-verify"), self.lfs_verify),
            ("HEAD", re.compile(file_prefix + rf"/resolve/(?P<rev>{_SEG})/(?P<path>.+)"), self.resolve),
            ("GET", re.compile(file_prefix + rf"/resolve/(?P<rev>{_SEG})/(?P<path>.+)"), self.resolve),
            # One-segment ids ("gpt2") exist on huggingface.co but cannot be created here: none is found.
            ("GET", re.compile(rf"/api/(?:models|datasets|spaces)/(?P<name>{_SEG})(?:/revision/{_SEG})?"),
             self.no_such_repo),
            ("HEAD", re.compile(rf"/(?P<name>{_SEG})/resolve/{_SEG}/.+"), self.no_such_repo),
            ("GET", re.compile(rf"/(?P<name>{_SEG})/resolve/{_SEG}/.+"), self.no_such_repo),
            # the page a repo's URL opens (what push and the demo print, and cards link to)
            ("GET", re.compile(r"/(?!api/)(?:(?P<tp>datasets|spaces)/)?" + _REPO + rf"(?:/tree/(?P<rev>{_SEG}))?/?"),
             self.page),
        ]

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, request: Request, body: bytes) -> Response:
        path = _raw_path(request)
        if self._unknown_token(request) and path != "/api/whoami-v2":  # whoami says it in its own words
            # as huggingface.co does, even for public repos: a token that expired or was mistyped is no
            # anonymous read, and a tool must be able to tell its user so
            return _error(401, "Invalid credentials in Authorization header")
        for method, pattern, handler in self.routes:
            if method != request.method:
                continue
            match = pattern.fullmatch(path)
            if match:
                self.stats.count(handler.__name__)
                delay = self.faults.take_delay(path)
                if delay:
                    time.sleep(delay)
                status = self.faults.take_status(path)
                if status is not None:
                    headers = {"Retry-After": self.faults.retry_after} if self.faults.retry_after else None
                    return _error(status, f"injected failure {status}", headers=headers)
                params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                try:
                    return handler(request, body, **params)
                except StoreError as exc:
                    return _error(exc.code, str(exc), exc.kind)
        if path == "/api/agent-harnesses":
            return _error(404, "not served by the local hub")
        if path.startswith("/api/"):
            # a call this server does not answer (discussions, moves, Space runtimes): say so; a 404 would
            # read as a missing file or repo
            return _error(501, f"{request.method} {path} is not supported by hubmerge's local Hub, which serves "
                          "what merging, evaluating and publishing use (repos, branches, tags, commits, files, PRs)")
        return _error(404, f"no route for {request.method} {path}", "EntryNotFound")

    # ------------------------------------------------------------------ auth

    def user(self, request: Request) -> str | None:
        token = _bearer(request)
        return self.tokens.get(token) if token else None

    def _unknown_token(self, request: Request) -> bool:
        token = _bearer(request)
        return bool(token) and token not in self.tokens

    def _may_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))

    def _readable(self, request: Request, repo_type: str, repo_id: str) -> RepoRecord:
        record = self.store.get_repo(repo_type, repo_id)
        if record.private and not self._may_write(self.user(request), record.namespace):
            raise NotFound(f"Repository {repo_id} not found", "RepoNotFound")
        return record

    def _writable(self, request: Request, repo_type: str, repo_id: str) -> RepoRecord:
        user = self.user(request)
        if user is None:
            raise StoreError("Invalid credentials: a valid write token is required", code=401)
        record = self._readable(request, repo_type, repo_id)
        if not self._may_write(user, record.namespace):
            raise StoreError(f"You don't have the rights to write to {repo_id}", code=403)
        return record

    def base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def repo_url(self, request: Request, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url(request)}/{_PREFIX[repo_type]}{repo_id}"

    # ------------------------------------------------------------------ account

    def whoami(self, request: Request, body: bytes) -> Response:
        user = self.user(request)
        if user is None:
            return _error(401, "Invalid user token.")
        orgs = [{"name": o, "type": "org"} for o in self.orgs.get(user, [])]
        return JSONResponse({
            "type": "user", "name": user, "fullname": user, "email": None, "orgs": orgs,
            "avatarUrl": f"/avatars/{user}.svg",  # as huggingface.co gives a user without a picture (Gradio reads it)
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        })

    def validate_yaml(self, request: Request, body: bytes) -> Response:
        return JSONResponse({"errors": [], "warnings": []})

    # ------------------------------------------------------------------ repos

    def create_repo(self, request: Request, body: bytes) -> Response:
        data = json.loads(body or b"{}")
        user = self.user(request)
        if user is None:
            return _error(401, "Invalid credentials: a valid write token is required")
        namespace = data.get("organization") or user
        repo_type = data.get("type") or "model"
        if repo_type not in _PREFIX:
            return _error(400, f"unknown repo type {repo_type}")
        repo_id = f"{namespace}/{data.get('name')}"
        if not self._may_write(user, namespace):
            return _error(403, f"You don't have the rights to create repos in {namespace}")
        url = self.repo_url(request, repo_type, repo_id)
        try:
            extra = {"sdk": data["sdk"]} if data.get("sdk") else {}
            self.store.create_repo(repo_type, repo_id, private=data.get("visibility") == "private" or bool(data.get("private")), extra=extra)
        except StoreError as exc:
            if exc.code == 409:
                return JSONResponse({"error": str(exc), "url": url}, status_code=409)
            raise
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, request: Request, body: bytes) -> Response:
        data = json.loads(body or b"{}")
        user = self.user(request)
        if user is None:
            return _error(401, "Invalid credentials: a valid write token is required")
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or user}/{data.get('name')}"
        self._writable(request, repo_type, repo_id)
        self.store.delete_repo(repo_type, repo_id)
        return JSONResponse({})

    def settings(self, request: Request, body: bytes, type: str, ns: str, name: str) -> Response:
        repo_type, repo_id = _TYPES[type], f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        data = json.loads(body or b"{}")
        if data.get("visibility") in ("private", "public"):  # what huggingface_hub 1.x+ sends
            self.store.set_private(repo_type, repo_id, data["visibility"] == "private")
        elif "private" in data:
            self.store.set_private(repo_type, repo_id, bool(data["private"]))
        return JSONResponse({})

    def _info(self, request: Request, record: RepoRecord, sha: str, blobs: bool) -> dict[str, Any]:
        repo_type, repo_id = record.repo_type, record.repo_id
        commit = self.store.commit(repo_type, repo_id, sha)
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling["size"] = entry.size
                sibling["blobId"] = entry.oid
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "id": repo_id, "_id": repo_id, "author": record.namespace, "sha": sha, "private": record.private,
            "disabled": False, "gated": False, "lastModified": commit.date, "createdAt": record.created,
            "tags": [], "downloads": 0, "likes": 0, "siblings": siblings,
        }
        if (card := self._card_data(commit.tree.get("README.md"))) is not None:
            info["cardData"] = card
            tags = card.get("tags")
            info["tags"] = [str(t) for t in tags] if isinstance(tags, list) else []
        if repo_type == "space":
            info["sdk"] = record.extra.get("sdk", "gradio")
        return info

    def _card_data(self, readme: FileEntry | None) -> dict[str, Any] | None:
        """The README's YAML front matter, which huggingface.co serves as ``cardData`` (tools read a model's
        ``base_model``, license and tags from it); None without a README or front matter."""
        import yaml

        if readme is None or readme.size > _CARD_BYTES:
            return None
        text = self.store.blob_path(readme.sha256).read_text(encoding="utf-8", errors="replace")
        match = re.match(r"---\r?\n(.*?)\r?\n---\s*(\r?\n|$)", text, re.DOTALL)
        try:
            data = yaml.safe_load(match.group(1)) if match else None
        except (yaml.YAMLError, RecursionError):
            return None
        if not isinstance(data, dict) or expanded_size(data) > MAX_SIZE:  # aliases of aliases: gigabytes
            return None
        plain: dict[str, Any] = json.loads(json.dumps(data, default=str))  # dates as text
        return plain

    def no_such_repo(self, request: Request, body: bytes, name: str) -> Response:
        return _error(404, f"Repository {name} not found", "RepoNotFound")

    def repo_info(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str | None = None) -> Response:
        record = self._readable(request, _TYPES[type], f"{ns}/{name}")
        sha = self.store.resolve(record.repo_type, record.repo_id, rev or "main")
        blobs = _bool(request.query_params.get("blobs"))
        return JSONResponse(self._info(request, record, sha, blobs))

    def list_repos(self, request: Request, body: bytes, type: str) -> Response:
        author = request.query_params.get("author")
        search = request.query_params.get("search")
        out = []
        for record in self.store.list_repos(_TYPES[type]):
            if author and record.namespace != author:
                continue
            if search and search not in record.repo_id:
                continue
            if record.private and not self._may_write(self.user(request), record.namespace):
                continue
            try:
                info = self._info(request, record, self.store.resolve(record.repo_type, record.repo_id, "main"), False)
            except NotFound:  # deleted while listing
                continue
            info.pop("siblings")
            out.append(info)
        return JSONResponse(out)

    # ------------------------------------------------------------------ trees

    def tree(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str, path: str | None = None) -> Response:
        record = self._readable(request, _TYPES[type], f"{ns}/{name}")
        sha = self.store.resolve(record.repo_type, record.repo_id, rev)
        commit = self.store.commit(record.repo_type, record.repo_id, sha)
        root = (path or "").strip("/")
        recursive = _bool(request.query_params.get("recursive"))
        entries: dict[str, dict[str, Any]] = {}
        for file_path, entry in sorted(commit.tree.items()):
            if root and not file_path.startswith(root + "/"):
                continue
            rest = file_path[len(root) + 1 :] if root else file_path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(([root] if root else []) + parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(directory, _dir_json(directory))
            if recursive or len(parts) == 1:
                entries[file_path] = _entry_json(file_path, entry)
        if root and not entries:  # a file, too, is no folder to list: the client then looks it up in its parent
            what = "is a file, not a folder" if root in commit.tree else f"does not exist at {rev}"
            return _error(404, f"{root} {what}", "EntryNotFound")
        listing = sorted(entries.values(), key=lambda e: e["path"])
        cursor = int(request.query_params.get("cursor") or 0)
        page = listing[cursor : cursor + _PAGE]
        headers = {}
        if cursor + _PAGE < len(listing):
            query = {k: v for k, v in request.query_params.items() if k != "cursor"}
            query["cursor"] = str(cursor + _PAGE)
            encoded = "&".join(f"{k}={quote(v)}" for k, v in query.items())
            headers["Link"] = f'<{self.base_url(request)}{_raw_path(request)}?{encoded}>; rel="next"'
        return JSONResponse(page, headers=headers)

    def paths_info(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str) -> Response:
        record = self._readable(request, _TYPES[type], f"{ns}/{name}")
        sha = self.store.resolve(record.repo_type, record.repo_id, rev)
        tree = self.store.commit(record.repo_type, record.repo_id, sha).tree
        form = parse_qs(body.decode(), keep_blank_values=True)
        if not form and body.strip().startswith(b"{"):
            form = {k: v if isinstance(v, list) else [v] for k, v in json.loads(body).items()}
        out = []
        for wanted in form.get("paths", []):
            wanted = wanted.strip("/")
            if wanted in tree:
                out.append(_entry_json(wanted, tree[wanted]))
            elif any(p.startswith(wanted + "/") for p in tree):
                out.append(_dir_json(wanted))
        return JSONResponse(out)

    # ------------------------------------------------------------------ uploads

    def preupload(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str) -> Response:
        self._writable(request, _TYPES[type], f"{ns}/{name}")
        files = json.loads(body or b"{}").get("files", [])
        answer = []
        for item in files:
            size = int(item.get("size", 0))
            lfs = self.lfs_threshold is not None and (size >= self.lfs_threshold or is_lfs(item["path"], size))
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": None})
        return JSONResponse({"files": answer})

    def commit(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str) -> Response:
        repo_type, repo_id = _TYPES[type], f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        header: dict[str, Any] = {}
        operations: list[Operation] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    return _error(400, f"unsupported encoding {value.get('encoding')}")
                operations.append(Operation.inline(value["path"], base64.b64decode(value["content"])))
            elif key == "lfsFile":
                oid = str(value.get("oid"))
                if not self.store.owns(repo_type, repo_id, oid):
                    return _error(422, f"LFS object {oid} for {value.get('path')} was not uploaded to {repo_id}")
                operations.append(Operation("add", value["path"], oid))
            elif key == "deletedFile":
                operations.append(Operation("delete_file", value["path"]))
            elif key == "deletedFolder":
                operations.append(Operation("delete_folder", value["path"]))
            else:
                return _error(400, f"unknown commit line key {key!r}")
        create_pr = _bool(request.query_params.get("create_pr"))
        commit, pr = self.store.apply_commit(
            repo_type, repo_id, rev, operations,
            message=header.get("summary") or "update", description=header.get("description") or "",
            parent_commit=header.get("parentCommit"), create_pr=create_pr, author=self.user(request) or "",
        )
        url = self.repo_url(request, repo_type, repo_id)
        return JSONResponse({
            "success": True, "commitOid": commit.sha, "commitUrl": f"{url}/commit/{commit.sha}",
            "pullRequestUrl": f"{url}/discussions/{pr}" if pr is not None else None,
        })

    def create_branch(self, request: Request, body: bytes, type: str, ns: str, name: str, branch: str) -> Response:
        repo_type, repo_id = _TYPES[type], f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        data = json.loads(body or b"{}")
        self.store.create_branch(repo_type, repo_id, branch, data.get("startingPoint"))
        return JSONResponse({})

    def create_tag(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str) -> Response:
        repo_type, repo_id = _TYPES[type], f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        tag = json.loads(body or b"{}").get("tag")
        if not isinstance(tag, str) or not tag:
            return _error(400, "give the tag's name: {\"tag\": NAME}")
        self.store.create_tag(repo_type, repo_id, tag, rev)
        return JSONResponse({})

    def delete_tag(self, request: Request, body: bytes, type: str, ns: str, name: str, tag: str) -> Response:
        repo_type, repo_id = _TYPES[type], f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        self.store.delete_tag(repo_type, repo_id, tag)
        return JSONResponse({})

    def delete_branch(self, request: Request, body: bytes, type: str, ns: str, name: str, branch: str) -> Response:
        repo_type, repo_id = _TYPES[type], f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        self.store.delete_branch(repo_type, repo_id, branch)
        return JSONResponse({})

    def list_refs(self, request: Request, body: bytes, type: str, ns: str, name: str) -> Response:
        record = self._readable(request, _TYPES[type], f"{ns}/{name}")
        refs = self.store.refs(record.repo_type, record.repo_id)
        out: dict[str, Any] = {
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in sorted(refs["branches"].items())],
            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": s} for t, s in sorted(refs["tags"].items())],
            "converts": [],
        }
        if _bool(request.query_params.get("include_prs")):
            out["pullRequests"] = [{"name": n, "ref": f"refs/pr/{n}", "targetCommit": s} for n, s in sorted(refs["prs"].items())]
        return JSONResponse(out)

    def list_commits(self, request: Request, body: bytes, type: str, ns: str, name: str, rev: str) -> Response:
        record = self._readable(request, _TYPES[type], f"{ns}/{name}")
        sha = self.store.resolve(record.repo_type, record.repo_id, rev)
        return JSONResponse([
            {"id": c.sha, "title": c.message, "message": c.description, "date": c.date,
             "authors": [{"user": c.author or record.namespace}]}
            for c in self.store.history(record.repo_type, record.repo_id, sha)
        ])

    def lfs_batch(self, request: Request, body: bytes, ns: str, name: str, tp: str | None = None) -> Response:
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(tp or "", "model")
        repo_id = f"{ns}/{name}"
        self._writable(request, repo_type, repo_id)
        data = json.loads(body or b"{}")
        base = self.base_url(request)
        objects = []
        for obj in data.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self.store.owns(repo_type, repo_id, oid):  # stored for another repo: its bytes prove it
                query = f"?repo={quote(f'{repo_type}/{repo_id}', safe='')}&sig={self._lfs_signature(repo_type, repo_id, oid)}"
                item["actions"] = {"upload": {"href": f"{base}/lfs-upload/{oid}{query}", "header": {}},
                                   "verify": {"href": f"{base}/lfs-verify{query}", "header": {}}}
            objects.append(item)
        return JSONResponse({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")

    def _lfs_signature(self, repo_type: str, repo_id: str, oid: str) -> str:
        """What makes an upload link good for one object and repo only, as the Hub's presigned URLs are."""
        import hashlib
        import hmac

        return hmac.new(self._secret, f"{repo_type}/{repo_id}:{oid}".encode(), hashlib.sha256).hexdigest()

    def _lfs_repo(self, request: Request, oid: str) -> tuple[str, str]:
        """The repo an upload or verify link was signed for; StoreError for a link lfs_batch did not give."""
        import hmac

        repo_type, _, repo_id = request.query_params.get("repo", "").partition("/")
        signature = request.query_params.get("sig", "")
        if repo_type not in _PREFIX or not hmac.compare_digest(signature, self._lfs_signature(repo_type, repo_id, oid)):
            raise StoreError("this upload link was not given by the LFS batch API", code=403)
        return repo_type, repo_id

    def lfs_upload(self, request: Request, body: bytes, oid: str) -> Response:
        repo_type, repo_id = self._lfs_repo(request, oid)
        self.store.put_stream([body], expected_sha256=oid)
        self.store.own(repo_type, repo_id, oid)
        return Response(status_code=200)

    def lfs_verify(self, request: Request, body: bytes) -> Response:
        oid = str(json.loads(body or b"{}").get("oid", ""))
        if not self.store.owns(*self._lfs_repo(request, oid), oid):
            return _error(404, "object not found")
        return JSONResponse({})

    # ------------------------------------------------------------------ pages

    def page(self, request: Request, body: bytes, ns: str, name: str, tp: str | None = None,
             rev: str | None = None) -> Response:
        from .pages import repo_page

        repo_type = {"datasets": "dataset", "spaces": "space"}.get(tp or "", "model")
        try:
            record = self._readable(request, repo_type, f"{ns}/{name}")
            revision = rev or "main"
            commit = self.store.commit(repo_type, record.repo_id, self.store.resolve(repo_type, record.repo_id, revision))
        except NotFound as exc:
            return Response(f"404: {exc}", status_code=404, media_type="text/plain")
        readme = commit.tree.get("README.md")
        text = (self.store.blob_path(readme.sha256).read_text(encoding="utf-8", errors="replace")
                if readme is not None and readme.size <= _CARD_BYTES else None)
        branches = sorted(self.store.refs(repo_type, record.repo_id)["branches"])
        return Response(repo_page(_PREFIX[repo_type], record.repo_id, revision, commit, branches, text),
                        media_type="text/html")

    # ------------------------------------------------------------------ downloads

    def resolve(self, request: Request, body: bytes, ns: str, name: str, rev: str, path: str, tp: str | None = None) -> Response:
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(tp or "", "model")
        repo_id = f"{ns}/{name}"
        record = self._readable(request, repo_type, repo_id)
        sha = self.store.resolve(repo_type, repo_id, rev)
        entry = self.store.commit(repo_type, repo_id, sha).tree.get(path)
        if entry is None:
            return _error(404, f"{path} does not exist at {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{entry.etag}"',
            "X-Linked-Size": str(entry.size),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        wanted = _parse_range(request.headers.get("range"), entry.size)
        if wanted == "unsatisfiable":
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{entry.size}"})
        start, end = wanted if isinstance(wanted, tuple) else (0, entry.size - 1)
        length = max(0, end - start + 1)
        status = 206 if isinstance(wanted, tuple) else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            headers["Content-Length"] = str(entry.size) if status == 200 else str(length)
            return Response(status_code=status, headers=headers)
        key = f"{_PREFIX[record.repo_type]}{repo_id}/{path}"
        cut = self.faults.take_cut(request.url.path)
        return StreamingResponse(
            self._stream(self.store.blob_path(entry.sha256), start, length, key, cut), status_code=status, headers=headers
        )

    async def _stream(self, blob: Path, start: int, length: int, key: str, cut: int | None) -> AsyncIterator[bytes]:
        sent = 0
        fd = os.open(blob, os.O_RDONLY)
        try:
            while sent < length:
                size = min(_CHUNK, length - sent)
                if cut is not None:
                    size = min(size, max(cut - sent, 0))
                    if size == 0:
                        raise Cut(f"injected cut after {sent} bytes")
                chunk = await run_in_threadpool(os.pread, fd, size, start + sent)  # disk reads off the event loop
                if not chunk:
                    raise Cut("blob shorter than recorded")
                sent += len(chunk)
                self.stats.add_bytes(key, len(chunk))
                yield chunk
        finally:
            os.close(fd)


def create_app(
    root: Path,
    *,
    tokens: Mapping[str, str] | None = None,
    orgs: Mapping[str, list[str]] | None = None,
    lfs_threshold: int | None = None,
) -> FastAPI:
    """A FastAPI app serving the repos stored under ``root``.

    Args:
        root: storage directory (created if missing); everything persists there.
        tokens: token -> user name; only these may write (and read their private repos).
        orgs: user -> organisations they may write to.
        lfs_threshold: answer ``uploadMode: "lfs"`` to preupload for files of at least this many
            bytes and for weight/data formats (.safetensors, .parquet, ...), as the Hub does; clients
            then need ``HF_HUB_DISABLE_XET=1`` (see hub-protocol §6). None: always "regular".

    The app exposes ``app.state.hub.stats`` (bytes sent, requests) and ``app.state.hub.faults``.
    """
    hub = _Hub(Store(root), tokens or {}, orgs or {}, lfs_threshold)
    app = FastAPI(title="hubmerge local hub", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.hub = hub

    @app.api_route("/{anything:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    async def handle(request: Request, anything: str) -> Response:  # routing is on the raw path
        body = await request.body()
        hub.stats.handling(+1)
        try:
            return await run_in_threadpool(hub.dispatch, request, body)  # disk work off the event loop
        finally:
            hub.stats.handling(-1)

    return app
