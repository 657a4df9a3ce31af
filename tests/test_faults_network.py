"""Network faults against the local Hub: merges retry through them, persistent ones end typed.

Every transient fault (connections cut at seeded random offsets, slow answers, stalls past the
read timeout, 429/5xx bursts) must leave the merge byte-identical, file for file, to an undisturbed
run. A persistent fault must end in a typed error that names the repo and the file, with no output
and nothing pushed (the target's commit list unchanged, a new repo not created).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubmerge import engine
from hubmerge.errors import HubError, HubmergeError, PushError, RangeReadError
from hubmerge.publish import publish
from hubmerge.recipe import Recipe
from hubmerge.weights import http as ranged
from hubmerge.weights.http import RetryPolicy

from ._models import STREAMED_HEADS, make_family, snapshot, upload_family

SEED = 1234
READ_TIMEOUT = 0.5
counts = {"cases": 0}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(ranged, "DEFAULT_RETRY", RetryPolicy(max_retries=4, base_wait=0.01, max_wait=0.05,
                                                             timeout=READ_TIMEOUT))


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory, local_hub):
    # The faults hit the ranged tensor reads as well as the header reads.
    family = make_family(tmp_path_factory.mktemp("netfam"), "resnet", heads=STREAMED_HEADS)
    return upload_family(family, local_hub.endpoint, local_hub.alice_token, prefix="net-")


def recipe_for(repos: dict[str, str], method: str = "task_arithmetic") -> Recipe:
    return Recipe.from_dict({
        "method": method,
        "base_model": repos["base"],
        "models": [{"model": repos[t], "task": t} for t in ("alpha", "beta", "gamma")],
        "target_modules": ["resnet"],
    })


@pytest.fixture(scope="module")
def undisturbed(hub_repos, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    engine.merge(recipe_for(hub_repos), out)
    return snapshot(out)


@pytest.fixture
def retries(caplog):
    """The ranged reader's retry log lines (one per retried attempt)."""
    caplog.set_level(logging.INFO, logger=ranged.__name__)
    return lambda: [r for r in caplog.records if r.name == ranged.__name__ and "retrying" in r.getMessage()]


def merge_and_compare(hub_repos, undisturbed, out: Path) -> None:
    counts["cases"] += 1
    engine.merge(recipe_for(hub_repos), out)
    assert snapshot(out) == undisturbed
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


# ----------------------------------------------------------------------------- transient faults


def test_connections_cut_at_random_offsets_are_resumed(tmp_path, hub_repos, undisturbed, hub_faults, retries):
    rng = random.Random(SEED)
    hub_faults.path_pattern = r"\.safetensors$"
    for case in range(6):
        hub_faults.cut_after = rng.choice([rng.randrange(1, 64), rng.randrange(64, 4096), rng.randrange(4096, 40_000), rng.randrange(40_000, 400_000)])
        hub_faults.cut_times = rng.randint(1, 4)
        merge_and_compare(hub_repos, undisturbed, tmp_path / f"cut{case}")
    assert len(retries()) >= 3  # the cuts really happened and were retried


def test_slow_answers_and_stalls_past_the_read_timeout(tmp_path, hub_repos, undisturbed, hub_faults, retries):
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.delay = 0.02  # slow but within the timeout: every range request
    merge_and_compare(hub_repos, undisturbed, tmp_path / "slow")
    assert retries() == []
    rng = random.Random(SEED + 1)
    for case in range(2):  # stalls: the client gives up on the attempt and asks again
        hub_faults.delay, hub_faults.delay_times = READ_TIMEOUT * 3, rng.randint(1, 3)
        merge_and_compare(hub_repos, undisturbed, tmp_path / f"stall{case}")
        assert hub_faults.delay_times == 0
    assert len(retries()) >= 2
    # The server still sleeps on the requests the client gave up on; let them finish here, or they
    # would take the next test's injected faults when they wake up.
    time.sleep(READ_TIMEOUT * 3)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_status_bursts_are_retried(status, tmp_path, hub_repos, undisturbed, hub_faults, retries):
    rng = random.Random(SEED + status)
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.status, hub_faults.status_times = status, rng.randint(2, 4)
    hub_faults.retry_after = "0" if status in (429, 503) else None
    merge_and_compare(hub_repos, undisturbed, tmp_path / "out")
    assert hub_faults.status_times == 0 and len(retries()) >= 2


def test_a_burst_on_the_repo_info_api_is_typed_or_retried(tmp_path, hub_repos, undisturbed, hub_faults):
    """Opening a repo (``model_info``) goes through huggingface_hub: retried or a typed error naming it."""
    counts["cases"] += 1
    hub_faults.path_pattern = r"^/api/models/"
    hub_faults.status, hub_faults.status_times = 503, 1
    try:
        engine.merge(recipe_for(hub_repos), tmp_path / "out")
    except HubError as exc:
        assert "alice/net-" in str(exc) and "503" in str(exc)
        assert not (tmp_path / "out").exists()
    else:
        assert snapshot(tmp_path / "out") == undisturbed


# ----------------------------------------------------------------------------- persistent faults


@pytest.mark.parametrize("fault", ["status", "cut", "stall"])
def test_a_persistent_read_failure_names_repo_and_file_and_writes_nothing(fault, tmp_path, hub_repos, hub_faults):
    counts["cases"] += 1
    hub_faults.path_pattern = r"\.safetensors$"
    if fault == "status":
        hub_faults.status, hub_faults.status_times = 503, 10_000
    elif fault == "cut":
        hub_faults.cut_after, hub_faults.cut_times = 0, 10_000  # no byte ever arrives (cuts that let
        # some bytes through are resumed from there, and the read completes)
    else:
        hub_faults.delay = READ_TIMEOUT * 2
    with pytest.raises(RangeReadError) as info:
        engine.merge(recipe_for(hub_repos), tmp_path / "out")
    message = str(info.value)
    assert "alice/net-" in message and ".safetensors" in message and "giving up" in message
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_persistent_failure_during_push_pushes_nothing(hub_repos, local_hub, hub_faults):
    counts["cases"] += 1
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    existing = f"alice/net-target-{uuid.uuid4().hex[:6]}"
    api.create_repo(existing)
    commits = [c.commit_id for c in api.list_repo_commits(existing)]
    fresh = f"alice/net-fresh-{uuid.uuid4().hex[:6]}"

    hub_faults.path_pattern = r"\.safetensors$"  # reading the inputs fails for good
    hub_faults.status, hub_faults.status_times = 502, 10_000
    for target in (existing, fresh):
        with pytest.raises(RangeReadError, match=r"alice/net-.*\.safetensors"):
            publish(recipe_for(hub_repos), target, token=local_hub.alice_token, evaluate=False)
    hub_faults.clear()

    hub_faults.path_pattern = r"/commit/"  # the commit itself fails for good
    hub_faults.status, hub_faults.status_times = 503, 10_000
    for target in (existing, fresh):
        with pytest.raises(PushError) as info:
            publish(recipe_for(hub_repos), target, token=local_hub.alice_token, evaluate=False)
        assert target in str(info.value) and "left as it was" in str(info.value)
    hub_faults.clear()

    assert [c.commit_id for c in api.list_repo_commits(existing)] == commits
    assert api.list_repo_files(existing) == [".gitattributes"] or len(api.list_repo_files(existing)) <= 1
    assert not api.repo_exists(fresh)


def test_every_fault_case_ends_typed_never_untyped(tmp_path, hub_repos, hub_faults):
    """A fault on every route at once still ends in a HubmergeError, never another exception."""
    counts["cases"] += 1
    hub_faults.path_pattern = r"."
    hub_faults.status, hub_faults.status_times = 500, 10_000
    with pytest.raises(HubmergeError):
        engine.merge(recipe_for(hub_repos), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zz_summary():
    print(f"\nnetwork fault cases run: {counts['cases']}")
    assert counts["cases"] >= 15 or counts["cases"] == 0  # 0: run with -k on a subset
