"""`hubmerge push`: plan, merge, evaluate, card, then one commit — or nothing — on the local Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from hubmerge import engine
from hubmerge.cli import main
from hubmerge.errors import AuthenticationError, HeaderParseError, PushError, RecipeError
from hubmerge.hub.push import check_repo_id, check_target, push_folder
from hubmerge.publish import publish, publish_output
from hubmerge.recipe import Recipe

from ._models import make_family, upload_family


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("family"), "convnext")


@pytest.fixture(scope="module")
def hub_models(family, local_hub):
    """The family as alice's Hub repos."""
    return upload_family(family, local_hub.endpoint, local_hub.alice_token, prefix="pub-")


def recipe_for(repos, *, models=None) -> Recipe:
    models = models or {t: repos[t] for t in ("alpha", "beta", "gamma")}
    return Recipe.from_dict({
        "method": "task_arithmetic",
        "base_model": repos["base"],
        "models": [{"model": repo, "task": task} for task, repo in models.items()],
        "target_modules": ["convnext"],
    })


def local_recipe_with_datasets(family, dataset: str = "nobody/no-such-dataset", **fields: object) -> Recipe:
    """task_arithmetic of the family's local folders, every task naming ``dataset``."""
    return Recipe.from_dict({
        "method": "task_arithmetic", "base_model": str(family.base), **fields,
        "models": [{"model": str(path), "task": task, "dataset": dataset} for task, path in family.models.items()],
        "target_modules": ["convnext"],
    })


def fresh_repo() -> str:
    return f"alice/merged-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(local_hub):
    return HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)


def test_publish_pushes_everything_in_one_commit(api, hub_models, local_hub):
    repo_id = fresh_repo()
    result = publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False)
    files = set(api.list_repo_files(repo_id))
    assert {"model.safetensors", "config.json", "README.md", "hubmerge_recipe.yaml", "preprocessor_config.json",
            "heads/alpha/model.safetensors", "heads/gamma/config.json"} <= files
    commits = api.list_repo_commits(repo_id)
    assert len(commits) == 2 and commits[0].commit_id == result.push.commit_sha  # initial + ours
    assert commits[0].title == "hubmerge: Task Arithmetic of 3 fine-tuned models and their base"
    recipe_text = (local_hub_file(api, repo_id, "hubmerge_recipe.yaml"))
    for repo in hub_models.values():
        assert f"{repo}@{api.model_info(repo).sha}" in recipe_text


def local_hub_file(api: HfApi, repo_id: str, name: str, revision: str | None = None) -> str:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, name, token=api.token, revision=revision)).read_text()


def test_existing_repo_is_refused_before_any_work(api, hub_models, local_hub, monkeypatch):
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"keep", path_in_repo="keep.txt", repo_id=repo_id)
    monkeypatch.setattr(engine, "plan", lambda *a, **k: pytest.fail("merged before checking the target"))
    with pytest.raises(PushError) as refused:
        publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False)
    # the web app's user was told of --overwrite and --repo-id, which the app does not have
    assert ("already holds 2 file(s) (e.g. .gitattributes); to replace its content in one commit, pass --overwrite "
            "(from Python: overwrite=True; in the web app: tick 'Overwrite a non-empty repo'), or choose another "
            "repo id") in str(refused.value)


def test_overwrite_replaces_the_content_in_one_commit(api, hub_models, local_hub):
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"stale", path_in_repo="stale.txt", repo_id=repo_id)
    before = len(api.list_repo_commits(repo_id))
    publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False, overwrite=True)
    assert "stale.txt" not in api.list_repo_files(repo_id)
    assert len(api.list_repo_commits(repo_id)) == before + 1


def test_overwrite_deletes_what_the_output_lacks_but_keeps_the_repos_gitattributes(api, local_hub, tmp_path):
    """.gitattributes (the Hub's LFS rules, in every new repo) is no stale file of an earlier output."""
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"stale", path_in_repo="stale.txt", repo_id=repo_id)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.txt").write_text("new")
    target = check_target(repo_id, token=local_hub.alice_token, overwrite=True)
    push_folder(tmp_path / "out", repo_id, token=local_hub.alice_token, target=target)
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "model.txt"}


def test_no_token_says_how_to_give_one(hub_models, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(AuthenticationError, match="--token"):
        publish(recipe_for(hub_models), fresh_repo(), evaluate=False)


def test_a_token_from_a_file_is_the_one_that_reads_and_pushes(api, family, local_hub, tmp_path, monkeypatch):
    """From Python, token_file (or HF_TOKEN) gives the token: it reads the inputs and makes the commit, for a
    build and for an output pushed as it is (None would have let huggingface_hub pick another)."""
    private = upload_family(family, local_hub.endpoint, local_hub.alice_token, prefix="tokfile-", private=True)
    monkeypatch.setenv("HF_TOKEN", "hf_someone_elses_token")  # what a token not passed on would fall back to
    token_file = tmp_path / "token"
    token_file.write_text(local_hub.alice_token + "\n")
    built = publish(recipe_for(private), fresh_repo(), token_file=token_file, evaluate=False)
    assert api.model_info(built.push.repo_id).sha == built.push.commit_sha
    out = tmp_path / "out"
    engine.merge(recipe_for(private), out, token=local_hub.alice_token)
    pushed = publish_output(out, fresh_repo(), token_file=token_file)
    assert api.model_info(pushed.repo_id).sha == pushed.commit_sha


def test_a_corrupt_input_pushes_nothing(api, hub_models, family, local_hub, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(family.models["beta"], broken)
    blob = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    repo = f"alice/broken-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo)
    api.upload_folder(folder_path=broken, repo_id=repo)
    target = fresh_repo()
    models = {"alpha": hub_models["alpha"], "beta": repo}
    with pytest.raises(HeaderParseError, match=repo):
        publish(recipe_for(hub_models, models=models), target, token=local_hub.alice_token, evaluate=False)
    assert not api.repo_exists(target)


def test_a_refused_commit_leaves_no_repo_behind(api, hub_models, local_hub, hub_faults):
    target = fresh_repo()
    hub_faults.path_pattern = r"/commit/"
    hub_faults.status, hub_faults.status_times = 422, 1
    with pytest.raises(PushError, match="left as it was"):
        publish(recipe_for(hub_models), target, token=local_hub.alice_token, evaluate=False)
    assert not api.repo_exists(target)


def test_a_refused_commit_leaves_an_existing_repo_unchanged(api, hub_models, local_hub, hub_faults, tmp_path):
    target = fresh_repo()
    api.create_repo(target)
    sha = api.model_info(target).sha
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    state = check_target(target, token=local_hub.alice_token)
    hub_faults.path_pattern = r"/commit/"
    hub_faults.status, hub_faults.status_times = 409, 1
    with pytest.raises(PushError):
        push_folder(tmp_path / "out", target, token=local_hub.alice_token, target=state)
    assert api.model_info(target).sha == sha and api.repo_exists(target)


def test_a_refused_commit_to_a_new_branch_leaves_no_branch_behind(api, local_hub, hub_faults, tmp_path):
    target = fresh_repo()
    api.create_repo(target)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    state = check_target(target, token=local_hub.alice_token, branch="trial")
    hub_faults.path_pattern = r"/commit/"
    hub_faults.status, hub_faults.status_times = 409, 1
    with pytest.raises(PushError):
        push_folder(tmp_path / "out", target, token=local_hub.alice_token, target=state, branch="trial")
    assert [b.name for b in api.list_repo_refs(target).branches] == ["main"]


def test_only_build_folders_of_ended_pushes_are_cleaned_up(tmp_path):
    from hubmerge.publish import _WORK_PREFIX, _clean_stale_work_dirs

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True).stdout.strip()
    live, dead = tmp_path / f"{_WORK_PREFIX}{os.getpid()}-a", tmp_path / f"{_WORK_PREFIX}{ended}-b"
    other = tmp_path / f"{_WORK_PREFIX}notapid-c"
    for folder in (live, dead, other):
        (folder / "output").mkdir(parents=True)
    _clean_stale_work_dirs(tmp_path)
    assert live.is_dir() and other.is_dir() and not dead.exists()  # a running push's build stays


def test_a_failed_push_of_an_output_leaves_its_card_as_it_was(api, hub_models, local_hub, hub_faults, tmp_path):
    """The card is written for the repo before the commit: a refused commit left a local card naming a repo
    that never got the model."""
    from hubmerge.card import write_card

    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out, token=local_hub.alice_token)
    before = write_card(out).read_bytes()
    hub_faults.path_pattern = r"/commit/"
    hub_faults.status, hub_faults.status_times = 409, 1
    target = fresh_repo()
    with pytest.raises(PushError):
        publish_output(out, target, token=local_hub.alice_token)
    assert (out / "README.md").read_bytes() == before and not api.repo_exists(target)
    (out / "README.md").unlink()  # an output without a card gets none from a failed push either
    hub_faults.status_times = 1
    with pytest.raises(PushError):
        publish_output(out, target, token=local_hub.alice_token)
    assert not (out / "README.md").exists()


def test_an_invalid_repo_id_is_refused_before_the_target_is_checked(hub_models, local_hub, tmp_path):
    """A repo id no repository can have was refused as a finding of "Checking the target repo", which then said
    the repository "was left as it was"; it is refused first, and says nothing was pushed."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out, token=local_hub.alice_token)
    steps: list[str] = []
    for bad in ("merged-convnext", "a/b/c", "org/bad name"):
        with pytest.raises(PushError, match="is not a valid repo id") as info:
            publish_output(out, bad, token=local_hub.alice_token, on_step=lambda done, what: steps.append(what))
        assert str(info.value).endswith("Nothing was pushed.") and "left as it was" not in str(info.value)
    assert steps == []


def test_branch_and_pull_request(api, hub_models, local_hub):
    repo_id = fresh_repo()
    first = publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False)
    on_branch = publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False,
                        branch="experiment", overwrite=True)
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    assert heads["main"] == first.push.commit_sha and heads["experiment"] == on_branch.push.commit_sha
    # the printed URL was the repo's main page, and the card's samples loaded main, not this branch
    assert first.push.url.endswith(f"/{repo_id}") and on_branch.push.url.endswith(f"/{repo_id}/tree/experiment")
    card = local_hub_file(api, repo_id, "README.md", revision="experiment")
    assert f'from_pretrained("{repo_id}", revision="experiment")' in card
    assert f'hubmerge.load_merged("{repo_id}@experiment", task=' in card
    assert 'hf_hub_download(repo, f"heads/{task}/model.safetensors", revision="experiment")' in card
    assert "revision=" not in local_hub_file(api, repo_id, "README.md") and "@experiment" not in card.split("```yaml")[1]
    pr = publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False, create_pr=True)
    assert pr.push.pull_request_url and pr.push.pull_request_url.endswith("/discussions/1")
    assert {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}["main"] == first.push.commit_sha
    assert "revision=" not in local_hub_file(api, repo_id, "README.md", revision="refs/pr/1")  # meant for main
    # a pull request to a branch is merged there: its card's samples load that branch, not the default one
    to_branch = publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False,
                        branch="experiment", create_pr=True)
    assert to_branch.push.pull_request_url and to_branch.push.pull_request_url.endswith("/discussions/2")
    assert to_branch.push.url.endswith(f"/{repo_id}")  # the pull request's commit is not on the branch's page
    card = local_hub_file(api, repo_id, "README.md", revision="refs/pr/2")
    assert f'from_pretrained("{repo_id}", revision="experiment")' in card
    assert {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}["experiment"] == (
        on_branch.push.commit_sha)


def test_a_new_branch_holds_the_pushed_output_alone(api, hub_models, local_hub):
    """A new branch starts as a copy of main: a two-task merge pushed to one kept main's third head beside its
    own (and would have kept main's eval_results.json, another model's accuracy). Main stays as it was; a
    repo that does not exist yet gets the branch too (the commit to it failed, and the repo was deleted)."""
    token = local_hub.alice_token
    repo_id = fresh_repo()
    publish(recipe_for(hub_models), repo_id, token=token, evaluate=False)
    main_files = set(api.list_repo_files(repo_id))
    two = recipe_for(hub_models, models={task: hub_models[task] for task in ("alpha", "beta")})
    pushed = publish(two, repo_id, token=token, evaluate=False, branch="two-tasks")  # no --overwrite: main kept
    assert set(api.list_repo_files(repo_id, revision="two-tasks")) - {".gitattributes"} == set(pushed.push.files)
    assert "heads/gamma/config.json" in main_files and set(api.list_repo_files(repo_id)) == main_files
    new = fresh_repo()
    made = publish(two, new, token=token, evaluate=False, branch="experiment")
    assert set(api.list_repo_files(new, revision="experiment")) - {".gitattributes"} == set(made.push.files)
    assert {b.name for b in api.list_repo_refs(new).branches} == {"main", "experiment"}


def test_private_is_refused_for_a_public_repo_that_exists(api, hub_models, local_hub, tmp_path):
    """The repo's visibility is set when it is created: asked for private, a push to a public repo published
    the model there without a word."""
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    with pytest.raises(PushError, match="it is public, and 'private' applies only to a repository the push creates"):
        publish(recipe_for(hub_models), repo_id, token=local_hub.alice_token, evaluate=False, private=True)
    assert api.list_repo_files(repo_id) == [".gitattributes"]  # refused before the merge, nothing pushed
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    with pytest.raises(PushError, match="it is public"):
        publish_output(out, repo_id, token=local_hub.alice_token, private=True, branch="new-branch")
    private = fresh_repo()
    api.create_repo(private, private=True)
    publish_output(out, private, token=local_hub.alice_token, private=True)  # private already: pushed
    assert api.model_info(private).private and "model.safetensors" in api.list_repo_files(private)


def test_a_new_repo_asked_for_private_is_made_private(api, hub_models, local_hub, tmp_path):
    """The push creates the repo: made public, the merge would be published to anyone."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    repo_id = fresh_repo()
    publish_output(out, repo_id, token=local_hub.alice_token, private=True)
    assert api.model_info(repo_id).private
    with pytest.raises(RepositoryNotFoundError):  # another user sees nothing
        HfApi(endpoint=local_hub.endpoint, token=local_hub.bob_token).model_info(repo_id)


def test_a_commit_made_after_the_target_was_checked_is_not_overwritten(api, hub_models, local_hub, tmp_path):
    """The push commits on top of the commit it looked at: one that lands meanwhile (another push, a user's
    edit) makes it fail, rather than have its files replaced or deleted without a word."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    target = check_target(repo_id, token=local_hub.alice_token, overwrite=True)
    api.upload_file(path_or_fileobj=b"theirs", path_in_repo="notes.txt", repo_id=repo_id)
    with pytest.raises(PushError) as refused:
        push_folder(out, repo_id, token=local_hub.alice_token, target=target, commit_message="merge")
    assert "changed meanwhile: a commit landed on its default branch after hubmerge looked at it" in str(refused.value)
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "notes.txt"}


def test_a_new_branch_starts_from_the_commit_the_push_looked_at(api, hub_models, local_hub, tmp_path):
    """A commit landing on main after the check is not the base of the push's new branch: the commit goes
    on top of the commit looked at, so a branch made from main's new head refused the push."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    target = check_target(repo_id, token=local_hub.alice_token, branch="merged")
    api.upload_file(path_or_fileobj=b"theirs", path_in_repo="notes.txt", repo_id=repo_id)
    pushed = push_folder(out, repo_id, token=local_hub.alice_token, target=target, branch="merged",
                         commit_message="merge")
    assert set(api.list_repo_files(repo_id, revision="merged")) == {".gitattributes", *pushed.files}
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "notes.txt"}  # main: theirs, untouched


def test_a_push_that_creates_the_repo_does_not_land_on_anothers_commit(api, hub_models, local_hub, tmp_path,
                                                                        monkeypatch):
    """Two pushes to one new repo: the second saw it empty and committed; the first, which created it,
    committed on top without a parent, and the repo held both outputs' files mixed, both pushes "done"."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    repo_id = fresh_repo()
    target = check_target(repo_id, token=local_hub.alice_token)
    create_repo = HfApi.create_repo

    def created_then_another_push_lands(self, *args, **kwargs):
        made = create_repo(self, *args, **kwargs)
        api.upload_file(path_or_fileobj=b"theirs", path_in_repo="model.safetensors.index.json", repo_id=repo_id)
        return made

    monkeypatch.setattr(HfApi, "create_repo", created_then_another_push_lands)
    with pytest.raises(PushError, match="changed meanwhile"):
        push_folder(out, repo_id, token=local_hub.alice_token, target=target, commit_message="merge")
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "model.safetensors.index.json"}  # theirs, kept


def test_a_push_error_ends_each_sentence_once():
    error = PushError("a/b", "The revision (branch, tag or commit) does not exist.")
    assert str(error).endswith("does not exist. The repository was left as it was.")


def test_a_repo_id_without_a_namespace_is_refused_before_any_work():
    """The Hub would put 'merged-model' under the token's user, and the card's samples would name a repo
    id that does not resolve."""
    with pytest.raises(PushError, match="write it as namespace/name"):
        check_repo_id("merged-model")
    check_repo_id("alice/merged")


def test_push_cli_never_prints_the_token(hub_models, local_hub, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_for(hub_models).to_yaml())
    repo_id = fresh_repo()
    code = main(["push", str(recipe), "--repo-id", repo_id, "--token", local_hub.alice_token, "--no-evaluate", "--quiet"])
    out = capsys.readouterr()
    assert code == 0
    assert repo_id in out.out
    assert local_hub.alice_token not in out.out + out.err
    code = main(["push", str(recipe), "--repo-id", repo_id, "--token", local_hub.alice_token, "--no-evaluate"])
    out = capsys.readouterr()
    assert code == 1 and "PushError" in out.err and local_hub.alice_token not in out.out + out.err


def test_push_cli_takes_the_output_dtype_and_shard_size(api, hub_models, local_hub, tmp_path):
    from safetensors import safe_open

    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_for(hub_models).to_yaml())
    repo_id = fresh_repo()
    code = main(["push", str(recipe), "--repo-id", repo_id, "--token", local_hub.alice_token, "--no-evaluate",
                 "--quiet", "--dtype", "bfloat16", "--max-shard-size", "20KB"])
    assert code == 0
    files = api.list_repo_files(repo_id)
    shards = sorted(f for f in files if f.startswith("model-") and f.endswith(".safetensors"))
    assert "model.safetensors.index.json" in files and len(shards) > 1 and "model.safetensors" not in files
    folder = Path(api.snapshot_download(repo_id, local_dir=tmp_path / "pushed"))
    for shard in shards:
        with safe_open(folder / shard, "pt") as f:
            assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"BF16"}
    assert "dtype: bfloat16" in (folder / "hubmerge_recipe.yaml").read_text()


def test_push_cli_publishes_a_merged_output_as_it_is(api, hub_models, local_hub, tmp_path, capsys):
    """merge, look at it, push it: the pushed files are the inspected ones, bytes and all, in one commit."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_for(hub_models).to_yaml())
    out = tmp_path / "out"
    assert main(["merge", str(recipe), "-o", str(out), "--quiet", "--token", local_hub.alice_token]) == 0
    repo_id = fresh_repo()
    capsys.readouterr()
    assert main(["push", str(out), "--repo-id", repo_id, "--token", local_hub.alice_token]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip().endswith(repo_id) and "Uploading in one commit" in printed.err
    assert local_hub.alice_token not in printed.out + printed.err
    commits = api.list_repo_commits(repo_id)
    assert len(commits) == 2 and commits[0].title == "hubmerge: Task Arithmetic of 3 fine-tuned models and their base"
    pushed = Path(api.snapshot_download(repo_id, local_dir=tmp_path / "pushed"))
    local = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert local == sorted(p.relative_to(pushed).as_posix() for p in pushed.rglob("*")
                           if p.is_file() and ".cache" not in p.parts and p.name != ".gitattributes")
    assert all((pushed / name).read_bytes() == (out / name).read_bytes() for name in local)
    assert f"{repo_id}" in (out / "README.md").read_text()  # the card's code samples name the repo
    on_branch = fresh_repo()  # to a branch: its page, and samples that load it
    assert main(["push", str(out), "--repo-id", on_branch, "--branch", "dev", "--token", local_hub.alice_token]) == 0
    assert capsys.readouterr().out.strip().endswith(f"/{on_branch}/tree/dev")
    assert f'from_pretrained("{on_branch}", revision="dev")' in local_hub_file(api, on_branch, "README.md", "dev")
    assert main(["push", str(out), "--repo-id", on_branch, "--branch", "dev", "--create-pr", "--token",
                 local_hub.alice_token]) == 0  # a pull request to dev is merged there: the samples load dev
    assert f'from_pretrained("{on_branch}", revision="dev")' in local_hub_file(api, on_branch, "README.md", "refs/pr/1")
    card = out / "README.md"
    card.write_text(card.read_text() + "\nNotes added by hand.\n")
    again = fresh_repo()
    assert main(["push", str(out), "--repo-id", again, "--token", local_hub.alice_token]) == 0
    assert "README.md is not the card hubmerge wrote (edited by hand?): pushing it as it is" in capsys.readouterr().err
    assert local_hub_file(api, again, "README.md").endswith("Notes added by hand.\n")


def test_an_output_missing_a_head_is_neither_carded_nor_pushed(api, hub_models, local_hub, tmp_path, capsys):
    """A head folder deleted by hand: `card` listed the task with 0 classes, and `push` published an output
    whose `load_merged(task=...)` then failed."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out, token=local_hub.alice_token)
    task = min(p.name for p in (out / "heads").iterdir())
    shutil.rmtree(out / "heads" / task)
    repo_id = fresh_repo()
    for command in (["card", str(out)], ["push", str(out), "--repo-id", repo_id, "--token", local_hub.alice_token]):
        assert main(command) == 1
        said = "".join(capsys.readouterr().err.split())  # a long path wraps anywhere
        assert "".join((f"ModelFilesNotFoundError: '{out}' is incomplete: heads/{task}/model.safetensors, "
                        f"heads/{task}/config.json are missing (deleted since the merge?)").split()) in said
    assert main(["card", str(tmp_path / "nowhere")]) == 1  # it said "holds no hubmerge_recipe.yaml"
    assert "nowhere' does not exist: give the folder `hubmerge merge` wrote" in capsys.readouterr().err
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="is incomplete: heads/.*model.safetensors are missing"):
        publish_output(out, repo_id, token=local_hub.alice_token)
    assert not api.repo_exists(repo_id)
    (out / "model.safetensors").touch()
    (out / "hubmerge_heads.json").write_text("{broken")  # the completeness check leaves it to its reader
    assert main(["card", str(out)]) == 1
    assert "RecipeError: " in capsys.readouterr().err  # not an "unexpected error: JSONDecodeError"


def test_an_output_whose_heads_index_was_edited_is_refused(api, hub_models, local_hub, tmp_path, capsys):
    """hubmerge_heads.json edited by hand to drop a task: `evaluate` said "unknown task" for a task the user
    never named, and `card` listed the task with its head gone."""
    from hubmerge.evaluation import compare_inputs, evaluate_model

    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out, token=local_hub.alice_token)
    index = json.loads((out / "hubmerge_heads.json").read_text())
    dropped = next(iter(index["tasks"]))
    index["tasks"]["extra"] = index["tasks"].pop(dropped)
    (out / "hubmerge_heads.json").write_text(json.dumps(index))
    problem = (f"'{out}' is not as it was merged: its hubmerge_heads.json lists no head for {dropped}, which its "
               "recipe merged and heads for extra, which its recipe does not name (edited since the merge?)")
    assert main(["card", str(out)]) == 1
    assert problem.replace(" ", "") in "".join(capsys.readouterr().err.split())
    for call in (lambda: engine.read_output_recipe(out), lambda: evaluate_model(str(out), token=local_hub.alice_token),
                 lambda: compare_inputs(str(out), token=local_hub.alice_token),
                 lambda: publish_output(out, fresh_repo(), token=local_hub.alice_token)):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert problem in str(info.value)
    assert not (out / "README.md").exists()


def test_the_card_takes_the_license_of_hub_inputs_at_the_commit_merged(api, family, local_hub, tmp_path):
    """ModelCard.load takes no revision: the TypeError was caught as "no card", so no card of Hub inputs
    had a license."""
    from huggingface_hub import ModelCard

    repos = upload_family(family, local_hub.endpoint, local_hub.alice_token, prefix="licensed-")
    for repo in repos.values():
        api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# a fine-tune\n", path_in_repo="README.md",
                        repo_id=repo)
    out = tmp_path / "out"
    engine.merge(recipe_for(repos), out, token=local_hub.alice_token)
    for repo in repos.values():  # relicensed after the merge: the card speaks of the commits merged
        api.upload_file(path_or_fileobj=b"---\nlicense: apache-2.0\n---\n", path_in_repo="README.md", repo_id=repo)
    assert main(["card", str(out)]) == 0
    assert ModelCard.load(out / "README.md").data.license == "mit"


def test_a_link_in_an_output_is_not_pushed(api, hub_models, local_hub, tmp_path):
    """A link put into an output (under heads/, say) was followed: the push published the file it led to."""
    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out, token=local_hub.alice_token)
    (tmp_path / "secret").write_text("hf_secret")
    (out / "heads" / "notes.txt").symlink_to(tmp_path / "secret")
    repo_id = fresh_repo()
    with pytest.raises(PushError, match=f"'{out}/heads/notes.txt' is a link: a push publishes the files an output "
                                        "holds, never what a link leads to"):
        publish_output(out, repo_id, token=local_hub.alice_token)
    assert not api.repo_exists(repo_id)


def test_a_quiet_push_shows_no_upload_bars(family, local_hub, tmp_path):
    """The real Hub takes weights by LFS (or Xet), and huggingface_hub draws a bar per uploaded file: --quiet
    turns those off too. A local Hub that answers "lfs" for every file stands in for it."""
    import os
    import subprocess
    import sys

    from hubmerge.hub.localhub import LocalHub

    from ._models import write_recipe

    out = tmp_path / "out"
    engine.merge(write_recipe(tmp_path / "r.yaml", family, "simple_average"), out)
    with LocalHub(tmp_path / "hub", tokens={local_hub.alice_token: "alice"}, lfs_threshold=1024) as hub:
        env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_XET": "1"}
        for switch in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
            env.pop(switch, None)
        push = [sys.executable, "-m", "hubmerge.cli", "push", str(out), "--endpoint", hub.endpoint,
                "--token", local_hub.alice_token]
        for repo_id, quiet in (("alice/loud", []), ("alice/quiet", ["--quiet"])):
            done = subprocess.run([*push, "--repo-id", repo_id, *quiet], capture_output=True, text=True, env=env,
                                  timeout=300, check=False)
            assert done.returncode == 0 and done.stdout.strip().endswith(repo_id), done.stderr
            assert ("model.safetensors" in done.stderr) is not bool(quiet), done.stderr  # the LFS upload's bar
        assert done.stderr == "" and hub.stats.requests.get("lfs_upload")


def test_a_dataset_without_a_task_starts_no_evaluation(family, tmp_path):
    """Only a task's dataset is evaluated (on that task's head): a dataset on an entry without a task is
    not, and the build ends with the merge instead of failing after it for want of a task."""
    from hubmerge.publish import build

    recipe = Recipe.from_dict({
        "method": "task_arithmetic",
        "base_model": str(family.base),
        "models": [{"model": str(path), "dataset": "nobody/no-such-dataset"} for path in family.models.values()],
        "target_modules": ["convnext"],
    })
    built = build(recipe, tmp_path / "out")
    assert built.report is None and (tmp_path / "out" / "model.safetensors").is_file()


def test_a_build_without_evaluation_evaluates_nothing(family, tmp_path, monkeypatch):
    """evaluate=False (--no-evaluate, the app's box unticked): tasks that name datasets are neither checked on
    the Hub nor evaluated, and the output has no reports."""
    from hubmerge import evaluation
    from hubmerge.publish import build

    for name in ("check_recipe_datasets", "evaluate_model", "compare_inputs"):
        monkeypatch.setattr(evaluation, name, lambda *a, **k: pytest.fail("evaluated with evaluate=False"))
    built = build(local_recipe_with_datasets(family), tmp_path / "out", evaluate=False)
    assert built.report is None and built.comparison is None
    assert not (tmp_path / "out" / "eval_results.json").exists() and built.card.is_file()


@pytest.mark.parametrize("compare", [True, False])
def test_a_build_evaluates_as_asked_and_names_the_merged_row_by_its_repo(family, tmp_path, monkeypatch, compare):
    """The evaluation gets the build's sample limit, label matching and the recipe's device; with compare_inputs
    the inputs are evaluated too, and the merged row is named by the repo it goes to, not the build folder."""
    from hubmerge import evaluation
    from hubmerge.evaluation import CompareReport, EvalReport
    from hubmerge.publish import build

    calls = []

    def evaluated(kind):
        def run(output, datasets, **options):
            calls.append((kind, set(datasets), options))
            merged = EvalReport(str(output))
            return CompareReport(merged=merged, base=None, finetuned={}, tasks=()) if kind == "compare" else merged
        return run

    monkeypatch.setattr(evaluation, "check_recipe_datasets", lambda *a, **k: {})
    monkeypatch.setattr(evaluation, "compare_inputs", evaluated("compare"))
    monkeypatch.setattr(evaluation, "evaluate_model", evaluated("model"))
    monkeypatch.setattr(evaluation, "save_output_reports", lambda *a, **k: None)
    built = build(local_recipe_with_datasets(family, device="cpu"), tmp_path / "out", compare_inputs=compare, max_samples=7, match_labels="position",
                  repo_id="alice/merged")
    [(kind, tasks, options)] = calls
    assert kind == ("compare" if compare else "model") and tasks == set(family.models)
    assert (options["device"], options["max_samples"], options["match_labels"]) == ("cpu", 7, "position")
    if compare:
        assert built.comparison is not None and built.report is built.comparison.merged
        assert built.comparison.merged.model == "alice/merged"
    else:
        assert built.comparison is None and built.report is not None


def test_a_cancel_that_comes_as_the_merge_ends_stops_the_build_before_its_card(family, tmp_path, monkeypatch):
    """The app's Cancel, pressed as the merge finishes: no evaluation, no card, so nothing is pushed."""
    import threading

    from hubmerge.errors import CancelledError
    from hubmerge.publish import build

    from ._models import write_recipe

    cancel = threading.Event()
    execute = engine.execute

    def merge_then_cancel(*args, **kwargs):
        merged = execute(*args, **kwargs)
        cancel.set()
        return merged

    monkeypatch.setattr(engine, "execute", merge_then_cancel)
    recipe = Recipe.from_yaml(write_recipe(tmp_path / "r.yaml", family, "simple_average").read_text(),
                              base_dir=tmp_path)
    with pytest.raises(CancelledError):
        build(recipe, tmp_path / "out", cancel=cancel)
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "README.md").exists()


def test_a_head_its_datasets_classes_do_not_fit_is_refused_before_the_merge(family, tmp_path, monkeypatch):
    """The class names a Hub dataset's card lists are checked against the planned heads before the merge (push,
    the app), not found only by the evaluation after it."""
    from hubmerge import evaluation
    from hubmerge.errors import HeadMismatchError
    from hubmerge.publish import build

    monkeypatch.setattr(evaluation, "check_recipe_datasets",
                        lambda *a, **k: {task: tuple(f"class {i}" for i in range(50)) for task in family.models})
    monkeypatch.setattr(engine, "execute", lambda *a, **k: pytest.fail("merged before the labels were checked"))
    with pytest.raises(HeadMismatchError, match="50 classes"):
        build(local_recipe_with_datasets(family, "nobody/data"), tmp_path / "out")



def test_a_base_without_an_image_processor_is_refused_before_an_evaluated_build(family, tmp_path, monkeypatch):
    """push and the app: the output would take no preprocessor_config.json from the base, and its evaluation
    needs one; refused before the merge, where the evaluation failed after it."""
    import shutil

    from hubmerge import evaluation
    from hubmerge.errors import ModelFilesNotFoundError
    from hubmerge.publish import build

    base = tmp_path / "base"
    shutil.copytree(family.base, base)
    (base / "preprocessor_config.json").unlink()
    monkeypatch.setattr(evaluation, "check_recipe_datasets", lambda *a, **k: {})
    monkeypatch.setattr(engine, "execute", lambda *a, **k: pytest.fail("merged before the processor was checked"))
    with pytest.raises(ModelFilesNotFoundError, match=f"{base}:preprocessor_config.json: not found"):
        build(local_recipe_with_datasets(family, "nobody/data", base_model=str(base)), tmp_path / "out")


def test_torchvision_models_need_no_image_processor_for_an_evaluated_build(tmp_path, monkeypatch):
    """export-resnet writes no preprocessor_config.json (the ImageNet transforms are the family's): the check
    that refuses an output without an image processor lets such a merge through to the merge itself."""
    from hubmerge import evaluation
    from hubmerge.publish import build
    from hubmerge.vision.export import export_torchvision_resnet

    for name in ("a", "b"):
        export_torchvision_resnet("resnet18", tmp_path / name, num_classes=2)
    recipe = Recipe.from_dict({"method": "simple_average", "models": [
        {"model": str(tmp_path / name), "task": name, "dataset": "nobody/data"} for name in ("a", "b")]})
    monkeypatch.setattr(evaluation, "check_recipe_datasets", lambda *a, **k: {})
    def merged(*args, **kwargs):
        raise RuntimeError("reached the merge")

    monkeypatch.setattr(engine, "execute", merged)
    with pytest.raises(RuntimeError, match="reached the merge"):
        build(recipe, tmp_path / "out")


def test_an_evaluated_build_refuses_a_folder_of_other_files_before_planning(family, tmp_path, monkeypatch):
    """push and the app build through ``build``: a folder no merge wrote is refused before any header is read,
    even with overwrite (the merge's own check came only after the datasets and the plan)."""
    from hubmerge import evaluation
    from hubmerge.errors import OutputExistsError, OutputNotOursError
    from hubmerge.publish import build

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "runs.csv").write_text("a week of work")
    monkeypatch.setattr(evaluation, "check_recipe_datasets", lambda *a, **k: pytest.fail("read datasets"))
    monkeypatch.setattr(engine, "plan", lambda *a, **k: pytest.fail("planned before checking the output"))
    with pytest.raises(OutputNotOursError):
        build(local_recipe_with_datasets(family, "nobody/data"), tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "runs.csv").read_text() == "a week of work"
    (tmp_path / "earlier").mkdir()  # an earlier output, without overwrite: refused as early
    (tmp_path / "earlier" / "hubmerge_recipe.yaml").write_text("method: simple_average\n")
    with pytest.raises(OutputExistsError) as refused:
        build(local_recipe_with_datasets(family, "nobody/data"), tmp_path / "earlier")
    assert not isinstance(refused.value, OutputNotOursError)


def test_push_cli_refuses_what_a_pushed_output_cannot_change(hub_models, local_hub, tmp_path, capsys):
    repo_id = fresh_repo()
    assert main(["push", str(tmp_path), "--repo-id", repo_id, "--token", local_hub.alice_token]) == 1
    assert "holds no hubmerge_recipe.yaml" in capsys.readouterr().err
    for option, value in (("--dtype", "float16"), ("--max-samples", "10")):
        assert main(["push", str(tmp_path), "--repo-id", repo_id, option, value]) == 2
        err = " ".join(capsys.readouterr().err.replace("│", " ").split())
        assert f"Invalid value for {option}: an output directory is pushed as it is" in err
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).model_info(repo_id)


def _cli_with_endpoint_option(local_hub, tmp_path, *args: str) -> None:
    """Run the CLI in a fresh process with --endpoint at the local Hub and HF_ENDPOINT where nothing listens:
    the libraries read HF_ENDPOINT when imported, so it succeeds only if the option reached them all.
    --quiet: nothing on stderr, not even the libraries' own bars (datasets draws one per split it prepares)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    for switch in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):  # online, and the bars as a user has them
        env.pop(switch, None)
    done = subprocess.run(
        [sys.executable, "-m", "hubmerge.cli", *args, "--endpoint", local_hub.endpoint,
         "--token", local_hub.alice_token, "--max-samples", "4", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_endpoint_option_reaches_the_evaluation_too(api, local_hub, tmp_path):
    from ._ui_helpers import publish_fixtures

    fixtures = publish_fixtures(local_hub.endpoint, local_hub.alice_token)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(fixtures.recipe().to_yaml())
    repo_id = fresh_repo()
    _cli_with_endpoint_option(local_hub, tmp_path, "push", str(recipe), "--repo-id", repo_id)
    assert "eval_comparison.json" in api.list_repo_files(repo_id)  # base and fine-tunes were loaded from the Hub
    # evaluate takes the option too: a merged output on the Hub, next to its inputs, all loaded from there (its
    # recipe names the local datasets by paths below their parent folder, which are given here)
    given = [arg for task, path in fixtures.datasets.items() for arg in ("--task", f"{task}={path}")]
    _cli_with_endpoint_option(local_hub, tmp_path, "evaluate", repo_id, "--compare-inputs", *given,
                              "--json", str(tmp_path / "report.json"))
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["merged"]) == {*fixtures.models, "average"} and len(report["finetuned"]) == len(fixtures.models)


def test_a_dataset_the_hub_lacks_is_refused_before_the_merge(hub_models, local_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("hubmerge.engine.plan", lambda *a, **k: pytest.fail("planned before checking the datasets"))
    data = recipe_for(hub_models).to_dict()
    data["models"][0]["dataset"] = "alice/no-such-dataset"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Recipe.from_dict(data).to_yaml())
    token = ["--token", local_hub.alice_token]
    for command in (["merge", str(recipe), "-o", str(tmp_path / "out"), "--evaluate"],
                    ["push", str(recipe), "--repo-id", fresh_repo()]):
        assert main([*command, *token]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error: DatasetError: dataset 'alice/no-such-dataset:test': is not on the Hub"), err
    assert not (tmp_path / "out").exists()
    # a split the dataset lacks was found only after the merge, in the words of `datasets`
    import pandas as pd

    from ._eval_helpers import hf_online

    hf_online(monkeypatch, True)  # datasets froze the offline switch of an earlier test module at import
    dataset = f"alice/splits-{uuid.uuid4().hex[:6]}"
    HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).create_repo(dataset, repo_type="dataset")
    (tmp_path / "data").mkdir()
    pd.DataFrame({"label": [0, 1]}).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).upload_folder(
        folder_path=str(tmp_path / "data"), path_in_repo="data", repo_id=dataset, repo_type="dataset")
    data["models"][0]["dataset"] = f"{dataset}:validation"
    recipe.write_text(Recipe.from_dict(data).to_yaml())
    assert main(["merge", str(recipe), "-o", str(tmp_path / "out"), "--evaluate", *token]) == 1
    assert (f"error: DatasetError: dataset '{dataset}:validation': has no split 'validation' (its splits: test); "
            f"name the one to evaluate on after a colon, e.g. `dataset: {dataset}:test`") in " ".join(
                capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists()


def test_the_early_dataset_check_refuses_only_what_the_hub_says_is_missing(monkeypatch):
    from huggingface_hub import constants

    from hubmerge.evaluation.data import check_hub_datasets
    from hubmerge.recipe import DatasetRef

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the evaluation will say
    check_hub_datasets({"a": DatasetRef("org/anything"), "b": DatasetRef("not an id")}, token=None)


def test_the_early_dataset_check_reads_a_private_dataset_with_the_token(local_hub, tmp_path, monkeypatch):
    """A private dataset that the token given may read is on the Hub, and its splits are checked: asked
    without that token (the machine's, none here), the Hub hides it and the merge was refused as "not on
    the Hub"."""
    import pandas as pd

    from hubmerge.errors import DatasetError
    from hubmerge.evaluation.data import check_hub_datasets
    from hubmerge.recipe import DatasetRef

    from ._eval_helpers import hf_online

    hf_online(monkeypatch, True)
    dataset = f"alice/private-splits-{uuid.uuid4().hex[:6]}"
    alice = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    alice.create_repo(dataset, repo_type="dataset", private=True)
    (tmp_path / "data").mkdir()
    pd.DataFrame({"label": [0, 1]}).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    alice.upload_folder(folder_path=str(tmp_path / "data"), path_in_repo="data", repo_id=dataset,
                        repo_type="dataset")
    assert check_hub_datasets({"a": DatasetRef.parse(f"{dataset}:test")}, token=local_hub.alice_token) == {}
    with pytest.raises(DatasetError, match="has no split 'validation' \\(its splits: test\\)"):
        check_hub_datasets({"a": DatasetRef.parse(f"{dataset}:validation")}, token=local_hub.alice_token)


def test_the_early_dataset_check_reads_the_class_names_of_the_named_label_column(local_hub, tmp_path, monkeypatch):
    """The head check before the merge takes the class names the evaluation will score: a named label column's
    (CIFAR-100's coarse_label after fine_label), not the first ClassLabel's, which refused a fitting head."""
    import datasets

    from hubmerge.evaluation.data import check_hub_datasets
    from hubmerge.recipe import DatasetRef

    from ._eval_helpers import hf_online, upload_dataset

    hf_online(monkeypatch, True)
    features = datasets.Features({"fine_label": datasets.ClassLabel(names=["a", "b", "c"]),
                                  "coarse_label": datasets.ClassLabel(names=["x", "y"])})
    data = datasets.Dataset.from_dict({"fine_label": [0, 2], "coarse_label": [0, 1]}, features=features)
    datasets.DatasetDict({"test": data}).save_to_disk(str(tmp_path / "saved"))
    alice = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo = upload_dataset(alice, f"alice/two-labels-{uuid.uuid4().hex[:6]}", tmp_path / "saved", tmp_path / "up")
    token = local_hub.alice_token
    assert check_hub_datasets({"a": DatasetRef(repo)}, token=token) == {"a": ("a", "b", "c")}
    assert check_hub_datasets({"a": DatasetRef(repo, label_column="coarse_label")}, token=token) == {"a": ("x", "y")}


def test_a_push_offline_says_to_unset_hf_hub_offline_not_to_use_local_paths(monkeypatch):
    """The offline error of a read ("or use local model paths") was given to pushes too, whose models may
    well be local already: no local path stands in for the repo a push writes to."""
    from huggingface_hub import constants

    from hubmerge.errors import HubError
    from hubmerge.hub.push import check_target

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set. Unset it to publish there.$"):
        check_target("alice/x", token="hf_testtoken", endpoint="http://127.0.0.1:9")
    from hubmerge.hub.source import HubSource
    from hubmerge.hub.space import deploy_space

    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set. Unset it to publish there.$"):
        deploy_space("alice/app", token="hf_testtoken", endpoint="http://127.0.0.1:9")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set. Unset it, or use local model paths.$"):
        HubSource("alice/model", endpoint="http://127.0.0.1:9")  # a read: a local copy of the model does


def test_a_hub_dataset_without_data_files_is_refused_before_the_merge(local_hub, tmp_path, monkeypatch):
    """A dataset repo that holds no data (a push_to_hub that failed half-way) passed the early check, so the
    merge ran and its evaluation then called the dataset "not found"; both now say it holds no data files."""
    from hubmerge.errors import DatasetError
    from hubmerge.evaluation.data import check_hub_datasets, load_task_data
    from hubmerge.recipe import DatasetRef

    from ._eval_helpers import hf_online

    hf_online(monkeypatch, True)
    dataset = f"alice/no-data-{uuid.uuid4().hex[:6]}"
    HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).create_repo(dataset, repo_type="dataset")
    ref = DatasetRef.parse(f"{dataset}:test")
    with pytest.raises(DatasetError, match=f"dataset '{dataset}:test': holds no data files .* add its data"):
        check_hub_datasets({"a": ref}, token=local_hub.alice_token)
    with pytest.raises(DatasetError, match="holds no data files") as info:
        load_task_data("a", ref, token=local_hub.alice_token)
    assert "was not found" not in str(info.value)


def test_the_early_dataset_check_lets_a_gated_dataset_through(monkeypatch):
    """A gated dataset exists (huggingface_hub's GatedRepoError is a RepositoryNotFoundError): whether the token
    may read it is the evaluation's to find, not a reason to call it "not on the Hub"."""
    import httpx2
    from huggingface_hub import HfApi as Api
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    from hubmerge.evaluation import data
    from hubmerge.recipe import DatasetRef

    def gated(self, repo_id, **kwargs):
        response = httpx2.Response(403, request=httpx2.Request("GET", f"https://hub/api/datasets/{repo_id}"))
        raise hf.GatedRepoError("gated", response=response)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(Api, "dataset_info", gated)
    monkeypatch.setattr(data, "_hub_info", lambda ref, token: pytest.fail("a gated dataset is not read here"))
    assert data.check_hub_datasets({"a": DatasetRef("org/gated")}, token=None) == {}


def test_a_folder_with_no_files_is_never_pushed(api, local_hub, tmp_path):
    """An output deleted after its push was checked (the web app's next merge replaces it) made an empty commit
    that said "Pushed 0 files", and with overwrite deleted every file of the repo."""
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"kept", path_in_repo="model.txt", repo_id=repo_id)
    before = len(api.list_repo_commits(repo_id))
    (tmp_path / "out" / "heads").mkdir(parents=True)  # folders, no files
    for overwrite, target_id in ((True, repo_id), (False, fresh_repo())):
        target = check_target(target_id, token=local_hub.alice_token, overwrite=overwrite)
        with pytest.raises(PushError, match="holds no files \\(was it deleted\\?\\): there is nothing to push"):
            push_folder(tmp_path / "out", target_id, token=local_hub.alice_token, target=target)
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "model.txt"}
    assert len(api.list_repo_commits(repo_id)) == before and not api.repo_exists(target_id)


def test_a_lost_race_for_a_new_branch_leaves_the_winners_branch(api, local_hub, tmp_path):
    """Two pushes to one new branch: both saw it missing; the first made it and committed, the second's
    commit was refused (its parent is no longer the branch's head), and its undo deleted the branch it had
    not made, with the first push's commit on it."""
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    late = check_target(repo_id, token=local_hub.alice_token, branch="trial")
    first = push_folder(tmp_path / "out", repo_id, token=local_hub.alice_token, branch="trial",
                        target=check_target(repo_id, token=local_hub.alice_token, branch="trial"))
    with pytest.raises(PushError, match="changed meanwhile: branch 'trial' was created after hubmerge looked at it"):
        push_folder(tmp_path / "out", repo_id, token=local_hub.alice_token, target=late, branch="trial")
    assert {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}["trial"] == first.commit_sha


def test_a_new_branch_another_commits_to_before_the_push_is_not_deleted(api, local_hub, tmp_path, monkeypatch):
    """The push made the branch, then another's commit landed on it before the push's own: the push fails,
    and its undo keeps the branch, with that commit on it."""
    repo_id = fresh_repo()
    api.create_repo(repo_id)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    target = check_target(repo_id, token=local_hub.alice_token, branch="trial")
    create_branch = HfApi.create_branch

    def made_then_another_commits(self, *args, **kwargs):
        create_branch(self, *args, **kwargs)
        api.upload_file(path_or_fileobj=b"theirs", path_in_repo="notes.txt", repo_id=repo_id, revision="trial")

    monkeypatch.setattr(HfApi, "create_branch", made_then_another_commits)
    with pytest.raises(PushError, match="changed meanwhile"):
        push_folder(tmp_path / "out", repo_id, token=local_hub.alice_token, target=target, branch="trial")
    assert set(api.list_repo_files(repo_id, revision="trial")) == {".gitattributes", "notes.txt"}


def test_a_lost_race_for_a_new_repo_says_it_was_created_meanwhile(api, local_hub, tmp_path):
    """Two pushes to one new repo: the second to create it was told 'You already created this model repo',
    the Hub's words for a user's mistake, not that another push made it first; the first's commit stays."""
    repo_id = fresh_repo()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    late = check_target(repo_id, token=local_hub.alice_token)
    first = push_folder(tmp_path / "out", repo_id, token=local_hub.alice_token,
                        target=check_target(repo_id, token=local_hub.alice_token))
    with pytest.raises(PushError, match="changed meanwhile: the repository was created after hubmerge looked at it"):
        push_folder(tmp_path / "out", repo_id, token=local_hub.alice_token, target=late)
    assert api.model_info(repo_id).sha == first.commit_sha


def test_an_output_replaced_during_its_push_is_pushed_as_it_was_listed(api, hub_models, local_hub, tmp_path,
                                                                        monkeypatch):
    """Another command's merge --overwrite replaced the output while the commit read its files: the files
    read before were the old output's, those after the new one's, and the repo held the old recipe beside
    the new weights. The commit is the output as the push listed it, and nothing is left beside it."""
    from huggingface_hub import CommitOperationAdd

    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    listed = {name: (out / name).read_bytes() for name in ("hubmerge_recipe.yaml", "model.safetensors")}
    other = Recipe.from_dict({**recipe_for(hub_models).to_dict(), "parameters": {"scaling_factor": 0.9}})
    repo_id = fresh_repo()
    target = check_target(repo_id, token=local_hub.alice_token)
    b64content = CommitOperationAdd.b64content

    def read_then_replaced(self):  # type: ignore[no-untyped-def]
        content = b64content(self)
        if self.path_in_repo == "hubmerge_recipe.yaml":
            engine.merge(other, out, overwrite=True)
        return content

    monkeypatch.setattr(CommitOperationAdd, "b64content", read_then_replaced)
    push_folder(out, repo_id, token=local_hub.alice_token, target=target, commit_message="merge")
    assert (out / "model.safetensors").read_bytes() != listed["model.safetensors"]  # it was replaced
    for name, content in listed.items():
        assert Path(api.hf_hub_download(repo_id, name)).read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_replaced_while_its_push_lists_it_is_refused_and_one_without_links_is_read_as_it_is(
        api, local_hub, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("a")
    repo_id = fresh_repo()
    link = os.link

    def replaced_meanwhile(source, destination):  # type: ignore[no-untyped-def]
        link(source, destination)
        out.rename(tmp_path / "old")
        (tmp_path / "new").mkdir()
        (tmp_path / "new" / "a.txt").write_text("new")
        (tmp_path / "new").rename(out)

    monkeypatch.setattr(os, "link", replaced_meanwhile)
    with pytest.raises(PushError, match="was replaced by another output .* while the push read it"):
        push_folder(out, repo_id, token=local_hub.alice_token,
                    target=check_target(repo_id, token=local_hub.alice_token))
    assert not api.repo_exists(repo_id)

    def refused(source, destination):  # type: ignore[no-untyped-def]
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)  # a filesystem without hard links: the folder itself is pushed
    push_folder(out, repo_id, token=local_hub.alice_token, target=check_target(repo_id, token=local_hub.alice_token))
    assert Path(api.hf_hub_download(repo_id, "a.txt")).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "out"]


def test_two_pushes_of_one_output_at_once_each_commit_their_own_card(api, hub_models, local_hub, tmp_path,
                                                                     monkeypatch):
    """Two terminals push one output to two repos: each rewrites the output's card to name its repo, and the
    second's card, written while the first was about to read the folder, was what the first committed, so
    one repo's card told to load the other (seen in one run of six of two `hubmerge push` at once)."""
    from hubmerge import card as cards

    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    first, second = fresh_repo(), fresh_repo()
    write_atomically = cards.write_atomically

    def the_other_push_writes_its_card(path, content):  # type: ignore[no-untyped-def]
        written = write_atomically(path, content)
        if f'"{first}"' in content:  # the first push's card is written: the second push runs whole
            publish_output(out, second, token=local_hub.alice_token)
        return written

    monkeypatch.setattr(cards, "write_atomically", the_other_push_writes_its_card)
    publish_output(out, first, token=local_hub.alice_token)
    for repo_id, other in ((first, second), (second, first)):
        card = local_hub_file(api, repo_id, "README.md")
        assert f'"{repo_id}"' in card and other not in card


def test_an_output_replaced_after_its_card_was_written_is_not_pushed_under_it(api, hub_models, local_hub,
                                                                              tmp_path, monkeypatch):
    """The commit takes the card written for the push, not README.md: another command's merge --overwrite
    replacing the output once that card was written made the commit the new output's weights and recipe
    under the old one's card (its recipe, its results). The push is refused; the new output keeps its card."""
    from hubmerge import card as cards

    out = tmp_path / "out"
    engine.merge(recipe_for(hub_models), out)
    cards.write_card(out)  # the old output's card, which a failed push puts back
    other = Recipe.from_dict({**recipe_for(hub_models).to_dict(), "parameters": {"scaling_factor": 0.9}})
    repo_id = fresh_repo()
    write_atomically = cards.write_atomically
    new_card: list[bytes | None] = []

    def card_now() -> bytes | None:
        return (out / "README.md").read_bytes() if (out / "README.md").is_file() else None

    def replaced_once_written(path, content):  # type: ignore[no-untyped-def]
        written = write_atomically(path, content)
        if f'"{repo_id}"' in content:
            engine.merge(other, out, overwrite=True)
            new_card.append(card_now())
        return written

    monkeypatch.setattr(cards, "write_atomically", replaced_once_written)
    with pytest.raises(PushError, match="was replaced by another output"):
        publish_output(out, repo_id, token=local_hub.alice_token)
    assert not api.repo_exists(repo_id)
    assert new_card and card_now() == new_card[0]  # not the old output's card put back into it


def _local_folders(root: Path) -> tuple[Path, Recipe]:
    """The convnext fixtures copied to ``root``/ckpt and ``root``/data: a recipe of two tasks with their
    datasets, and a third fine-tune without a task (the comparison keys its row by its path)."""
    from hubmerge.fixtures import build_fixtures

    fx = build_fixtures(family="convnext")
    shutil.copytree(fx.base, root / "ckpt" / "base")
    for task in fx.tasks[:3]:
        shutil.copytree(fx.models[task], root / "ckpt" / task)
        shutil.copytree(fx.datasets[task], root / "data" / task)
    low, high, untasked = fx.tasks[:3]
    return root, Recipe.from_dict({
        "method": "task_arithmetic", "base_model": str(root / "ckpt" / "base"), "target_modules": ["convnext"],
        "models": [*({"model": str(root / "ckpt" / t), "task": t, "dataset": str(root / "data" / t)} for t in (low, high)),
                   {"model": str(root / "ckpt" / untasked)}],
    })


def _pushed_files(api: HfApi, repo_id: str, into: Path) -> dict[str, bytes]:
    pushed = Path(api.snapshot_download(repo_id, local_dir=into))
    return {p.relative_to(pushed).as_posix(): p.read_bytes() for p in pushed.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(pushed).parts and p.name != ".gitattributes"}


def test_a_push_of_local_folders_publishes_no_path_of_this_machine(api, local_hub, tmp_path):
    """The recipe, card and reports of an output merged from local folders named them by absolute paths: a
    push published the home folder, user name and layout of the machine that merged. The commit names each
    by its path below the folders' common parent; the output keeps its absolute paths for its later commands."""
    from hubmerge.evaluation import evaluate_model
    from hubmerge.publish import build
    from hubmerge.recipe import load_recipe

    work, recipe = _local_folders(tmp_path / "alice-home" / "merge-work-7f3")
    built = build(recipe, tmp_path / "out", device="cpu", max_samples=8)
    assert built.comparison is not None and str(work / "ckpt") in json.dumps(built.comparison.to_dict())
    kept = {name: (built.output / name).read_bytes() for name in ("hubmerge_recipe.yaml", "eval_scope.json",
                                                                   "hubmerge_heads.json", "eval_comparison.json")}
    secret = {part for part in work.parts if part not in ("/", "tmp")}  # every folder name above the inputs
    for repo_id, push in ((fresh_repo(), "output"), (fresh_repo(), "recipe")):
        if push == "output":
            publish_output(built.output, repo_id, token=local_hub.alice_token)
        else:  # built in a temporary folder, evaluated without comparison
            publish(recipe, repo_id, token=local_hub.alice_token, device="cpu", max_samples=8, compare_inputs=False)
        files = _pushed_files(api, repo_id, tmp_path / repo_id)
        assert {"README.md", "hubmerge_recipe.yaml", "eval_scope.json", "hubmerge_heads.json"} <= set(files)
        leaks = sorted(f"{name}: {part}" for name, data in files.items() for part in secret if part.encode() in data)
        assert not leaks
        text = files["hubmerge_recipe.yaml"].decode()
        assert text.startswith("# Some inputs were local folders, not on the Hub")
        pushed = Recipe.from_yaml(text)
        assert [str(ref) for ref in pushed.inputs] == ["./ckpt/base", *(f"./ckpt/{p.name}" for p in
                                                                           (m.model.path for m in recipe.models))]
        assert [m.dataset and m.dataset.path for m in pushed.models] == [
            f"./data/{recipe.models[0].task}", f"./data/{recipe.models[1].task}", None]
        card = files["README.md"].decode()
        assert "Some inputs were local folders, not on the Hub" in card and "base_model: ./ckpt/base" in card
        assert f"on ./data/{recipe.models[0].task}:test (8 of" in card
        scope = json.loads(files["eval_scope.json"])
        assert scope[recipe.models[0].task]["dataset"] == f"./data/{recipe.models[0].task}:test"
        heads = json.loads(files["hubmerge_heads.json"])["tasks"]
        assert heads[recipe.models[1].task]["model"] == f"./ckpt/{recipe.models[1].task}"
        if push == "output":
            assert f"./ckpt/{recipe.models[2].model.path.name}" in json.loads(files["eval_comparison.json"])["finetuned"]
            # the rest is the output's, byte for byte
            assert files["model.safetensors"] == (built.output / "model.safetensors").read_bytes()
        with pytest.raises(RecipeError, match=rf"'{repo_id}' was evaluated on local folders of the machine that "
                           rf"merged it \(\./data/.*--task {recipe.models[0].task}=DATASET"):
            evaluate_model(repo_id, token=local_hub.alice_token)  # not a folder of the working directory
    assert {name: (built.output / name).read_bytes() for name in kept} == kept  # the output keeps its own paths
    assert str(work / "ckpt" / "base") in kept["hubmerge_recipe.yaml"].decode()
    # beside the folders it names, the published recipe reads the same inputs
    (work / "hubmerge_recipe.yaml").write_bytes(files["hubmerge_recipe.yaml"])
    again = load_recipe(work / "hubmerge_recipe.yaml")
    assert again.inputs == load_recipe(built.output / "hubmerge_recipe.yaml").inputs
    assert again.datasets == load_recipe(built.output / "hubmerge_recipe.yaml").datasets
