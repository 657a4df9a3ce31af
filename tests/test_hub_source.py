"""Merging straight from Hub repos over HTTP Range requests, against the local Hub."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import httpx2
import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file

from hubmerge import engine
from hubmerge.errors import AuthenticationError, HubError, ModelFilesNotFoundError, RangeReadError, RepoNotFoundError
from hubmerge.hub.source import HubSource, hub_errors
from hubmerge.recipe import load_recipe
from hubmerge.weights import http as ranged
from hubmerge.weights.http import RetryPolicy, read_range_into

from ._models import make_family, upload_family, write_recipe


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(ranged, "DEFAULT_RETRY", RetryPolicy(max_retries=4, base_wait=0.01, max_wait=0.05, timeout=10))


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("family"), "convnext")


@pytest.fixture(scope="module")
def hub_family(family, local_hub):
    """The family uploaded to the local Hub as alice's repos; returns {local path name: repo id}."""
    return upload_family(family, local_hub.endpoint, local_hub.alice_token, prefix="")


def hub_recipe(tmp_path, family, repos, method="ties"):
    path = write_recipe(tmp_path / "local.yaml", family, method)
    text = path.read_text()
    for local in [family.base, *family.models.values()]:
        text = text.replace(str(local), repos[local.name])
    (tmp_path / "hub.yaml").write_text(text)
    return load_recipe(tmp_path / "hub.yaml"), load_recipe(path)


def tensors(directory):
    return load_file(directory / "model.safetensors")


def assert_same_output(a, b):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    for head in (a / "heads").iterdir():
        assert (b / "heads" / head.name / "model.safetensors").read_bytes() == (head / "model.safetensors").read_bytes()


def test_merge_from_the_hub_equals_the_local_merge_and_reads_only_what_it_needs(tmp_path, family, hub_family, local_hub):
    remote, local = hub_recipe(tmp_path, family, hub_family)
    engine.merge(local, tmp_path / "local")
    merge_plan = engine.plan(remote)
    pinned = {m.label: m.revision for m in merge_plan.inputs}
    assert all(len(sha) == 40 for sha in pinned.values())
    needed = merge_plan.bytes_to_read + sum(
        h.data_start for m in merge_plan.inputs for h in m.weights.headers.values()
    )
    local_hub.stats.reset()
    engine.execute(merge_plan, tmp_path / "remote")
    assert_same_output(tmp_path / "local", tmp_path / "remote")
    sent = sum(n for path, n in local_hub.stats.bytes_by_path.items() if path.endswith(".safetensors"))
    whole_files = sum(h.file_size for m in merge_plan.inputs for h in m.weights.headers.values())
    assert sent <= 1.05 * needed, (sent, needed)
    assert sent < whole_files
    recipe_text = (tmp_path / "remote" / "hubmerge_recipe.yaml").read_text()
    assert all(sha in recipe_text for sha in pinned.values())


def test_a_cache_snapshot_path_that_is_not_here_is_read_from_the_hub_at_its_commit(tmp_path, family, hub_family):
    """A recipe merged on another machine from `snapshot_download()` paths (the output's hubmerge_recipe.yaml
    keeps them) failed here on every missing folder; those paths name a Hub repo and commit."""
    _, local = hub_recipe(tmp_path, family, hub_family)
    text = (tmp_path / "local.yaml").read_text()
    commits = {}
    for folder in [family.base, *family.models.values()]:
        repo_id = hub_family[folder.name]
        commits[repo_id] = HfApi().model_info(repo_id).sha
        cache = f"/home/someone/.cache/huggingface/hub/models--{repo_id.replace('/', '--')}"
        text = text.replace(str(folder), f"{cache}/snapshots/{commits[repo_id]}")
    (tmp_path / "elsewhere.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "elsewhere.yaml")
    assert [(m.model.repo_id, m.model.revision) for m in recipe.models] == [
        (repo, commits[repo]) for repo in (hub_family[p.name] for p in family.models.values())]
    engine.merge(local, tmp_path / "local")
    engine.merge(recipe, tmp_path / "from-hub")
    assert_same_output(tmp_path / "local", tmp_path / "from-hub")


def test_dropped_connections_are_resumed(tmp_path, family, hub_family, hub_faults):
    remote, local = hub_recipe(tmp_path, family, hub_family, method="simple_average")
    engine.merge(local, tmp_path / "local")
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.cut_after, hub_faults.cut_times = 3000, 6
    engine.merge(remote, tmp_path / "remote")
    assert hub_faults.cut_times == 0  # every cut happened
    assert_same_output(tmp_path / "local", tmp_path / "remote")


def test_server_errors_and_rate_limits_are_retried(tmp_path, family, hub_family, hub_faults):
    remote, local = hub_recipe(tmp_path, family, hub_family, method="task_arithmetic")
    engine.merge(local, tmp_path / "local")
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.status, hub_faults.status_times, hub_faults.retry_after = 503, 3, "0"
    engine.merge(remote, tmp_path / "remote")
    hub_faults.status, hub_faults.status_times = 429, 2
    engine.merge(remote, tmp_path / "remote2")
    assert_same_output(tmp_path / "local", tmp_path / "remote")
    assert_same_output(tmp_path / "local", tmp_path / "remote2")


def test_a_persistent_failure_names_repo_and_file_and_writes_nothing(tmp_path, family, hub_family, hub_faults):
    remote, _ = hub_recipe(tmp_path, family, hub_family)
    merge_plan = engine.plan(remote)
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.status, hub_faults.status_times = 503, 1000
    with pytest.raises(RangeReadError) as info:
        engine.execute(merge_plan, tmp_path / "out")
    message = str(info.value)
    assert "alice/" in message and "model.safetensors" in message and "giving up" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("status", "error", "words"), [
    (403, AuthenticationError, "refused access"), (401, AuthenticationError, "refused access"),
    (404, HubError, "HTTP 404"),
])
def test_a_refused_file_read_is_the_hub_error_at_once_not_retried(hub_family, hub_faults, status, error, words):
    source = HubSource(hub_family["alpha"])
    hub_faults.path_pattern = r"\.safetensors$"
    hub_faults.status, hub_faults.status_times = status, 50
    with pytest.raises(error, match=words) as info:
        source.read_file("model.safetensors")
    assert "alpha" in str(info.value) and "(file 'model.safetensors')" in str(info.value)
    assert 50 - hub_faults.status_times == 2  # the direct request, then huggingface_hub's session's one


def test_merge_reads_from_the_endpoint_it_is_given(tmp_path, family, hub_family, local_hub, monkeypatch):
    """``hubmerge.merge(..., endpoint=)`` as ``plan`` takes it, whatever HF_ENDPOINT says."""
    from huggingface_hub import constants

    remote, local = hub_recipe(tmp_path, family, hub_family, method="simple_average")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the default points where nothing listens
    engine.merge(remote, tmp_path / "remote", endpoint=local_hub.endpoint)
    engine.merge(local, tmp_path / "local")
    assert_same_output(tmp_path / "remote", tmp_path / "local")


def test_private_repos_need_the_token(tmp_path, family, local_hub):
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo_id = f"alice/private-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id, private=True)
    api.upload_folder(folder_path=family.base, repo_id=repo_id)
    with pytest.raises(RepoNotFoundError, match="token"):
        HubSource(repo_id)
    source = HubSource(repo_id, token=local_hub.alice_token)
    assert source.revision == api.model_info(repo_id).sha
    assert source.read_file("config.json").startswith(b"{")
    assert local_hub.alice_token not in repr(source.__dict__.get("label"))


def test_unknown_repo_and_revision(local_hub, hub_family):
    with pytest.raises(RepoNotFoundError, match="alice/does-not-exist"):
        HubSource("alice/does-not-exist")
    repo_id = next(iter(hub_family.values()))
    with pytest.raises(RepoNotFoundError, match="revision"):
        HubSource(repo_id, revision="no-such-branch")


def test_revision_is_pinned_at_open(tmp_path, local_hub, hub_family):
    """A push during a merge cannot mix versions: every read goes to the sha resolved at open."""
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo_id = hub_family["alpha"]
    source = HubSource(repo_id)
    before = source.read_file("config.json")
    api.upload_file(path_or_fileobj=b'{"changed": true}', path_in_repo="config.json", repo_id=repo_id)
    assert source.read_file("config.json") == before
    assert HubSource(repo_id).read_file("config.json") == b'{"changed": true}'


def fresh_repo(local_hub, content: bytes, path: str = "blob.bin") -> tuple[HfApi, str]:
    """A repo of alice's own holding ``path``: a test that pushes to it disturbs no other test."""
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo_id = f"alice/blob-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=content, path_in_repo=path, repo_id=repo_id)
    return api, repo_id


def test_a_branch_name_is_pinned_to_its_commit_at_open(local_hub):
    api, repo_id = fresh_repo(local_hub, b"A" * 64)
    source = HubSource(repo_id, revision="main")
    assert re.fullmatch("[0-9a-f]{40}", source.revision) and source.revision == api.model_info(repo_id).sha
    assert source.label == f"{repo_id}@{source.revision[:12]}"
    # the same size, other bytes
    api.upload_file(path_or_fileobj=b"B" * 64, path_in_repo="blob.bin", repo_id=repo_id)
    assert source.read_range("blob.bin", 0, 64) == b"A" * 64
    assert HubSource(repo_id, revision="main").read_range("blob.bin", 0, 64) == b"B" * 64


def test_only_a_read_from_byte_0_is_kept_as_the_files_prefix(local_hub):
    data = bytes(range(256))
    _, repo_id = fresh_repo(local_hub, data)
    source = HubSource(repo_id)
    assert source.read_range("blob.bin", 10, 10) == data[10:20]
    assert source.read_range("blob.bin", 0, 30) == data[:30]  # not bytes 10.. served as the file's first ones
    local_hub.stats.reset()
    assert source.read_range("blob.bin", 5, 20) == data[5:25]  # inside the kept prefix: no request
    assert source.read_range("blob.bin", 20, 20) == data[20:40]  # its tail fetched
    assert sum(local_hub.stats.bytes_by_path.values()) == 10


def test_a_read_before_the_start_or_past_the_end_is_refused(local_hub):
    _, repo_id = fresh_repo(local_hub, bytes(range(64)))
    source = HubSource(repo_id)
    source.read_range("blob.bin", 0, 8)  # a kept prefix, which a negative offset would slice from its end
    for offset, length in ((-4, 8), (60, 5)):
        with pytest.raises(RangeReadError, match="blob.bin.*past the end"):
            source.read_range("blob.bin", offset, length)


def test_a_file_the_hub_lacks_is_a_missing_model_file_by_its_name():
    from huggingface_hub import errors as hf

    with pytest.raises(ModelFilesNotFoundError, match="org/m: file 'model.safetensors' was not found"):
        with hub_errors("org/m", path="model.safetensors"):
            raise hf.EntryNotFoundError("404 for model.safetensors")


def test_a_hub_that_names_no_commit_is_refused(monkeypatch):
    # every read goes to /resolve/<sha>/: without one, no read could be pinned
    monkeypatch.setattr(HfApi, "model_info", lambda self, *args, **kwargs: SimpleNamespace(sha=None, siblings=[]))
    with pytest.raises(HubError, match="did not say which commit 'org/m@main' points to"):
        HubSource("org/m", revision="main")


def test_offline_mode_is_a_clear_error(hub_offline):
    from hubmerge.vision.loading import resolve_model_dir

    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        HubSource("alice/anything")
    # A name that is neither a local directory nor in the cache (a snapshot download, as `evaluate` does).
    with pytest.raises(HubError, match="not in the local cache. If 'merged-typo' was meant as a local directory"):
        resolve_model_dir("merged-typo")


def test_an_unreachable_hub_is_named_by_its_address(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubError, match=r"cannot reach the Hub at http://127\.0\.0\.1:9 for 'alice/anything': "
                                       r"ConnectError"):
        HubSource("alice/anything", endpoint="http://127.0.0.1:9")  # the discard port: nothing listens


def test_an_unknown_name_says_it_is_no_local_directory_either(local_hub):
    from hubmerge.vision.loading import resolve_model_dir

    with pytest.raises(RepoNotFoundError, match="no local directory has it either"):
        resolve_model_dir("merged-typo")



def test_a_repo_with_its_model_one_folder_down_says_how_to_get_it(local_hub, family):
    """A recipe cannot name a Hub repo's subfolder: 'give those' (right for a local folder) is a download there."""
    from hubmerge.errors import ModelFilesNotFoundError
    from hubmerge.weights.index import open_weights

    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo_id = f"alice/nested-{uuid.uuid4().hex[:6]}"
    api.create_repo(repo_id)
    api.upload_folder(folder_path=family.models["alpha"], repo_id=repo_id, path_in_repo="weights")
    with HubSource(repo_id) as source, pytest.raises(ModelFilesNotFoundError) as info:
        open_weights(source)
    assert str(info.value).endswith(
        "It holds models one folder down (weights), which a recipe cannot name in a Hub repo: download one with "
        f"`hf download {repo_id} --include 'weights/*' --local-dir DIR` and give DIR/weights.")

def test_wrong_token_is_an_authentication_error(local_hub, hub_family):
    from huggingface_hub import errors as hf

    # The local Hub, like the real one, answers unknown tokens on repo reads with "not found"
    # for private repos; an explicit 401 from a Range read maps to AuthenticationError.
    with pytest.raises((AuthenticationError, RepoNotFoundError, hf.HfHubHTTPError)):
        HubSource("alice/none-such", token="hf_wrongTokenWrongToken000000000")


# ----------------------------------------------------------------------------- the ranged reader itself


def answer(status, body, **headers):
    """A streamed response, like a real transport gives."""
    return httpx2.Response(status, stream=httpx2.ByteStream(body), headers={"Content-Length": str(len(body)), **headers})


def with_transport(monkeypatch, handler):
    from huggingface_hub.utils import _http

    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    monkeypatch.setattr(_http, "get_session", lambda: client)
    monkeypatch.setattr("huggingface_hub.utils.get_session", lambda: client)


def test_a_200_answer_to_a_range_request_is_refused(monkeypatch):
    with_transport(monkeypatch, lambda request: answer(200, b"x" * 100))
    with pytest.raises(RangeReadError, match="ignored the Range header"):
        read_range_into("http://h/f", 10, memoryview(bytearray(5)), where="r@s:f")


def test_a_wrong_content_range_is_refused(monkeypatch):
    with_transport(monkeypatch, lambda r: answer(206, b"abcde", **{"Content-Range": "bytes 0-4/100"}))
    with pytest.raises(RangeReadError, match="Content-Range"):
        read_range_into("http://h/f", 10, memoryview(bytearray(5)), where="r@s:f")


def test_too_many_bytes_are_refused(monkeypatch):
    with_transport(monkeypatch, lambda r: answer(206, b"abcdefg", **{"Content-Range": "bytes 10-14/100"}))
    with pytest.raises(RangeReadError, match="more bytes"):
        read_range_into("http://h/f", 10, memoryview(bytearray(5)), where="r@s:f")


def test_short_bodies_resume_from_the_last_byte(monkeypatch):
    data = bytes(range(100))
    seen = []

    def handler(request):
        start, end = map(int, request.headers["range"].removeprefix("bytes=").split("-"))
        seen.append((start, end))
        body = data[start : min(end + 1, start + 7)]  # at most 7 bytes per answer
        return answer(206, body, **{"Content-Range": f"bytes {start}-{end}/100"})

    with_transport(monkeypatch, handler)
    out = bytearray(30)
    read_range_into("http://h/f", 50, memoryview(out), where="r@s:f",
                    policy=RetryPolicy(max_retries=10, base_wait=0, max_wait=0))
    assert bytes(out) == data[50:80]
    assert seen[0] == (50, 79) and seen[1] == (57, 79)  # resumed, nothing fetched twice
