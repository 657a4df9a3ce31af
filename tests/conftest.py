"""Test-session setup: an isolated, offline Hugging Face environment and one local Hub server.

huggingface_hub freezes HF_ENDPOINT, HF_HOME and friends at import time, so they are set here, at
the top, before any test module imports it: HF_ENDPOINT points at this session's local Hub (its port
is reserved now, the server starts on first use), HF_HOME at a temporary directory, and no real
token can leak in. Tests that need "no Hub at all" use the ``hub_offline`` fixture.

Every temporary file of the session (pytest's ``tmp_path``, Gradio's cache, what gradio_client
downloads, the CLI subprocesses' temp files) lives under one directory, which a passing run deletes.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="hubmerge-tests-"))
_TEMP_DIR = _SESSION_DIR / "tmp"
_TEMP_DIR.mkdir()
tempfile.tempdir = str(_TEMP_DIR)  # this process; TMPDIR below for its subprocesses
_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_SOCKET.bind(("127.0.0.1", 0))
ENDPOINT = f"http://127.0.0.1:{_SOCKET.getsockname()[1]}"

for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "HF_ENDPOINT": ENDPOINT,
        "HF_HOME": str(_SESSION_DIR / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(_SESSION_DIR / "gradio"),
        "TMPDIR": str(_TEMP_DIR),
        "HUBMERGE_CACHE": os.environ.get("HUBMERGE_CACHE", str(Path.home() / ".cache" / "hubmerge")),
        "TOKENIZERS_PARALLELISM": "false",
    }
)

import pytest

ALICE_TOKEN = "hf_aliceTestToken0000000000000000000"
BOB_TOKEN = "hf_bobTestToken00000000000000000000000"


@dataclass(frozen=True)
class Hub:
    """The session's local Hub: where it listens, its storage, counters, faults and users' tokens."""

    server: object
    endpoint: str
    root: Path
    alice_token: str = ALICE_TOKEN
    bob_token: str = BOB_TOKEN

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.server.stats  # type: ignore[attr-defined]

    @property
    def faults(self):  # type: ignore[no-untyped-def]
        return self.server.faults  # type: ignore[attr-defined]


def pytest_sessionfinish(session, exitstatus):  # `session` unused: the hook's signature
    _SOCKET.close()  # reserved at import; LocalHub closes it too when it was used
    if exitstatus in (0, 4, 5):  # passed, usage error, no tests; a failed run keeps it all to look at
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def local_hub():
    """One local Hub for the whole session (alice may also write to the org 'demo-org')."""
    from hubmerge.hub.localhub import LocalHub

    server = LocalHub(
        _SESSION_DIR / "hub", tokens={ALICE_TOKEN: "alice", BOB_TOKEN: "bob"}, orgs={"alice": ["demo-org"]},
        sock=_SOCKET,
    ).start()
    yield Hub(server, ENDPOINT, server.root)
    server.stop()


@pytest.fixture
def hub_faults(local_hub):
    """The local Hub's fault policy, cleared after the test."""
    yield local_hub.faults
    local_hub.faults.clear()


@pytest.fixture
def hub_offline(monkeypatch):
    """huggingface_hub behaves as with HF_HUB_OFFLINE=1 for this test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def registry_snapshot():
    """Undo runtime task registrations after a test (the class-name registry is process-wide)."""
    from hubmerge.vision import classnames

    tasks, aliases = dict(classnames._tasks), dict(classnames._aliases)
    yield
    classnames._tasks.clear()
    classnames._tasks.update(tasks)
    classnames._aliases.clear()
    classnames._aliases.update(aliases)
