"""`hubmerge merge` and `hubmerge push` killed with SIGKILL at seeded points leave nothing half-made.

The inputs live on the local Hub, slowed down by its fault policy so that a kill lands mid-work:
while headers are read, while tensors stream into the temporary output, while the commit is sent.
After each kill the output is either absent or complete (equal to an undisturbed merge), the target
repo has either no new commit or exactly one complete one, and the next run cleans what the killed
one left (temporary directories) and succeeds. Ctrl+C (SIGINT) leaves nothing at all and says so.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from hubmerge import engine
from hubmerge.cli import main
from hubmerge.recipe import Recipe

from ._models import STREAMED_HEADS, make_family, snapshot, upload_family

SEED = 777
counts = {"kills": 0, "interrupts": 0}


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory, local_hub):
    # The tensors stream over (slowed) HTTP after the temporary output exists, where the kills land.
    family = make_family(tmp_path_factory.mktemp("procfam"), "resnet", heads=STREAMED_HEADS)
    return upload_family(family, local_hub.endpoint, local_hub.alice_token, prefix="proc-")


@pytest.fixture(scope="module")
def recipe_file(hub_repos, tmp_path_factory) -> Path:
    recipe = Recipe.from_dict({
        "method": "task_arithmetic",
        "base_model": hub_repos["base"],
        "models": [{"model": hub_repos[t], "task": t} for t in ("alpha", "beta", "gamma")],
        "target_modules": ["resnet"],
        "device": "cpu",
    })
    path = tmp_path_factory.mktemp("proc") / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    return path


@pytest.fixture(scope="module")
def reference(recipe_file, tmp_path_factory):
    from hubmerge.recipe import load_recipe

    out = tmp_path_factory.mktemp("reference") / "out"
    engine.merge(load_recipe(recipe_file), out)
    return snapshot(out)


def cli_env(local_hub, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUBMERGE_DEBUG"):
        env.pop(name, None)  # some session fixtures leak HF_HUB_OFFLINE=1 into os.environ
    (tmp / "hf_home").mkdir(exist_ok=True)
    (tmp / "tmp").mkdir(exist_ok=True)
    env.update(HF_ENDPOINT=local_hub.endpoint, HF_HOME=str(tmp / "hf_home"), HF_HUB_DISABLE_XET="1",
               TMPDIR=str(tmp / "tmp"), PYTHONUNBUFFERED="1")
    return env


def requests(local_hub, route: str) -> int:
    return local_hub.stats.requests.get(route, 0)


def run_and_kill(args: list[str], env: dict[str, str], ready, pause: float, *, limit: float = 120,
                 sig: signal.Signals = signal.SIGKILL) -> tuple[str, int, str]:
    """Start ``hubmerge ARGS``; when ``ready()`` holds, wait ``pause`` s and send ``sig`` (SIGKILL).

    Returns ("killed" or "finished" when it ended on its own first, with exit code 0), the exit code
    and stderr.
    """
    proc = subprocess.Popen([sys.executable, "-m", "hubmerge.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + limit
    try:
        while not ready():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"hubmerge {args[0]} ended (rc {proc.returncode}) before the kill point:\n{err.decode()[-3000:]}")
            assert time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.02)
        end = time.monotonic() + pause
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            counts["kills" if sig == signal.SIGKILL else "interrupts"] += 1
            return "killed", proc.returncode, err.decode()
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()[-3000:]
        return "finished", 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def stale(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}"))


@pytest.mark.timeout(300)
def test_killed_merge_leaves_no_partial_output_and_the_next_run_succeeds(
    tmp_path, local_hub, hub_faults, recipe_file, reference
):
    rng = random.Random(SEED)
    env = cli_env(local_hub, tmp_path)
    hub_faults.path_pattern = r"\.safetensors$"
    points = ["reading headers", "writing tensors", "writing tensors"]
    outcomes = []
    for case, point in enumerate(points):
        out = tmp_path / f"out{case}"
        hub_faults.delay, hub_faults.delay_times = 0.4, None
        before = requests(local_hub, "resolve")
        if point == "reading headers":
            ready = lambda b=before: requests(local_hub, "resolve") > b
            pause = rng.uniform(0.0, 0.3)
        else:
            ready = lambda out=out: bool(stale(out.parent, out.name))  # the temp dir exists: streaming
            pause = rng.uniform(0.0, 1.2)
        outcome, *_ = run_and_kill(["merge", str(recipe_file), "-o", str(out), "--quiet"], env, ready, pause)
        outcomes.append((point, round(pause, 2), outcome))
        # Nothing half-made: the output is absent or whole; only temp dirs of the dead process may remain.
        assert not out.exists() or snapshot(out) == reference, (point, pause)
        assert all(".hubmerge-tmp-" in name or ".hubmerge-old-" in name for name in stale(tmp_path, out.name))
        # The next run cleans up and succeeds.
        hub_faults.clear()
        extra = ["--overwrite"] if out.exists() else []
        assert main(["merge", str(recipe_file), "-o", str(out), "--quiet", *extra]) == 0
        assert snapshot(out) == reference
        assert stale(tmp_path, out.name) == []
    print(f"\nmerge kill points: {outcomes}")
    assert sum(1 for *_, o in outcomes if o == "killed") >= 2


@pytest.mark.timeout(300)
def test_killed_push_leaves_no_half_commit_and_the_next_run_succeeds(
    tmp_path, local_hub, hub_faults, recipe_file, reference, monkeypatch
):
    rng = random.Random(SEED + 1)
    env = cli_env(local_hub, tmp_path)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    hub_faults.path_pattern = r"\.safetensors$|/commit/|/preupload/"
    points = ["merging", "committing"]
    outcomes = []
    for point in points:
        repo_id = f"alice/proc-target-{uuid.uuid4().hex[:6]}"
        api.create_repo(repo_id)
        commits = [c.commit_id for c in api.list_repo_commits(repo_id)]
        hub_faults.delay, hub_faults.delay_times = 0.4, None
        if point == "merging":
            before = requests(local_hub, "resolve")
            ready = lambda b=before: requests(local_hub, "resolve") > b + 4  # headers read, streaming
            pause = rng.uniform(0.0, 1.0)
        else:
            before = requests(local_hub, "preupload") + requests(local_hub, "commit")
            ready = lambda b=before: requests(local_hub, "preupload") + requests(local_hub, "commit") > b
            pause = rng.uniform(0.0, 0.8)
        outcome, *_ = run_and_kill(["push", str(recipe_file), "--repo-id", repo_id, "--token", local_hub.alice_token,
                                    "--no-evaluate", "--quiet"], env, ready, pause)
        outcomes.append((point, round(pause, 2), outcome))
        hub_faults.clear()
        # a commit the killed push had sent whole still lands (its injected delay may outlast the kill): read the
        # repo once the server has handled it, as the next run would find it
        assert local_hub.stats.wait_idle(30)
        after = [c.commit_id for c in api.list_repo_commits(repo_id)]
        assert after == commits or (len(after) == len(commits) + 1 and after[1:] == commits), (point, pause)
        if after != commits:  # the one new commit is whole
            files = set(api.list_repo_files(repo_id))
            assert {"model.safetensors", "config.json", "README.md", "hubmerge_recipe.yaml",
                    "heads/alpha/model.safetensors", "heads/gamma/config.json"} <= files
            for name in ("model.safetensors", "heads/beta/model.safetensors"):
                assert Path(hf_hub_download(repo_id, name, token=local_hub.alice_token,
                                            cache_dir=tmp_path / "dl")).read_bytes() == reference[name]
        # The next run (same temp dir) cleans what the killed one left, and pushes one commit.
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        extra = ["--overwrite"] if after != commits else []
        assert main(["push", str(recipe_file), "--repo-id", repo_id, "--token", local_hub.alice_token,
                     "--no-evaluate", "--quiet", *extra]) == 0
        assert len(api.list_repo_commits(repo_id)) == len(after) + 1
        assert sorted(os.listdir(tmp_path / "tmp")) == [], "the killed push's work dir was not cleaned"
        monkeypatch.undo()
    print(f"\npush kill points: {outcomes}")
    assert sum(1 for *_, o in outcomes if o == "killed") >= 1


@pytest.mark.timeout(300)
def test_ctrl_c_cleans_up_at_once_and_says_so(tmp_path, local_hub, hub_faults, recipe_file):
    """Ctrl+C (SIGINT), unlike SIGKILL, runs the cleanup: no temporary directory is left for a next run."""
    env = cli_env(local_hub, tmp_path)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.delay, hub_faults.delay_times = 0.4, None
    out = tmp_path / "out"
    streaming = lambda: bool(stale(out.parent, out.name))  # the temporary output exists
    outcome, code, err = run_and_kill(["merge", str(recipe_file), "-o", str(out), "--quiet"], env, streaming, 0.2,
                                      sig=signal.SIGINT)
    assert (outcome, code) == ("killed", 130), err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and stale(tmp_path, out.name) == []
    # SIGTERM (`kill`, `timeout`, a container stopping) and SIGHUP (a terminal or SSH session closed) clean
    # up the same way; they left the temporary output behind, as SIGKILL does, for the next run to remove.
    # The parent folders the merge made go with it.
    nested = tmp_path / "new" / "deeper" / "out"
    for sig, expected in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        outcome, code, err = run_and_kill(["merge", str(recipe_file), "-o", str(nested), "--quiet"], env,
                                          lambda: nested.parent.is_dir() and bool(stale(nested.parent, nested.name)),
                                          0.2, sig=sig)
        assert (outcome, code) == ("killed", expected) and "interrupted" in err, err[-3000:]
        assert not (tmp_path / "new").exists()

    repo_id = f"alice/proc-ctrl-c-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id)
    before = requests(local_hub, "resolve")
    merging = lambda: requests(local_hub, "resolve") > before + 4  # headers read, streaming
    outcome, code, err = run_and_kill(["push", str(recipe_file), "--repo-id", repo_id, "--token",
                                       local_hub.alice_token, "--no-evaluate", "--quiet"], env, merging, 0.2,
                                      sig=signal.SIGINT)
    assert (outcome, code) == ("killed", 130) and "interrupted" in err, err[-3000:]
    assert len(api.list_repo_commits(repo_id)) == 1  # only the commit that created it
    assert os.listdir(tmp_path / "tmp") == []  # the push's build directory went with it


def test_zz_summary():
    print(f"\nprocess kills: {counts['kills']}, interrupts: {counts['interrupts']}")
