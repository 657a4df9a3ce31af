"""The local Hub against the real, unmodified huggingface_hub client (and raw HTTP for edge cases)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    ModelCard,
    get_safetensors_metadata,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub import errors as hf
from safetensors.torch import save_file

from hubmerge.hub.localhub import LocalHub


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def alice(local_hub) -> HfApi:
    return HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)


@pytest.fixture
def bob(local_hub) -> HfApi:
    return HfApi(endpoint=local_hub.endpoint, token=local_hub.bob_token)


@pytest.fixture
def anonymous(local_hub) -> HfApi:
    return HfApi(endpoint=local_hub.endpoint, token=False)


def model_repo(api: HfApi, tmp_path: Path, *, sharded: bool = False, private: bool = False) -> str:
    repo_id = f"alice/{unique()}"
    api.create_repo(repo_id, private=private)
    folder = tmp_path / repo_id.split("/")[1]
    folder.mkdir()
    tensors = {"a.weight": torch.arange(12.0).reshape(3, 4), "b.bias": torch.ones(5), "c.step": torch.tensor(3)}
    if sharded:
        save_file({"a.weight": tensors["a.weight"]}, folder / "model-00001-of-00002.safetensors")
        save_file({k: tensors[k] for k in ("b.bias", "c.step")}, folder / "model-00002-of-00002.safetensors")
        weight_map = {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00002-of-00002.safetensors",
                      "c.step": "model-00002-of-00002.safetensors"}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "test"}))
    api.upload_folder(folder_path=folder, repo_id=repo_id)
    return repo_id


# ----------------------------------------------------------------------------- repos


def test_create_repo_kinds_and_exist_ok(alice):
    name = unique()
    url = alice.create_repo(f"alice/{name}")
    assert url.repo_id == f"alice/{name}"
    assert alice.create_repo(f"alice/{name}", exist_ok=True).repo_id == f"alice/{name}"
    with pytest.raises(hf.HfHubHTTPError):
        alice.create_repo(f"alice/{name}")
    assert alice.create_repo(f"alice/{name}", repo_type="dataset").repo_type == "dataset"
    assert alice.create_repo(f"alice/{name}", repo_type="space", space_sdk="gradio").repo_type == "space"
    assert alice.repo_exists(f"alice/{name}", repo_type="space")
    assert not alice.repo_exists(f"alice/{unique()}")


def test_delete_repo(alice):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    alice.delete_repo(repo_id)
    assert not alice.repo_exists(repo_id)
    alice.delete_repo(repo_id, missing_ok=True)
    with pytest.raises(hf.RepositoryNotFoundError):
        alice.delete_repo(repo_id)


def test_repo_info_siblings_and_listing(alice, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    info = alice.model_info(repo_id, files_metadata=True)
    assert len(info.sha) == 40
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert set(sizes) == {".gitattributes", "config.json", "model.safetensors"}
    assert sizes["model.safetensors"] == (tmp_path / repo_id.split("/")[1] / "model.safetensors").stat().st_size
    lfs = next(s for s in info.siblings if s.rfilename == "model.safetensors").lfs
    assert lfs is not None and len(lfs.sha256) == 64
    assert sorted(alice.list_repo_files(repo_id)) == sorted(sizes)
    paths = alice.get_paths_info(repo_id, ["config.json", "missing.txt", "model.safetensors"])
    assert [p.path for p in paths] == ["config.json", "model.safetensors"]


def test_tree_paging_and_folders(alice, monkeypatch):
    import hubmerge.hub.localhub.app as app_module

    monkeypatch.setattr(app_module, "_PAGE", 2)
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    alice.create_commit(repo_id, [CommitOperationAdd(f"d/f{i}.txt", b"x%d" % i) for i in range(5)] +
                        [CommitOperationAdd("top.txt", b"t")], commit_message="many")
    files = alice.list_repo_files(repo_id)
    assert sorted(files) == sorted([".gitattributes", "top.txt"] + [f"d/f{i}.txt" for i in range(5)])
    shallow = list(alice.list_repo_tree(repo_id))
    assert {e.path for e in shallow} == {".gitattributes", "top.txt", "d"}
    inside = list(alice.list_repo_tree(repo_id, path_in_repo="d"))
    assert len(inside) == 5
    # the next page's link named the decoded path, so on a branch with a "/" it read the branch as "feat"
    alice.create_branch(repo_id, branch="feat/x")
    assert sorted(alice.list_repo_files(repo_id, revision="feat/x")) == sorted(files)
    # a file's tree is a 404 EntryNotFound, on which the client looks the file up in its folder (was a 400)
    fs = HfFileSystem(endpoint=alice.endpoint, token=False)
    assert fs.ls(f"{repo_id}/d/f1.txt", detail=False) == [f"{repo_id}/d/f1.txt"]
    # a file and a folder of one name were both kept, and a download then dropped the file
    for clash in ("d", "top.txt/inner.txt"):
        with pytest.raises(hf.HfHubHTTPError, match="cannot be both a file and a folder") as info:
            alice.upload_file(path_or_fileobj=b"y", path_in_repo=clash, repo_id=repo_id)
        assert info.value.response.status_code == 400
    assert sorted(alice.list_repo_files(repo_id)) == sorted(files)


def test_list_models_hides_private_repos_from_all_but_their_owner(alice, bob, anonymous):
    name = unique("listed")
    alice.create_repo(f"alice/{name}-open")
    alice.create_repo(f"alice/{name}-hidden", private=True)
    seen = {api: sorted(m.id for m in api.list_models(author="alice", search=name)) for api in (alice, bob, anonymous)}
    assert seen[alice] == [f"alice/{name}-hidden", f"alice/{name}-open"]
    assert seen[bob] == seen[anonymous] == [f"alice/{name}-open"]
    assert next(m for m in alice.list_models(search=f"{name}-hidden")).private is True


# ----------------------------------------------------------------------------- downloads


def test_hf_hub_download_and_cache(alice, local_hub, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    before = dict(local_hub.stats.requests)
    path = hf_hub_download(repo_id, "config.json", token=local_hub.alice_token)
    assert json.loads(Path(path).read_text()) == {"model_type": "test"}
    again = hf_hub_download(repo_id, "config.json", token=local_hub.alice_token)
    assert again == path
    assert local_hub.stats.requests["resolve"] - before.get("resolve", 0) == 3  # HEAD+GET, then HEAD only
    with pytest.raises(hf.EntryNotFoundError):
        hf_hub_download(repo_id, "nope.json")


def test_snapshot_download_by_branch_and_by_sha(alice, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    sha = alice.model_info(repo_id).sha
    by_branch = snapshot_download(repo_id, cache_dir=tmp_path / "c1")
    by_sha = snapshot_download(repo_id, revision=sha, cache_dir=tmp_path / "c2")
    assert sorted(os.listdir(by_branch)) == sorted(os.listdir(by_sha)) == [".gitattributes", "config.json", "model.safetensors"]
    assert sha in by_sha


@pytest.mark.parametrize("sharded", [False, True])
def test_get_safetensors_metadata(alice, tmp_path, sharded):
    repo_id = model_repo(alice, tmp_path, sharded=sharded)
    metadata = get_safetensors_metadata(repo_id)
    assert metadata.sharded is sharded
    assert set(metadata.weight_map) == {"a.weight", "b.bias", "c.step"}
    assert metadata.parameter_count == {"F32": 17, "I64": 1}


def test_hffilesystem_range_read(alice, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    blob = (tmp_path / repo_id.split("/")[1] / "model.safetensors").read_bytes()
    fs = HfFileSystem(endpoint=alice.endpoint, token=False)
    with fs.open(f"{repo_id}/model.safetensors", "rb", block_size=16) as handle:
        handle.seek(30)
        assert handle.read(20) == blob[30:50]
        handle.seek(len(blob) - 7)
        assert handle.read(7) == blob[-7:]


def test_range_requests_with_raw_http(alice, local_hub, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    blob = (tmp_path / repo_id.split("/")[1] / "model.safetensors").read_bytes()
    url = f"{local_hub.endpoint}/{repo_id}/resolve/main/model.safetensors"
    size = len(blob)
    cases = {"bytes=10-19": (10, 19), "bytes=100-": (100, size - 1), "bytes=-8": (size - 8, size - 1),
             f"bytes=5-{size + 100}": (5, size - 1)}
    for header, (start, end) in cases.items():
        response = httpx.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == blob[start : end + 1]
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    response = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["Content-Range"] == f"bytes */{size}"
    full = httpx.get(url)
    assert full.status_code == 200 and full.content == blob
    head = httpx.head(url)
    assert head.headers["X-Repo-Commit"] == alice.model_info(repo_id).sha
    assert head.headers["Content-Length"] == str(size) and head.headers["ETag"]
    missing = httpx.head(f"{local_hub.endpoint}/{repo_id}/resolve/main/nope")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    alice.upload_file(path_or_fileobj=b"", path_in_repo="empty.txt", repo_id=repo_id)
    empty = httpx.get(f"{local_hub.endpoint}/{repo_id}/resolve/main/empty.txt", headers={"Range": "bytes=-5"})
    assert empty.status_code == 416 and empty.headers["Content-Range"] == "bytes */0"  # was "bytes 0--1/0"


def test_big_files_stream_from_disk(tmp_path):
    """A 2 GB (sparse) file is served by range without being loaded into memory."""
    from hubmerge.hub.localhub.storage import Operation, Store

    root = tmp_path / "hub"
    store = Store(root)
    store.create_repo("model", "alice/big", private=False)
    fake_sha = "f" * 64
    with open(store.blob_path(fake_sha), "wb") as handle:
        handle.truncate(2 * 2**30)
        handle.seek(2 * 2**30 - 4)
        handle.write(b"tail")
    store.apply_commit("model", "alice/big", "main", [Operation("add", "big.bin", fake_sha)], message="big")

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    with LocalHub(root) as hub:
        url = f"{hub.endpoint}/alice/big/resolve/main/big.bin"
        before = rss()
        response = httpx.get(url, headers={"Range": f"bytes={2 * 2**30 - 10}-"})
        assert response.status_code == 206 and response.content.endswith(b"tail")
        with httpx.stream("GET", url, headers={"Range": "bytes=0-"}) as stream:
            total = sum(len(chunk) for chunk in stream.iter_raw())
        assert total == 2 * 2**30
        assert rss() - before < 200 * 2**20


def test_a_suffix_range_longer_than_the_file_is_the_whole_file(alice, local_hub):
    """RFC 9110 §14.1.2: a suffix-length beyond the file names all of it (no negative start)."""
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    blob = os.urandom(50)
    alice.upload_file(path_or_fileobj=blob, path_in_repo="f.bin", repo_id=repo_id)
    url = f"{local_hub.endpoint}/{repo_id}/resolve/main/f.bin"
    for suffix in (50, 51, 1000):
        response = httpx.get(url, headers={"Range": f"bytes=-{suffix}"})
        assert response.status_code == 206, suffix
        assert response.headers["Content-Range"] == "bytes 0-49/50"
        assert response.content == blob


# ----------------------------------------------------------------------------- commits


def test_create_commit_regular_with_xet_enabled(alice):
    from huggingface_hub import constants

    assert not constants.HF_HUB_DISABLE_XET  # the default: hf-xet installed and enabled
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    big = os.urandom(3 * 2**20)
    info = alice.create_commit(repo_id, [CommitOperationAdd("w.safetensors", big), CommitOperationAdd("a.txt", b"a")],
                               commit_message="add")
    assert info.oid == alice.model_info(repo_id).sha
    assert Path(hf_hub_download(repo_id, "w.safetensors")).read_bytes() == big


LFS_SCRIPT = """
import os, sys
os.environ["HF_HUB_DISABLE_XET"] = "1"
from huggingface_hub import HfApi, CommitOperationAdd, hf_hub_download
api = HfApi(endpoint=sys.argv[1], token=sys.argv[2])
api.create_repo("alice/lfs-repo", exist_ok=True)
data = os.urandom(2 * 2**20)
api.create_commit("alice/lfs-repo", [CommitOperationAdd("weights.bin", data), CommitOperationAdd("small.txt", b"s")],
                  commit_message="lfs")
path = hf_hub_download("alice/lfs-repo", "weights.bin", token=sys.argv[2], cache_dir=sys.argv[3])
assert open(path, "rb").read() == data
print("LFS-OK")
"""


def test_create_commit_lfs_with_xet_disabled(tmp_path, local_hub):
    tokens = {local_hub.alice_token: "alice", local_hub.bob_token: "bob"}
    with LocalHub(tmp_path / "hub", tokens=tokens, lfs_threshold=1024) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "home")}
        env.pop("HF_HUB_OFFLINE", None)  # other tests' fixtures may have set it for this session
        result = subprocess.run([sys.executable, "-c", LFS_SCRIPT, hub.endpoint, local_hub.alice_token, str(tmp_path / "c")],
                                env=env, capture_output=True, text=True, timeout=120, check=False)
        assert "LFS-OK" in result.stdout, result.stderr[-3000:]
        assert hub.stats.requests.get("lfs_batch") == 1 and hub.stats.requests.get("lfs_upload") == 1
        # blobs are stored once for every repo: a commit naming the hash of another user's private file put
        # that file in the committer's own repo, and anyone could store blobs
        import hashlib

        secret = b"only alice has this"
        alice = HfApi(endpoint=hub.endpoint, token=local_hub.alice_token)
        alice.create_repo("alice/private", private=True)
        alice.upload_file(path_or_fileobj=secret, path_in_repo="secret.txt", repo_id="alice/private")
        oid = hashlib.sha256(secret).hexdigest()
        bob = HfApi(endpoint=hub.endpoint, token=local_hub.bob_token)
        bob.create_repo("bob/mine")
        lines = [{"key": "header", "value": {"summary": "take it"}},
                 {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": len(secret)}}]
        taken = httpx.post(f"{hub.endpoint}/api/models/bob/mine/commit/main", headers={
            "authorization": f"Bearer {local_hub.bob_token}", "content-type": "application/x-ndjson"},
            content="\n".join(json.dumps(line) for line in lines))
        assert taken.status_code == 422 and "was not uploaded to bob/mine" in taken.text
        batch = httpx.post(f"{hub.endpoint}/bob/mine.git/info/lfs/objects/batch", headers={
            "authorization": f"Bearer {local_hub.bob_token}"}, json={"operation": "upload", "objects": [
                {"oid": oid, "size": len(secret)}]}).json()
        assert "upload" in batch["objects"][0]["actions"]  # "already there" would have let the commit name it
        unsigned = httpx.put(f"{hub.endpoint}/lfs-upload/{hashlib.sha256(b'junk').hexdigest()}", content=b"junk")
        assert unsigned.status_code == 403
        assert "stolen.bin" not in bob.list_repo_files("bob/mine")


DATASETS_PUSH_SCRIPT = """
import sys
import datasets
rows = {"x": list(range(20)), "y": ["a", "b"] * 10}
datasets.Dataset.from_dict(rows).push_to_hub("alice/pushed", token=sys.argv[1])
back = datasets.load_dataset("alice/pushed", split="train")
assert back.to_dict() == rows, back.to_dict()
streamed = list(datasets.load_dataset("alice/pushed", split="train", streaming=True))
assert [r["x"] for r in streamed] == rows["x"]
print("PUSH-OK")
"""


def test_datasets_push_to_hub_with_lfs_answers(tmp_path, local_hub):
    """datasets deletes its temporary parquet once preupload has taken it, as huggingface.co answers "lfs" for
    .parquet; answered "regular", the commit then read a deleted file (FileNotFoundError). `hub serve --lfs`
    answers as the Hub does, and the client goes by LFS with Xet off."""
    from hubmerge.hub.localhub.storage import LFS_MIN_SIZE

    tokens = {local_hub.alice_token: "alice"}
    with LocalHub(tmp_path / "hub", tokens=tokens, lfs_threshold=LFS_MIN_SIZE) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "home"),
               "HF_HUB_DISABLE_XET": "1"}
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            env.pop(name, None)
        result = subprocess.run([sys.executable, "-c", DATASETS_PUSH_SCRIPT, local_hub.alice_token],
                                env=env, capture_output=True, text=True, timeout=120, check=False)
        assert "PUSH-OK" in result.stdout, result.stderr[-3000:]
        assert hub.stats.requests.get("lfs_upload") == 1  # the parquet shard; the card goes as a regular file
        files = HfApi(endpoint=hub.endpoint).list_repo_tree("alice/pushed", repo_type="dataset", recursive=True)
        parquet = [f for f in files if f.path.endswith(".parquet")]
        assert len(parquet) == 1 and parquet[0].lfs is not None


def test_deletes_and_stale_parent(alice, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    old = alice.model_info(repo_id).sha
    alice.create_commit(repo_id, [CommitOperationAdd("x/1.txt", b"1"), CommitOperationAdd("x/2.txt", b"2")],
                        commit_message="add")
    alice.create_commit(repo_id, [CommitOperationDelete("config.json"), CommitOperationDelete("x/")],
                        commit_message="delete")
    assert sorted(alice.list_repo_files(repo_id)) == [".gitattributes", "model.safetensors"]
    with pytest.raises(hf.HfHubHTTPError) as info:
        alice.create_commit(repo_id, [CommitOperationAdd("y.txt", b"y")], commit_message="late", parent_commit=old)
    assert info.value.response.status_code in (409, 412)
    assert "y.txt" not in alice.list_repo_files(repo_id)


def test_a_commit_that_fails_midway_changes_nothing(alice, local_hub, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    before = alice.model_info(repo_id)
    lines = [
        {"key": "header", "value": {"summary": "half", "description": ""}},
        {"key": "file", "value": {"content": "aGVsbG8=", "path": "new.txt", "encoding": "base64"}},
        {"key": "deletedFile", "value": {"path": "config.json"}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 3}},
    ]
    response = httpx.post(f"{local_hub.endpoint}/api/models/{repo_id}/commit/main",
                          content="\n".join(json.dumps(line) for line in lines),
                          headers={"authorization": f"Bearer {local_hub.alice_token}", "content-type": "application/x-ndjson"})
    assert 400 <= response.status_code < 500
    after = alice.model_info(repo_id)
    assert after.sha == before.sha
    assert sorted(s.rfilename for s in after.siblings) == sorted(s.rfilename for s in before.siblings)


def test_a_refused_commit_stores_no_blob(alice, local_hub, tmp_path):
    """Files sent in a commit become blobs only when it lands: each refused try (a stale parent, a file to
    delete that is not there, a file that is also a folder) stored its files for good, so retries filled the
    disk."""
    repo_id = f"alice/{unique()}"
    head = alice.create_commit(alice.create_repo(repo_id).repo_id, [CommitOperationAdd("a.txt", b"a")],
                               commit_message="a").oid
    alice.create_commit(repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="b")
    sent = [os.urandom(16) for _ in range(4)]
    refused = [
        dict(operations=[CommitOperationAdd("c.txt", sent[0])], parent_commit=head),
        dict(operations=[CommitOperationAdd("c.txt", sent[1]), CommitOperationDelete("nope.txt")]),
        dict(operations=[CommitOperationAdd("c", sent[2]), CommitOperationAdd("c/d.txt", sent[3])]),
    ]
    for commit in refused:
        with pytest.raises(hf.HfHubHTTPError):
            alice.create_commit(repo_id, commit_message="refused", **commit)
    blobs = local_hub.root / "blobs"
    assert not [data for data in sent if (blobs / hashlib.sha256(data).hexdigest()).exists()]
    alice.create_commit(repo_id, [CommitOperationAdd("c.txt", sent[0])], commit_message="c")
    assert (blobs / hashlib.sha256(sent[0]).hexdigest()).read_bytes() == sent[0]
    assert Path(alice.hf_hub_download(repo_id, "c.txt", cache_dir=tmp_path)).read_bytes() == sent[0]


def test_concurrent_commits_all_land(alice):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    errors: list[BaseException] = []

    def commit(i: int) -> None:
        try:
            alice.create_commit(repo_id, [CommitOperationAdd(f"f{i}.txt", b"%d" % i)], commit_message=f"c{i}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(alice.list_repo_files(repo_id)) == sorted([".gitattributes"] + [f"f{i}.txt" for i in range(8)])
    assert len(alice.list_repo_commits(repo_id)) == 9


def test_an_lfs_upload_whose_bytes_do_not_match_its_oid_is_refused(alice, local_hub):
    import hashlib

    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    data, wrong = os.urandom(64), os.urandom(64)
    oid = hashlib.sha256(data).hexdigest()
    auth = {"authorization": f"Bearer {local_hub.alice_token}"}
    batch = httpx.post(f"{local_hub.endpoint}/{repo_id}.git/info/lfs/objects/batch", headers=auth,
                       json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).json()
    actions = batch["objects"][0]["actions"]
    refused = httpx.put(actions["upload"]["href"], content=wrong)
    assert refused.status_code == 400 and "expected " + oid in refused.text
    blobs = local_hub.root / "blobs"
    assert not (blobs / oid).exists() and not (blobs / hashlib.sha256(wrong).hexdigest()).exists()
    assert httpx.post(actions["verify"]["href"], headers=auth, json={"oid": oid, "size": 64}).status_code == 404
    lines = [{"key": "header", "value": {"summary": "lfs"}},
             {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}]
    commit = httpx.post(f"{local_hub.endpoint}/api/models/{repo_id}/commit/main", content="\n".join(map(json.dumps, lines)),
                        headers={**auth, "content-type": "application/x-ndjson"})
    assert commit.status_code == 422 and "w.bin" not in alice.list_repo_files(repo_id)
    assert httpx.put(actions["upload"]["href"], content=data).status_code == 200  # the right bytes are taken
    assert (blobs / oid).read_bytes() == data


def test_a_commit_to_a_tag_or_a_sha_is_refused(alice, local_hub):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    head = alice.model_info(repo_id).sha
    alice.create_tag(repo_id, tag="v1")
    commits = local_hub.root / "repos" / "model" / repo_id / "commits"
    written = sorted(commits.iterdir())
    for revision in ("v1", head):
        with pytest.raises(hf.HfHubHTTPError, match="not a branch") as refused:
            alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision=revision)
        assert refused.value.response.status_code == 400
    refs = alice.list_repo_refs(repo_id)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", head)]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", head)]
    assert sorted(commits.iterdir()) == written  # refused before a commit was written


# ----------------------------------------------------------------------------- branches, PRs, auth


def test_branches(alice, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    alice.create_branch(repo_id, branch="feat/x")
    with pytest.raises(hf.HfHubHTTPError):
        alice.create_branch(repo_id, branch="feat/x")
    alice.create_branch(repo_id, branch="feat/x", exist_ok=True)
    alice.upload_file(path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id=repo_id, revision="feat/x")
    refs = alice.list_repo_refs(repo_id)
    heads = {b.name: b.target_commit for b in refs.branches}
    assert set(heads) == {"main", "feat/x"} and heads["main"] != heads["feat/x"]
    assert "dev.txt" not in alice.list_repo_files(repo_id)
    assert Path(hf_hub_download(repo_id, "dev.txt", revision="feat/x")).read_bytes() == b"dev"
    assert Path(hf_hub_download(repo_id, "dev.txt", revision=heads["feat/x"])).read_bytes() == b"dev"
    with pytest.raises(hf.RevisionNotFoundError):
        hf_hub_download(repo_id, "dev.txt", revision="nope")
    alice.create_tag(repo_id, tag="v1", revision="feat/x")  # a published merge can be tagged (was a 501)
    assert Path(hf_hub_download(repo_id, "dev.txt", revision="v1")).read_bytes() == b"dev"
    with pytest.raises(hf.HfHubHTTPError) as taken:
        alice.create_tag(repo_id, tag="v1")
    assert taken.value.response.status_code == 409
    alice.delete_branch(repo_id, branch="feat/x")
    assert [b.name for b in alice.list_repo_refs(repo_id).branches] == ["main"]
    alice.delete_tag(repo_id, tag="v1")
    assert alice.list_repo_refs(repo_id).tags == []
    for name in ("bad name", "a..b", "-x", "feat/", "refs/pr/7", "x~1"):  # git refuses them, and so does the Hub
        with pytest.raises(hf.HfHubHTTPError, match="Invalid reference name") as refused:
            alice.create_branch(repo_id, branch=name)
        assert refused.value.response.status_code == 400


def test_the_main_branch_cannot_be_deleted(alice):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    head = alice.model_info(repo_id).sha
    with pytest.raises(hf.HfHubHTTPError) as refused:
        alice.delete_branch(repo_id, branch="main")
    assert refused.value.response.status_code == 403
    assert [(b.name, b.target_commit) for b in alice.list_repo_refs(repo_id).branches] == [("main", head)]
    assert alice.model_info(repo_id).sha == head


def test_an_unknown_sha_is_a_revision_not_found(alice, tmp_path):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    unknown = "0" * 40
    with pytest.raises(hf.RevisionNotFoundError):
        alice.model_info(repo_id, revision=unknown)
    assert not alice.revision_exists(repo_id, unknown) and alice.repo_exists(repo_id)
    with pytest.raises(hf.RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision=unknown, cache_dir=tmp_path / "c")


def test_create_pr(alice, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    info = alice.create_commit(repo_id, [CommitOperationAdd("pr.txt", b"p")], commit_message="pr", create_pr=True)
    assert info.pr_url.endswith("/discussions/1") and info.pr_revision == "refs/pr/1"
    assert "pr.txt" not in alice.list_repo_files(repo_id)
    assert "pr.txt" in alice.list_repo_files(repo_id, revision="refs/pr/1")


def test_private_repos(alice, bob, anonymous, tmp_path):
    repo_id = model_repo(alice, tmp_path, private=True)
    assert alice.model_info(repo_id).private
    for other in (bob, anonymous):
        with pytest.raises(hf.RepositoryNotFoundError):
            other.model_info(repo_id)
        assert not other.repo_exists(repo_id)
    with pytest.raises(hf.RepositoryNotFoundError):
        hf_hub_download(repo_id, "config.json", token=False, cache_dir=tmp_path / "c")
    # huggingface_hub sends {"visibility": ...}: the server read only "private", answered 200 and changed nothing
    alice.update_repo_settings(repo_id, visibility="public")
    assert alice.model_info(repo_id).private is False and anonymous.repo_exists(repo_id)
    alice.update_repo_settings(repo_id, private=True)
    assert alice.model_info(repo_id).private is True and not anonymous.repo_exists(repo_id)
    # a call the server does not answer read as a missing file: "404 ... no route for POST .../repos/move"
    for unsupported in (lambda: alice.move_repo(repo_id, f"alice/{unique()}"),
                        lambda: list(alice.get_repo_discussions(repo_id))):
        with pytest.raises(hf.HfHubHTTPError, match="is not supported by hubmerge's local Hub") as info:
            unsupported()
        assert info.value.response.status_code == 501


def test_write_permissions_and_bad_tokens(alice, bob, local_hub):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    with pytest.raises(hf.HfHubHTTPError) as denied:
        bob.create_commit(repo_id, [CommitOperationAdd("x", b"x")], commit_message="nope")
    assert denied.value.response.status_code == 403
    alice.create_repo(f"demo-org/{unique()}")  # alice belongs to demo-org
    bad = HfApi(endpoint=local_hub.endpoint, token="hf_definitelyNotAValidToken123456")
    with pytest.raises(hf.HfHubHTTPError) as who:
        bad.whoami()
    assert who.value.response.status_code == 401
    # as on huggingface.co, a token it does not know is refused even where no token is needed (it was read
    # as no token, so a tool could not tell its user that the token is wrong)
    with pytest.raises(hf.HfHubHTTPError, match="Invalid credentials in Authorization header") as read:
        bad.model_info(repo_id)
    assert read.value.response.status_code == 401
    with pytest.raises(hf.HfHubHTTPError) as write:
        bad.create_commit(repo_id, [CommitOperationAdd("x", b"x")], commit_message="nope")
    assert write.value.response.status_code == 401
    assert local_hub.alice_token not in str(write.value)


def test_model_card_round_trip(alice, local_hub):
    repo_id = f"alice/{unique()}"
    alice.create_repo(repo_id)
    card = ModelCard("---\nlicense: mit\ntags: [hubmerge]\n---\n# Hello\n")
    card.push_to_hub(repo_id, token=local_hub.alice_token)
    loaded = ModelCard.load(repo_id, token=local_hub.alice_token)
    assert loaded.data.license == "mit" and "# Hello" in loaded.text
    info = alice.model_info(repo_id)  # huggingface.co serves the front matter: tools read base_model there
    assert info.card_data is not None and info.card_data.license == "mit" and info.tags == ["hubmerge"]
    # aliases of aliases: 400 bytes that every model_info and listing wrote out as 70 MB of JSON
    laughs = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    alice.upload_file(path_or_fileobj=f"---\n{laughs}---\n# Hello\n".encode(), path_in_repo="README.md",
                      repo_id=repo_id)
    assert alice.model_info(repo_id).card_data is None


def test_a_repos_url_opens_its_page(alice, local_hub, tmp_path):
    """The URL push and the demo print, and a card's links, were a 404 on the local Hub: they open a page
    with the repo's card (its raw HTML escaped) and every file, at a branch too."""
    repo_id = model_repo(alice, tmp_path, private=True)
    card = "---\nlicense: mit\n---\n# Merged\n\n| task | acc |\n|---|---|\n| a | 93.6 |\n\n<script>alert(1)</script>\n"
    alice.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    alice.create_branch(repo_id, branch="dev")
    headers = {"authorization": f"Bearer {local_hub.alice_token}"}
    for url in (f"{local_hub.endpoint}/{repo_id}", f"{local_hub.endpoint}/{repo_id}/tree/dev"):
        page = httpx.get(url, headers=headers)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<h1>Merged</h1>" in page.text and "<td>93.6</td>" in page.text and "license: mit" not in page.text
        assert "<script>" not in page.text and "&lt;script&gt;" in page.text
        assert f'href="/{repo_id}/resolve/' in page.text and "model.safetensors" in page.text
    assert httpx.get(f"{local_hub.endpoint}/{repo_id}").status_code == 404  # private, and no token
    assert httpx.get(f"{local_hub.endpoint}/{repo_id}/tree/nope", headers=headers).status_code == 404


# ----------------------------------------------------------------------------- persistence, stats, faults


def test_one_server_per_root_and_a_root_that_cannot_be_served(tmp_path, capsys):
    """Two servers on one root each kept their own refs (7 of 60 concurrent commits were lost); a tokens.json
    edited into something else, or a file named `repos`, was an "unexpected error" from `hub serve`."""
    from hubmerge.cli import main
    from hubmerge.errors import LocalHubRootError

    root = tmp_path / "hub"
    with LocalHub(root):
        with pytest.raises(LocalHubRootError, match="another local Hub serves it"):
            LocalHub(root)
        assert main(["hub", "serve", "--root", str(root), "--port", "0"]) == 1
        assert "LocalHubRootError" in capsys.readouterr().err
    with LocalHub(root):  # the first one stopped: the root is free again
        pass
    for text, why in (("not json", "tokens.json cannot be read"),
                      ('["a"]', "tokens.json must map each write token to its user")):
        (root / "tokens.json").write_text(text)
        assert main(["hub", "serve", "--root", str(root), "--port", "0"]) == 1
        err = "".join(capsys.readouterr().err.split())  # a long path wraps anywhere
        assert err.startswith("".join(f"error: LocalHubRootError: local Hub root '{root}': {why}".split())), err
    (tmp_path / "filed").mkdir()
    (tmp_path / "filed" / "repos").write_text("x")
    with pytest.raises(LocalHubRootError, match="'repos' in it is a file"):
        LocalHub(tmp_path / "filed")


def test_reads_while_a_repo_is_deleted_find_no_repo(tmp_path):
    """Reads take no lock: one that reached a repo as delete_repo removed it hit FileNotFoundError, a 500 the
    client retried for 23 s, and a listing that met it failed as a whole."""
    from hubmerge.hub.localhub.storage import NotFound, Store

    store = Store(tmp_path)
    store.create_repo("model", "alice/gone", private=False)
    store.create_repo("model", "alice/kept", private=False)
    sha = store.resolve("model", "alice/gone", "main")
    directory = tmp_path / "repos" / "model" / "alice" / "gone"
    for name in ("refs.json", f"commits/{sha}.json"):  # what a read finds midway through the delete
        (directory / name).unlink()
    for read in (lambda: store.refs("model", "alice/gone"), lambda: store.commit("model", "alice/gone", sha)):
        with pytest.raises(NotFound, match="Repository alice/gone not found"):
            read()
    directory.rename(directory.with_name(".deleted-gone-1"))  # delete_repo's trash, before it is removed
    assert [r.repo_id for r in store.list_repos("model")] == ["alice/kept"]


def test_restart_keeps_everything(tmp_path, local_hub):
    root = tmp_path / "hub"
    tokens = {local_hub.alice_token: "alice"}
    with LocalHub(root, tokens=tokens) as first:
        api = HfApi(endpoint=first.endpoint, token=local_hub.alice_token)
        api.create_repo("alice/persist")
        sha = api.create_commit("alice/persist", [CommitOperationAdd("k.txt", b"kept")], commit_message="k").oid
    with LocalHub(root) as second:  # tokens come back from root/tokens.json
        api = HfApi(endpoint=second.endpoint, token=local_hub.alice_token)
        assert api.model_info("alice/persist").sha == sha
        assert httpx.get(f"{second.endpoint}/alice/persist/resolve/main/k.txt").content == b"kept"
        api.create_commit("alice/persist", [CommitOperationAdd("k2.txt", b"x")], commit_message="still writable")


def test_byte_counter_and_cut_connection(alice, local_hub, hub_faults, tmp_path):
    repo_id = model_repo(alice, tmp_path)
    url = f"{local_hub.endpoint}/{repo_id}/resolve/main/model.safetensors"
    local_hub.stats.reset()
    httpx.get(url, headers={"Range": "bytes=0-99"})
    assert local_hub.stats.bytes_sent == 100
    assert local_hub.stats.bytes_by_path[f"{repo_id}/model.safetensors"] == 100
    hub_faults.cut_after, hub_faults.cut_times = 10, 1
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url, headers={"Range": "bytes=0-99"})
    assert httpx.get(url, headers={"Range": "bytes=0-99"}).status_code == 206  # only one cut was asked for
    hub_faults.status, hub_faults.status_times = 429, 1
    assert httpx.get(url).status_code == 429
    assert httpx.get(url).status_code == 200


def test_cleared_faults_match_file_downloads_again(local_hub):
    """clear() kept a test's ``path_pattern``: a later test's cut of a download matched nothing (it
    passed only in files run after the one that set ``/commit/``)."""
    faults = local_hub.faults
    faults.path_pattern, faults.cut_after, faults.cut_times = r"/commit/", 10, 1
    faults.clear()
    faults.cut_after, faults.cut_times = 10, 1
    try:
        assert faults.take_cut("/alice/m/resolve/main/model.safetensors") == 10
    finally:
        faults.clear()


def test_a_request_whose_client_left_is_still_handled_and_waited_for(local_hub, hub_faults):
    """A client killed while the server handles its request (a push's commit, sent whole) does not stop it: the
    commit lands later. ``stats.wait_idle`` lets a test read the repo once it has, not before."""
    hub_faults.path_pattern, hub_faults.delay, hub_faults.delay_times = r"/api/whoami-v2", 1.5, 1
    with pytest.raises(httpx.TimeoutException):  # the client gives up, as a killed one would
        httpx.get(f"{local_hub.endpoint}/api/whoami-v2", timeout=0.3,
                  headers={"authorization": f"Bearer {local_hub.alice_token}"})
    assert local_hub.stats.in_flight == 1 and not local_hub.stats.wait_idle(0.1)
    assert local_hub.stats.wait_idle(30) and local_hub.stats.in_flight == 0
