"""Run the local Hub: blocking (``hubmerge hub serve``) or in a background thread (tests, the demo)."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from ...errors import LocalHubRootError
from ...ports import bind_port
from .app import create_app
from .faults import FaultPolicy, HubStats

__all__ = ["LocalHub", "load_tokens", "serve"]

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"
LOCK_FILE = ".hubmerge-serve.lock"
_STORAGE_FOLDERS = ("repos", "blobs")


def load_tokens(root: Path, tokens: Mapping[str, str] | None = None, *, create: bool = False) -> dict[str, str]:
    """Tokens allowed to write: ``tokens`` plus ``<root>/tokens.json``; with ``create``, one is made if none exist.

    The file maps token -> user; a generated token belongs to the user ``local``.

    Raises:
        LocalHubRootError: ``tokens.json`` is not such a mapping (it is edited by hand).
    """
    path = Path(root) / TOKENS_FILE
    stored = _read_tokens(path) if path.exists() else {}
    merged = {**stored, **dict(tokens or {})}
    if not merged and create:
        merged = {f"hf_local_{secrets.token_hex(16)}": "local"}
    if merged != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=1))
        path.chmod(0o600)
    return merged


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise LocalHubRootError(str(path.parent), f"{TOKENS_FILE} cannot be read ({exc})") from None
    if not isinstance(stored, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in stored.items()):
        raise LocalHubRootError(str(path.parent), f'{TOKENS_FILE} must map each write token to its user, like '
                                '{"hf_...": "alice"}')
    return stored


class _RootLock:
    """One server per root: two keep their own view of each repo's refs, so commits made through one are
    lost to the other's, and each knows only the tokens it read at start."""

    def __init__(self, root: Path) -> None:
        for name in _STORAGE_FOLDERS:
            if (root / name).exists() and not (root / name).is_dir():
                raise LocalHubRootError(str(root), f"'{name}' in it is a file; the Hub keeps a folder there")
        root.mkdir(parents=True, exist_ok=True)
        self._file = open(root / LOCK_FILE, "ab")  # noqa: SIM115 - held open until release()
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one server per root is then the user's to keep
            return
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise LocalHubRootError(str(root), "another local Hub serves it (`hubmerge hub serve` or a demo); stop "
                                    "that one, or serve another root") from None

    def release(self) -> None:
        self._file.close()


def serve(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    tokens: Mapping[str, str] | None = None,
    orgs: Mapping[str, list[str]] | None = None,
    lfs_threshold: int | None = None,
) -> None:
    """Serve the repos under ``root`` until interrupted. Point ``HF_ENDPOINT`` at ``http://host:port``.

    Args:
        root: storage directory; a restart on the same root keeps every repo.
        host, port: where to listen (loopback by default).
        tokens: token -> user allowed to write; saved to ``<root>/tokens.json``. When there are none,
            one token for the user ``local`` is generated and stored there (never printed).
        orgs: user -> organisations they may write to.
        lfs_threshold: see ``create_app``.
    """
    import uvicorn

    sock = bind_port(host, port)  # a busy port is refused before the root is made
    port = sock.getsockname()[1]  # the one chosen when 0 was asked for
    with sock:
        lock = _RootLock(Path(root))
        try:
            allowed = load_tokens(root, tokens, create=True)
            app = create_app(root, tokens=allowed, orgs=orgs, lfs_threshold=lfs_threshold)
            log.warning("local hub on http://%s:%d, storing repos in %s; write tokens are in %s",
                        host, port, root, Path(root) / TOKENS_FILE)
            if lfs_threshold is not None:  # else an upload's only error is hf-xet's "501 ... xet-write-token"
                log.warning("uploads of weights and data files go by LFS: set HF_HUB_DISABLE_XET=1 for clients")
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        finally:
            lock.release()


class LocalHub:
    """The local Hub in a background thread on a free loopback port: ``with LocalHub(root) as hub: ...``."""

    def __init__(
        self,
        root: Path,
        *,
        tokens: Mapping[str, str] | None = None,
        orgs: Mapping[str, list[str]] | None = None,
        lfs_threshold: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        """``sock``: an already bound socket to serve on (so a caller can learn the port first)."""
        import uvicorn

        self.root = Path(root)
        self._lock = _RootLock(self.root)
        try:
            self.tokens = load_tokens(self.root, tokens)
            self.app = create_app(self.root, tokens=self.tokens, orgs=orgs, lfs_threshold=lfs_threshold)
            self._socket = sock if sock is not None else bind_port(host, port)
        except BaseException:
            self._lock.release()
            raise
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> HubStats:
        return self.app.state.hub.stats  # type: ignore[no-any-return]

    @property
    def faults(self) -> FaultPolicy:
        return self.app.state.hub.faults  # type: ignore[no-any-return]

    def start(self) -> LocalHub:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="hubmerge-localhub", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local hub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()
        self._lock.release()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
