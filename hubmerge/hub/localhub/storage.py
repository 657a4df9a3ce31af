"""On-disk storage of the local Hub: content-addressed blobs, commits as JSON, refs per repo.

Layout under ``root``::

    blobs/<sha256>                       file contents, stored once whatever the repo
    repos/<type>/<ns>/<name>/repo.json   owner, visibility, creation date
    repos/<type>/<ns>/<name>/refs.json   {"branches": {name: sha}, "tags": {...}, "prs": {"1": sha}}
    repos/<type>/<ns>/<name>/commits/<sha>.json   parent, message, date, tree {path: FileEntry}

A commit is applied under the repo's lock: once it is checked, the files sent in it are stored as
blobs (a refused commit stores none), the commit object is written, and only then is the ref moved
with an atomic replace, so a reader sees the old tree or the new one, never a mix, and a restart
keeps everything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "Blob",
    "Commit",
    "CommitConflict",
    "FileEntry",
    "NotFound",
    "Operation",
    "RepoRecord",
    "Store",
    "StoreError",
]

RepoType = Literal["model", "dataset", "space"]
_SHA = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# What git refuses in a branch or tag name (git check-ref-format): the Hub answers such a name with a 400.
_BAD_REF = re.compile(r"(^[-/.])|([/.]$)|(\.\.)|(//)|(@\{)|(\.lock(/|$))|(/\.)|[\x00-\x20\x7f~^:?*\[\\]|^@$|^refs/")
# Files stored "in LFS" on the real Hub: big ones and weight / data formats.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow",
                ".npz", ".gguf", ".zip", ".tar", ".gz")
LFS_MIN_SIZE = 10 * 1024 * 1024


class StoreError(Exception):
    """A request the store cannot satisfy; ``code`` is the HTTP status, ``kind`` the X-Error-Code."""

    def __init__(self, message: str, *, code: int = 400, kind: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


class NotFound(StoreError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message, code=404, kind=kind)


class CommitConflict(StoreError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code=412)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs(path: str, size: int) -> bool:
    return size >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES)


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    git_sha1: str  # git blob id of the content (regular files) — the Hub's "oid"


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit's tree."""

    sha256: str
    size: int
    git_sha1: str
    lfs: bool

    @property
    def oid(self) -> str:
        """What the Hub calls the file's oid: the git blob id (of the pointer for LFS files)."""
        return git_blob_sha1(lfs_pointer(self.sha256, self.size)) if self.lfs else self.git_sha1

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    message: str
    description: str
    date: str
    tree: dict[str, FileEntry]
    author: str = ""


@dataclass
class RepoRecord:
    repo_type: RepoType
    namespace: str
    name: str
    private: bool
    created: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Operation:
    """A change in a commit: add ``path`` with blob ``sha256`` (None means delete ``path``).

    ``content``: the bytes of a file sent in the commit itself, stored as a blob only once the commit is
    accepted; a refused commit (a stale parent, a missing file to delete) left them behind, one blob per try.
    """

    kind: Literal["add", "delete_file", "delete_folder"]
    path: str
    sha256: str | None = None
    content: bytes | None = field(default=None, repr=False)

    @classmethod
    def inline(cls, path: str, content: bytes) -> Operation:
        """Add ``path`` with ``content`` sent in the commit (see ``content``)."""
        return cls("add", path, hashlib.sha256(content).hexdigest(), content)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean_path(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or path.startswith("/"):
        raise StoreError(f"invalid file path {path!r}", code=400)
    return "/".join(parts)


class Store:
    """All repos of one local Hub. Thread-safe; one process owns a root at a time."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------------ blobs

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has_blob(self, sha256: str) -> bool:
        return bool(re.fullmatch(r"[0-9a-f]{64}", sha256)) and self.blob_path(sha256).is_file()

    def put_bytes(self, data: bytes) -> Blob:
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.blob_path(sha256)
        if not target.exists():
            _atomic_write(target, data)
        return Blob(sha256, len(data), git_blob_sha1(data))

    def put_stream(self, stream: IO[bytes] | Iterable[bytes], *, expected_sha256: str | None = None) -> Blob:
        """Store a (possibly large) stream without holding it in memory."""
        sha256 = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                chunks = iter(lambda: stream.read(1 << 20), b"") if hasattr(stream, "read") else stream
                for chunk in chunks:
                    sha256.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
            digest = sha256.hexdigest()
            if expected_sha256 is not None and digest != expected_sha256:
                raise StoreError(f"uploaded content has sha256 {digest}, expected {expected_sha256}", code=400)
            os.replace(tmp, self.blob_path(digest))
        finally:
            Path(tmp).unlink(missing_ok=True)
        return Blob(digest, size, self._git_sha1_of_file(self.blob_path(digest), size))

    @staticmethod
    def _git_sha1_of_file(path: Path, size: int) -> str:
        digest = hashlib.sha1(b"blob %d\0" % size)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def entry_for(self, sha256: str, path: str) -> FileEntry:
        blob_path = self.blob_path(sha256)
        size = blob_path.stat().st_size
        git_sha1 = self._git_sha1_of_file(blob_path, size)
        return FileEntry(sha256, size, git_sha1, is_lfs(path, size))

    # ------------------------------------------------------------------ repos

    def _dir(self, repo_type: str, repo_id: str) -> Path:
        namespace, _, name = repo_id.partition("/")
        return self.root / "repos" / repo_type / namespace / name

    def lock(self, repo_type: str, repo_id: str) -> threading.RLock:
        key = f"{repo_type}/{repo_id}"
        with self._locks_guard:
            return self._locks.setdefault(key, threading.RLock())

    def get_repo(self, repo_type: str, repo_id: str) -> RepoRecord:
        path = self._dir(repo_type, repo_id) / "repo.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"Repository {repo_id} not found", "RepoNotFound") from None
        return RepoRecord(**data)

    def list_repos(self, repo_type: str) -> list[RepoRecord]:
        base = self.root / "repos" / repo_type
        records = []
        for path in sorted(base.glob("*/*/repo.json")):
            if path.parent.name.startswith("."):  # a repo being deleted (see delete_repo)
                continue
            try:
                records.append(RepoRecord(**json.loads(path.read_text())))
            except FileNotFoundError:  # deleted since the listing
                continue
        return records

    def create_repo(self, repo_type: RepoType, repo_id: str, *, private: bool, extra: dict[str, Any] | None = None) -> RepoRecord:
        namespace, _, name = repo_id.partition("/")
        if not _NAME.match(namespace) or not _NAME.match(name) or ".." in repo_id:
            raise StoreError(f"invalid repo id {repo_id!r}", code=400)
        with self.lock(repo_type, repo_id):
            directory = self._dir(repo_type, repo_id)
            if (directory / "repo.json").exists():
                raise StoreError(f"You already created this {repo_type} repo", code=409)
            record = RepoRecord(repo_type, namespace, name, private, _now(), dict(extra or {}))
            blob = self.put_bytes(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n")
            initial = self._write_commit(None, "initial commit", "", {".gitattributes": self.entry_for(blob.sha256, ".gitattributes")}, directory)
            _atomic_write(directory / "refs.json", json.dumps({"branches": {"main": initial.sha}, "tags": {}, "prs": {}}).encode())
            _atomic_write(directory / "repo.json", json.dumps(asdict(record)).encode())
            return record

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self.lock(repo_type, repo_id):
            self.get_repo(repo_type, repo_id)
            directory = self._dir(repo_type, repo_id)
            trash = directory.with_name(f".deleted-{directory.name}-{os.getpid()}-{threading.get_ident()}")
            directory.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def set_private(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self.lock(repo_type, repo_id):
            record = self.get_repo(repo_type, repo_id)
            record.private = private
            _atomic_write(self._dir(repo_type, repo_id) / "repo.json", json.dumps(asdict(record)).encode())

    # ------------------------------------------------------------------ LFS objects a repo may commit

    def owns(self, repo_type: str, repo_id: str, sha256: str) -> bool:
        """Whether ``repo_id`` may commit the LFS object ``sha256``: uploaded to it, or in its history.

        Blobs are stored once for every repo, so without this a commit naming the hash of another repo's
        private file (``lfsFile`` with its oid) would publish that file.
        """
        return sha256 in self._owned(repo_type, repo_id)

    def own(self, repo_type: str, repo_id: str, sha256: str) -> None:
        """Record an LFS object uploaded to ``repo_id`` (its content proved by its sha256)."""
        with self.lock(repo_type, repo_id):
            owned = self._owned(repo_type, repo_id)
            if sha256 not in owned:
                _atomic_write(self._dir(repo_type, repo_id) / "lfs.json", json.dumps(sorted(owned | {sha256})).encode())

    def _owned(self, repo_type: str, repo_id: str) -> set[str]:
        self.get_repo(repo_type, repo_id)
        directory = self._dir(repo_type, repo_id)
        try:
            return set(json.loads((directory / "lfs.json").read_text()))
        except FileNotFoundError:  # a repo from before the record: what its commits hold
            found: set[str] = set()
            for path in (directory / "commits").glob("*.json"):
                found.update(e["sha256"] for e in json.loads(path.read_text())["tree"].values() if e.get("lfs"))
            return found

    # ------------------------------------------------------------------ refs and commits

    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        self.get_repo(repo_type, repo_id)
        try:
            text = (self._dir(repo_type, repo_id) / "refs.json").read_text()
        except FileNotFoundError:  # deleted since get_repo: reads take no lock
            raise NotFound(f"Repository {repo_id} not found", "RepoNotFound") from None
        refs: dict[str, dict[str, str]] = json.loads(text)
        return refs

    def _save_refs(self, repo_type: str, repo_id: str, refs: dict[str, dict[str, str]]) -> None:
        _atomic_write(self._dir(repo_type, repo_id) / "refs.json", json.dumps(refs, indent=1).encode())

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str:
        """A branch, tag, ``refs/pr/N``, ``refs/heads/X`` or 40-hex sha -> commit sha."""
        refs = self.refs(repo_type, repo_id)
        name = revision.removeprefix("refs/heads/")
        if name in refs["branches"]:
            return refs["branches"][name]
        tag = revision.removeprefix("refs/tags/")
        if tag in refs["tags"]:
            return refs["tags"][tag]
        match = re.fullmatch(r"refs/pr/(\d+)", revision)
        if match and match.group(1) in refs["prs"]:
            return refs["prs"][match.group(1)]
        if _SHA.match(revision) and (self._dir(repo_type, repo_id) / "commits" / f"{revision}.json").exists():
            return revision
        raise NotFound(f"Invalid rev id: {revision}", "RevisionNotFound")

    def commit(self, repo_type: str, repo_id: str, sha: str) -> Commit:
        path = self._dir(repo_type, repo_id) / "commits" / f"{sha}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:  # the repo was deleted since its ref was read: reads take no lock
            raise NotFound(f"Repository {repo_id} not found", "RepoNotFound") from None
        tree = {p: FileEntry(**e) for p, e in data["tree"].items()}
        return Commit(sha, data["parent"], data["message"], data["description"], data["date"], tree, data.get("author", ""))

    def history(self, repo_type: str, repo_id: str, sha: str) -> Iterator[Commit]:
        current: str | None = sha
        while current:
            commit = self.commit(repo_type, repo_id, current)
            yield commit
            current = commit.parent

    def _write_commit(self, parent: str | None, message: str, description: str, tree: dict[str, FileEntry],
                      directory: Path, author: str = "") -> Commit:
        date = _now()
        body = {
            "author": author,
            "parent": parent,
            "message": message,
            "description": description,
            "date": date,
            "tree": {p: asdict(e) for p, e in sorted(tree.items())},
        }
        raw = json.dumps(body, sort_keys=True).encode()
        sha = hashlib.sha1(raw + os.urandom(8)).hexdigest()  # unique even for identical trees
        _atomic_write(directory / "commits" / f"{sha}.json", raw)
        return Commit(sha, parent, message, description, date, tree, author)

    def apply_commit(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        operations: list[Operation],
        *,
        message: str,
        description: str = "",
        parent_commit: str | None = None,
        create_pr: bool = False,
        author: str = "",
    ) -> tuple[Commit, int | None]:
        """Apply every operation in one new commit on ``revision`` (a branch or PR ref), or none.

        Returns the commit and the PR number when ``create_pr``.
        """
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            head = self.resolve(repo_type, repo_id, revision)
            branch = None if create_pr or revision.startswith("refs/pr/") else revision.removeprefix("refs/heads/")
            if branch is not None and branch not in refs["branches"]:  # refused before any commit is written
                raise StoreError(f"cannot commit to {revision}: not a branch", code=400)
            if parent_commit is not None and parent_commit != head:
                raise CommitConflict(
                    f"parent commit {parent_commit} is not the head of {revision} ({head}); fetch and retry"
                )
            tree = dict(self.commit(repo_type, repo_id, head).tree)
            for op in operations:
                path = _clean_path(op.path.rstrip("/")) if op.kind == "delete_folder" else _clean_path(op.path)
                if op.kind == "add" and op.content is not None:
                    size = len(op.content)
                    sha256 = hashlib.sha256(op.content).hexdigest()
                    tree[path] = FileEntry(sha256, size, git_blob_sha1(op.content), is_lfs(path, size))
                elif op.kind == "add":
                    if op.sha256 is None or not self.has_blob(op.sha256):
                        raise StoreError(f"unknown object {op.sha256} for {op.path}", code=422)
                    tree[path] = self.entry_for(op.sha256, path)
                elif op.kind == "delete_file":
                    if path not in tree:
                        raise NotFound(f"{op.path} does not exist at {revision}", "EntryNotFound")
                    del tree[path]
                else:
                    doomed = [p for p in tree if p.startswith(path + "/")]
                    if not doomed:
                        raise NotFound(f"folder {op.path} does not exist at {revision}", "EntryNotFound")
                    for p in doomed:
                        del tree[p]
            _check_no_file_is_a_folder(tree)
            for op in operations:  # accepted: only now do the files sent inline become blobs
                if op.content is not None:
                    self.put_bytes(op.content)
            directory = self._dir(repo_type, repo_id)
            commit = self._write_commit(head, message, description, tree, directory, author)
            pr_number: int | None = None
            if create_pr:
                pr_number = max((int(n) for n in refs["prs"]), default=0) + 1
                refs["prs"][str(pr_number)] = commit.sha
            elif branch is None:
                refs["prs"][revision.removeprefix("refs/pr/")] = commit.sha
            else:
                refs["branches"][branch] = commit.sha
            self._save_refs(repo_type, repo_id, refs)
            return commit, pr_number

    def create_branch(self, repo_type: str, repo_id: str, branch: str, starting_point: str | None) -> None:
        self._new_ref(repo_type, repo_id, "branches", branch, starting_point or "main")

    def create_tag(self, repo_type: str, repo_id: str, tag: str, revision: str) -> None:
        self._new_ref(repo_type, repo_id, "tags", tag, revision)

    def _new_ref(self, repo_type: str, repo_id: str, kind: Literal["branches", "tags"], name: str, revision: str
                 ) -> None:
        """A branch or tag ``name`` at ``revision``: a name git would refuse is a 400, one in use a 409."""
        prefix = "refs/heads" if kind == "branches" else "refs/tags"
        if _BAD_REF.search(name):
            raise StoreError(f"Invalid reference name: {name!r} is not a valid {prefix}/ name", code=400)
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            if name in refs[kind]:
                raise StoreError(f"Reference already exists: {prefix}/{name}", code=409)
            refs[kind][name] = self.resolve(repo_type, repo_id, revision)
            self._save_refs(repo_type, repo_id, refs)

    def delete_tag(self, repo_type: str, repo_id: str, tag: str) -> None:
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            if tag not in refs["tags"]:
                raise NotFound(f"tag {tag} not found", "RevisionNotFound")
            del refs["tags"][tag]
            self._save_refs(repo_type, repo_id, refs)

    def delete_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        with self.lock(repo_type, repo_id):
            refs = self.refs(repo_type, repo_id)
            if branch == "main":
                raise StoreError("the main branch cannot be deleted", code=403)
            if branch not in refs["branches"]:
                raise NotFound(f"branch {branch} not found", "RevisionNotFound")
            del refs["branches"][branch]
            self._save_refs(repo_type, repo_id, refs)


def _check_no_file_is_a_folder(tree: dict[str, FileEntry]) -> None:
    """Refuse a tree where a path is a file and also a folder of others (``a`` beside ``a/b.txt``): git
    cannot hold it, and a download would keep only one of them."""
    folders = {path.rsplit("/", i)[0] for path in tree for i in range(1, path.count("/") + 1)}
    if clash := sorted(folders.intersection(tree)):
        raise StoreError(f"'{clash[0]}' cannot be both a file and a folder (of {clash[0]}/...)", code=400)
