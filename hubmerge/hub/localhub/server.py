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

from ...ports import bind_port
from .app import FaultPolicy, HubStats, create_app

__all__ = ["LocalHub", "load_tokens", "serve"]

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"


def load_tokens(root: Path, tokens: Mapping[str, str] | None = None, *, create: bool = False) -> dict[str, str]:
    """Tokens allowed to write: ``tokens`` plus ``<root>/tokens.json``; with ``create``, one is made if none exist.

    The file maps token -> user; a generated token belongs to the user ``local``.
    """
    path = Path(root) / TOKENS_FILE
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    merged = {**stored, **dict(tokens or {})}
    if not merged and create:
        merged = {f"hf_local_{secrets.token_hex(16)}": "local"}
    if merged != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=1))
        path.chmod(0o600)
    return merged


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

    sock = bind_port(host, port)
    port = sock.getsockname()[1]  # the one chosen when 0 was asked for
    allowed = load_tokens(root, tokens, create=True)
    app = create_app(root, tokens=allowed, orgs=orgs, lfs_threshold=lfs_threshold)
    log.warning("local hub on http://%s:%d, storing repos in %s; write tokens are in %s",
                host, port, root, Path(root) / TOKENS_FILE)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


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
        self.tokens = load_tokens(self.root, tokens)
        self.app = create_app(self.root, tokens=self.tokens, orgs=orgs, lfs_threshold=lfs_threshold)
        self._socket = sock if sock is not None else bind_port(host, port)
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

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
