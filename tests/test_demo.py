"""`hubmerge demo`: the whole job offline on the embedded default, in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from hubmerge.hub.localhub import LocalHub


@pytest.mark.slow
def test_the_demo_runs_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "hubmerge.cli", "demo", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    url = result.stdout.strip().splitlines()[-1]
    assert url.endswith("/hubmerge-demo/convnext-tiny-digits-merged")
    for expected in ("1/4", "2/4", "3/4", "4/4", "Plan", "merged", "base + task heads", "individual"):
        assert expected in result.stderr

    with LocalHub(workdir / "hub") as hub:  # the demo's Hub, restarted on its storage
        api = HfApi(endpoint=hub.endpoint)
        repo = "hubmerge-demo/convnext-tiny-digits-merged"
        files = set(api.list_repo_files(repo))
        assert {"README.md", "model.safetensors", "hubmerge_recipe.yaml", "eval_results.json",
                "eval_comparison.json", "eval_scope.json", "heads/digits_parity/model.safetensors"} <= files
        assert len(api.list_repo_commits(repo)) == 2  # created, then one commit with everything
        assert api.repo_exists("hubmerge-demo/resnet-tiny-digits")  # the app's second preset (--ui) merges these
        readme = api.hf_hub_download(repo, "README.md", cache_dir=tmp_path / "cache")
        card = ModelCard.load(readme)
        assert card.data.base_model_relation == "merge" and len(card.data.base_model) == 5
        assert "(all " in card.text and "random subset" not in card.text  # the demo evaluates whole splits
        results = json.loads(Path(api.hf_hub_download(repo, "eval_results.json", cache_dir=tmp_path / "cache")).read_text())
        comparison = json.loads(
            Path(api.hf_hub_download(repo, "eval_comparison.json", cache_dir=tmp_path / "cache")).read_text()
        )
        assert results["average"]["accuracy"] > comparison["base"]["average"]["accuracy"]
        best_single = max(r["average"]["accuracy"] for r in comparison["finetuned"].values())
        assert results["average"]["accuracy"] > best_single
    # stderr is a pipe here, as in a CI log: every number is whole, and libraries add no noise.
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stderr.splitlines()]
    merged_row = next(row for row in rows if row[:1] == ["merged"])
    assert merged_row[-1] == f"{100 * results['average']['accuracy']:.2f}"
    assert "…" not in result.stderr and "num_proc" not in result.stderr
    assert f"hubmerge hub serve --root {workdir / 'hub'}" in result.stderr  # how to see it again
    again = subprocess.run(  # in the Hub kept: the inputs are uploaded again, the merged repo is replaced
        [sys.executable, "-m", "hubmerge.cli", "demo", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout.strip().endswith("/hubmerge-demo/convnext-tiny-digits-merged")


@pytest.mark.slow
def test_the_demo_leaves_nothing_behind_without_a_workdir(tmp_path):
    # a user's own HF_HOME got the demo's caches (17 MB of models and datasets named like Hub repos)
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HOME": str(tmp_path / "users-hf-home")}
    result = subprocess.run(
        [sys.executable, "-m", "hubmerge.cli", "demo"], capture_output=True, text=True, timeout=600, env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("/hubmerge-demo/convnext-tiny-digits-merged")
    assert "temporary folder is gone" in result.stderr
    assert not list(tmp_path.glob("hubmerge-demo-*"))  # its Hub, HF_HOME and work files went with it
    assert not (tmp_path / "users-hf-home").exists()


def test_the_demo_points_huggingface_hub_at_its_own_hub_and_home(tmp_path):
    """Its client talks to its own local Hub, online even where the user works offline, and caches in its own
    HF_HOME (never the user's); a huggingface_hub already imported, so already pointed elsewhere, is refused:
    the demo's uploads and token would have gone to that endpoint."""
    point = ("import sys; from pathlib import Path; from hubmerge.demo import _point_client_at; "
             "_point_client_at('http://127.0.0.1:9', Path(sys.argv[1])); ")
    show = ("import datasets; from huggingface_hub import constants; "
            "print(constants.ENDPOINT, constants.HF_HOME, constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)")
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:8", "HF_HOME": str(tmp_path / "users-hf-home"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    demo_home = tmp_path / "demo" / "hf_home"
    done = subprocess.run([sys.executable, "-c", point + show, str(demo_home)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["http://127.0.0.1:9", str(demo_home), "False", "False"]
    late = subprocess.run([sys.executable, "-c", "import huggingface_hub; " + point, str(demo_home)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert late.returncode != 0 and "run the demo in a fresh process" in late.stderr


class _Server:
    """The demo's local Hub, as the command sees it: stopping it is all it does."""

    def __init__(self, root: Path) -> None:
        self.root, self.stopped_with_its_folder = root, None

    def stop(self) -> None:
        self.stopped_with_its_folder = (self.root / "hub").is_dir()


def _fake_demo(monkeypatch, *, fail: BaseException | None = None) -> list:
    """`hubmerge demo` in-process, its run_demo faked: what it was given, and its server, land in the list."""
    from types import SimpleNamespace

    from hubmerge import demo

    runs: list = []

    def run_demo(root: Path, *, console=None):
        (root / "hub").mkdir(parents=True)
        (root / "hub" / "repo.bin").write_bytes(b"x")  # the Hub's storage, and anything under it, must go
        runs.append(root)
        if fail is not None:
            raise fail
        server = _Server(root)
        runs.append(server)
        push = SimpleNamespace(url="http://127.0.0.1:9/hubmerge-demo/convnext-tiny-digits-merged")
        return SimpleNamespace(hub=server, endpoint="http://127.0.0.1:9", token="t"), SimpleNamespace(push=push)

    monkeypatch.setattr(demo, "run_demo", run_demo)
    return runs


def test_the_demos_temporary_folder_goes_after_its_hub_stops_even_on_error_or_ctrl_c(tmp_path, monkeypatch,
                                                                                      capsys):
    from hubmerge.cli import INTERRUPTED, main
    from hubmerge.errors import HubError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runs = _fake_demo(monkeypatch)
    assert main(["demo"]) == 0
    root, server = runs
    assert root.parent == tmp_path and root.name.startswith("hubmerge-demo-") and not root.exists()
    assert server.stopped_with_its_folder is True  # stopped before its folder went, not serving a deleted one
    out, err = capsys.readouterr()
    assert out == "http://127.0.0.1:9/hubmerge-demo/convnext-tiny-digits-merged\n"  # stdout: the URL alone
    assert "temporary folder is gone" in err
    for fail, code in ((HubError("the Hub said no"), 1), (KeyboardInterrupt(), INTERRUPTED)):
        runs = _fake_demo(monkeypatch, fail=fail)
        assert main(["demo", "--quiet"]) == code
        assert not runs[0].exists() and not list(tmp_path.iterdir())


def test_the_demo_keeps_its_hub_in_the_workdir(tmp_path, monkeypatch, capsys):
    from hubmerge.cli import main

    runs = _fake_demo(monkeypatch)
    assert main(["demo", "--workdir", str(tmp_path / "kept")]) == 0
    root, server = runs
    assert root == tmp_path / "kept" and (root / "hub" / "repo.bin").is_file() and server.stopped_with_its_folder
    assert f"hubmerge hub serve --root {root / 'hub'}" in capsys.readouterr().err


def test_a_failing_demo_stops_its_hub_before_the_error_leaves(tmp_path, monkeypatch):
    """The caller deletes the Hub's folder as the error passes: a Hub still serving from its thread meanwhile
    could write into a folder being removed."""
    from types import SimpleNamespace

    from hubmerge import demo

    stopped: list[bool] = []
    monkeypatch.setattr(demo, "start_demo_hub", lambda root: (SimpleNamespace(stop=lambda: stopped.append(True)), "t"))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "seed_demo_hub", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path)
    assert stopped == [True]


def test_the_demos_web_app_collects_at_the_interpreters_pace(tmp_path, monkeypatch):
    """`demo --ui` serves until stopped, as `app` does: at the executable's slow pace a dropped download's
    read stayed in a reference cycle for a hundred-odd requests."""
    import gc

    from hubmerge import demo
    from hubmerge.cli import GC_THRESHOLD, SERVING_GC_THRESHOLD, main

    _fake_demo(monkeypatch)
    paces = []
    monkeypatch.setattr(demo, "demo_presets", lambda hub: {})
    launch = lambda **kwargs: paces.append(gc.get_threshold())  # noqa: E731
    monkeypatch.setattr("hubmerge.ui.launch_app", launch, raising=False)  # not hubmerge.ui's lazy Gradio
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)  # as ``run`` starts every command
    try:
        assert main(["demo", "--ui", "--quiet", "--workdir", str(tmp_path / "kept")]) == 0
    finally:
        gc.set_threshold(*before)
    assert paces == [SERVING_GC_THRESHOLD] and SERVING_GC_THRESHOLD != GC_THRESHOLD
