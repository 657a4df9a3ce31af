"""`hubmerge demo`: the whole job offline on the embedded default, in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from hubmerge.hub.localhub import LocalHub


@pytest.mark.slow
def test_the_demo_runs_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "hubmerge.cli", "demo", "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=600,
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


@pytest.mark.slow
def test_the_demo_leaves_nothing_behind_without_a_workdir(tmp_path):
    # a user's own HF_HOME got the demo's caches (17 MB of models and datasets named like Hub repos)
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HOME": str(tmp_path / "users-hf-home")}
    result = subprocess.run(
        [sys.executable, "-m", "hubmerge.cli", "demo"], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("/hubmerge-demo/convnext-tiny-digits-merged")
    assert "temporary folder is gone" in result.stderr
    assert not list(tmp_path.glob("hubmerge-demo-*"))  # its Hub, HF_HOME and work files went with it
    assert not (tmp_path / "users-hf-home").exists()
