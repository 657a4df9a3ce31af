"""The package's public surface is small, pinned and cheap to import, and the README's Python runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hubmerge


def test_exported_names_are_pinned():
    assert hubmerge.__all__ == ["Recipe", "__version__", "errors", "load_merged", "load_recipe", "merge", "plan"]
    for name in hubmerge.__all__:
        assert getattr(hubmerge, name) is not None


def test_import_is_light():
    code = "import sys, hubmerge; print(sorted(m for m in ('torch', 'transformers', 'gradio', 'datasets') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_every_error_is_a_hubmerge_error_with_a_builtin_parent():
    from hubmerge import errors

    for name in errors.__all__:
        if name in ("redact", "did_you_mean"):  # the two helpers for messages
            continue
        cls = getattr(errors, name)
        assert issubclass(cls, errors.HubmergeError)
        assert cls is errors.HubmergeError or any(
            issubclass(cls, builtin) for builtin in (ValueError, OSError, FileExistsError, PermissionError)
        ) or cls is errors.CancelledError


def test_tokens_are_scrubbed_from_error_messages():
    from hubmerge.errors import HubError, redact

    token = "hf_abcdefghijklmnopqrstuvwxyz123456"
    assert token not in str(HubError(f"request with Authorization: Bearer {token} failed"))
    assert token not in redact(f"https://host/x?token={token}&a=1")
    assert redact("secret-value here", "secret-value") == "*** here"


def test_the_readmes_python_runs_as_written(local_hub, tmp_path, monkeypatch):
    """The README's Python block, run on the local Hub with the tiny trained fixtures (only its names, sizes and
    the task changed): every name it imports exists and each step takes the last one's result."""
    import re
    import uuid
    from pathlib import Path

    import yaml
    from huggingface_hub import ModelCard

    from ._eval_helpers import hf_online
    from ._ui_helpers import publish_fixtures

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "publish_output" in b)
    models = publish_fixtures(local_hub.endpoint, local_hub.alice_token)
    task = next(iter(models.models))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(models.recipe().to_dict()))
    repo_id = f"alice/readme-{uuid.uuid4().hex[:8]}"
    code = (block.replace("you/merged-convnext", repo_id).replace('task="mnist"', f'task="{task}"')
            .replace("max_samples=500", "max_samples=16"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", local_hub.alice_token)
    hf_online(monkeypatch, True)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["model"].config.num_labels == len(namespace["model"].config.id2label)
    card = ModelCard.load(repo_id, token=local_hub.alice_token)
    assert "| **merged** |" in card.text and "16 of" in card.text  # the saved comparison, on a subset


def test_a_mistyped_merge_option_fails_before_any_input_is_opened(tmp_path, monkeypatch):
    """merge(..., dtype="float16") (a CLI flag, but a recipe field in Python) planned first, reading every
    input's headers over the network, then failed in execute's call with the plan's inputs left open."""
    from hubmerge import engine

    def no_plan(*args, **kwargs):
        raise AssertionError("planned before the options were checked")

    monkeypatch.setattr(engine, "plan", no_plan)
    recipe = {"method": "simple_average", "models": ["org/a", "org/b"]}
    with pytest.raises(TypeError, match="dtype"):
        hubmerge.merge(recipe, tmp_path / "out", dtype="float16")
    with pytest.raises(AssertionError, match="planned"):  # the options execute takes pass
        hubmerge.merge(recipe, tmp_path / "out", device="cpu", max_shard_size="1GB", workers=2)


def test_merge_takes_plan_s_match_labels(tmp_path, monkeypatch):
    """A HeadMismatchError tells Python users to pass match_labels='position'; merge refused it as an option
    execute does not take, so only plan then execute could follow that advice."""
    from hubmerge import engine

    def no_plan(*args, **kwargs):
        raise AssertionError(f"planned with {kwargs}")

    monkeypatch.setattr(engine, "plan", no_plan)
    recipe = {"method": "simple_average", "models": ["org/a", "org/b"]}
    with pytest.raises(AssertionError, match="'match_labels': 'position'"):
        hubmerge.merge(recipe, tmp_path / "out", match_labels="position", device="cpu")
