"""Shared set-up of the web-app tests: fixture models on the local Hub, a running app, its URL."""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from huggingface_hub import HfApi

from hubmerge.fixtures import build_fixtures
from hubmerge.recipe import Recipe

NAMESPACE = "demo-org"  # alice may write there (tests/conftest.py)
PRESET = "fixtures: convnext digits (local Hub)"
T = TypeVar("T")


@dataclass(frozen=True)
class HubModels:
    base: str
    models: dict[str, str]  # task -> repo id
    datasets: dict[str, Path]  # task -> save_to_disk directory

    def recipe(self, method: str = "task_arithmetic") -> Recipe:
        return Recipe.from_dict({
            "name": "ui-test",
            "method": method,
            "base_model": self.base,
            "models": [{"model": repo, "task": task, "dataset": str(self.datasets[task])}
                       for task, repo in self.models.items()],
        })


def publish_fixtures(endpoint: str, token: str) -> HubModels:
    """The tiny trained ConvNeXt fixtures as repos of demo-org on the local Hub (idempotent)."""
    fixtures = build_fixtures(family="convnext")
    api = HfApi(endpoint=endpoint, token=token)

    def publish(path: Path, name: str) -> str:
        repo_id = f"{NAMESPACE}/ui-{name}"
        if not api.repo_exists(repo_id):
            api.create_repo(repo_id)
            api.upload_folder(folder_path=path, repo_id=repo_id)
        return repo_id

    base = publish(fixtures.base, "convnext-base")
    models = {task: publish(path, f"convnext-{task.replace('_', '-')}") for task, path in fixtures.models.items()}
    return HubModels(base, models, dict(fixtures.datasets))


def free_port() -> int:
    """A loopback port free now; only ``on_free_port`` may start a server on it (see there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_free_port(start: Callable[[int], T], *, tries: int = 5) -> tuple[T, int]:
    """``start(port)`` on a free port, and again on another where it cannot bind it (an ``OSError``): the port is
    closed between choosing and binding, and another pytest process (pytest-xdist) may take it meanwhile. For
    servers that cannot be given port 0 and say which one they bound (Gradio); returns what ``start`` gave and
    the port."""
    for _ in range(tries - 1):
        port = free_port()
        try:
            return start(port), port
        except OSError:
            continue
    port = free_port()
    return start(port), port  # the last try's error is the test's


@contextmanager
def running_app(endpoint: str, models: HubModels, work_dir: Path, *, token: str | None = None) -> Iterator[str]:
    """The app on a free port with the fixtures as its first preset; yields its URL."""
    from hubmerge.ui import build_app
    from hubmerge.ui.app import CSS

    app = build_app(endpoint=endpoint, token=token, presets={PRESET: partial(models.recipe)}, work_dir=work_dir,
                    max_samples=48)

    def launch(port: int) -> None:
        # Gradio leaves open the socket that found the port taken: it goes here, with its warning, not in a later test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                           show_error=True, allowed_paths=[str(work_dir)], css=CSS)  # as launch_app does
                return
            except OSError as exc:
                taken = str(exc)  # not the error itself: its traceback holds that socket
            gc.collect()
        raise OSError(taken)

    _, port = on_free_port(launch)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
