"""The main job on the embedded default: a local Hub, tiny trained models, the whole pipeline.

``hubmerge demo`` starts the local Hub in-process, publishes the digits fixtures (a "pretrained"
tiny ConvNeXt and four fine-tunes with different label sets) under realistic repo ids, then does
what a user does with real models: plan from headers, stream the merge over HTTP Range requests,
evaluate every task against the inputs, write the card and push everything in one commit. It works
offline and finishes in well under two minutes once the fixtures are cached.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from .publish import PublishResult
    from .recipe import Recipe

__all__ = ["DemoHub", "demo_presets", "demo_recipe", "run_demo", "seed_demo_hub", "start_demo_hub"]

NAMESPACE = "hubmerge-demo"
MERGED_REPO = f"{NAMESPACE}/convnext-tiny-digits-merged"


FAMILIES = ("convnext", "resnet")


@dataclass(frozen=True)
class DemoHub:
    """A running local Hub with the demo's models on it: for each family a base and its fine-tunes."""

    hub: object  # LocalHub
    endpoint: str
    token: str
    bases: dict[str, str]  # family -> base repo id
    fine_tunes: dict[str, dict[str, str]]  # family -> task -> repo id
    datasets: dict[str, str]  # task -> dataset repo id

    @property
    def task_repos(self) -> dict[str, str]:
        return self.fine_tunes["convnext"]


def _point_client_at(endpoint: str, home: Path) -> None:
    """huggingface_hub reads HF_ENDPOINT and HF_HOME once, at import: set them before it loads."""
    import sys

    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        if constants.ENDPOINT.rstrip("/") != endpoint:
            raise RuntimeError(
                "huggingface_hub was imported before the demo could point it at its local Hub; "
                "run the demo in a fresh process (`hubmerge demo`)"
            )
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ["HF_HOME"] = str(home)  # its caches are of its own Hub: never in the user's HF_HOME
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # the demo draws its own progress
    os.environ["HF_HUB_DISABLE_XET"] = "1"  # the local Hub speaks LFS, not Xet
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(name, None)


def _step(console: Console, number: int, text: str) -> None:
    """Say which of the demo's four steps runs; on one line, even in a log (no wrap at 80 columns)."""
    console.print(f"[bold]{number}/4[/bold] {text}", soft_wrap=True)


def start_demo_hub(root: Path) -> tuple[object, str]:
    """Start a local Hub on a free port with a fresh demo token; returns (server, token)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _point_client_at(endpoint, root / "hf_home")
    from .hub.localhub import LocalHub

    token = f"hf_demo{secrets.token_hex(16)}"
    server = LocalHub(root / "hub", tokens={token: NAMESPACE}, sock=sock, lfs_threshold=10 * 2**20).start()
    return server, token


def seed_demo_hub(
    server: object,
    token: str,
    *,
    namespace: str = NAMESPACE,
    cache_dir: Path | None = None,
    console: Console | None = None,
) -> DemoHub:
    """Publish the fixtures under ``namespace`` (``token`` may write there): bases, fine-tunes, datasets."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    from .fixtures import build_fixtures

    if console is not None:
        _step(console, 1, "preparing tiny trained models (cached after the first run)...")
    built = {family: build_fixtures(cache_dir, family=family) for family in FAMILIES}  # type: ignore[arg-type]
    endpoint = server.endpoint  # type: ignore[attr-defined]
    api = HfApi(endpoint=endpoint, token=token)
    disable_progress_bars()
    datasets.disable_progress_bars()

    def publish(path: Path, name: str) -> str:
        repo_id = f"{namespace}/{name}"
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=path, repo_id=repo_id, commit_message=f"Upload {name}")
        return repo_id

    def publish_dataset(path: Path, name: str) -> str:
        repo_id = f"{namespace}/{name}"
        # push_to_hub warns "Setting num_proc from 1 back to 1" for every one-shard split; say nothing.
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity_error()
        try:
            datasets.load_from_disk(str(path)).push_to_hub(repo_id, token=token, commit_message=f"Upload {name}")
        finally:
            datasets.logging.set_verbosity(verbosity)
        return repo_id

    bases, fine_tunes = {}, {}
    for family, fixtures in built.items():
        bases[family] = publish(fixtures.base, f"{family}-tiny-digits")
        fine_tunes[family] = {
            task: publish(path, f"{family}-tiny-{task.replace('_', '-')}") for task, path in fixtures.models.items()
        }
    first = built[FAMILIES[0]]
    data = {task: publish_dataset(first.datasets[task], task.replace("_", "-")) for task in first.models}
    return DemoHub(server, endpoint, token, bases, fine_tunes, data)


def demo_recipe(demo: DemoHub, *, method: str = "task_arithmetic", family: str = "convnext") -> Recipe:
    """The demo's recipe for one family: its Hub repos, each task with its test set."""
    from .recipe import Recipe

    return Recipe.from_dict(
        {
            "name": f"{family}-tiny-digits-merged",
            "method": method,
            "parameters": {"scaling_factor": 0.3} if method == "task_arithmetic" else {},
            "base_model": demo.bases[family],
            "models": [
                {"model": repo, "task": task, "dataset": demo.datasets[task]}
                for task, repo in demo.fine_tunes[family].items()
            ],
        }
    )


def demo_presets(demo: DemoHub) -> dict[str, Callable[[], Recipe]]:
    """The app's presets for the demo: one recipe per family, on the demo's local Hub."""
    return {f"demo: {family} digits (local Hub)": partial(demo_recipe, demo, family=family) for family in demo.bases}


def run_demo(
    workdir: Path, *, console: Console | None = None, cache_dir: Path | None = None
) -> tuple[DemoHub, PublishResult]:
    """Run the whole demo with its Hub and files in ``workdir``; returns the hub (still running) and the push.

    On an error or Ctrl+C the Hub is stopped before the exception leaves, so ``workdir`` can go at once.
    """
    server, token = start_demo_hub(workdir)
    try:
        return _publish_demo(seed_demo_hub(server, token, cache_dir=cache_dir, console=console), token, workdir,
                             console)
    except BaseException:  # an error or Ctrl+C: the Hub stops before the caller deletes its folder
        server.stop()  # type: ignore[attr-defined]
        raise


def _publish_demo(
    demo: DemoHub, token: str, workdir: Path, console: Console | None
) -> tuple[DemoHub, PublishResult]:
    """Plan, merge, evaluate and push the demo's recipe on its running Hub."""
    from . import engine
    from .cli import render_plan
    from .progress import byte_progress
    from .publish import publish

    recipe = demo_recipe(demo)
    if console is not None:
        models = len(demo.bases) + sum(len(tasks) for tasks in demo.fine_tunes.values())
        _step(console, 2, f"local Hub at {demo.endpoint} with {models} models and {len(demo.datasets)} datasets; "
                          f"planning the merge of {len(demo.task_repos) + 1} from headers...")
        merge_plan = engine.plan(recipe, token=token)
        render_plan(merge_plan, console)
        engine.close_plan(merge_plan)
        _step(console, 3, "streaming merge over HTTP Range requests, then evaluation against the inputs...")
    with byte_progress(console, "merging", disable=console is None) as on_progress:  # type: ignore[arg-type]
        result = publish(
            recipe, MERGED_REPO, token=token, overwrite=True, on_progress=on_progress, console=console,
            work_dir=workdir,
        )
    if console is not None:
        _step(console, 4, f"pushed model, heads, recipe, results and card to {MERGED_REPO} "
                          f"in one commit ({result.push.commit_sha[:12]})")
    return demo, result

