"""The streaming shard writer and atomic output directories."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hubmerge.errors import OutputExistsError, OutputHoldsInputError, PlanError, RecipeError
from hubmerge.weights import LocalSource, ShardedWriter, atomic_output_dir, open_weights
from hubmerge.weights.writer import OutputTensor, check_output, clean_stale, parse_size, shard_layout


def sample():
    return {
        "a": torch.randn(4, 5),
        "b": torch.arange(3, dtype=torch.int64),
        "c": torch.randn(7).to(torch.bfloat16),
        "d": torch.tensor(True),
        "e": torch.zeros(0, 2),
    }


def specs(tensors):
    from hubmerge.weights.dtypes import dtype_code

    return [OutputTensor(k, dtype_code(v.dtype), tuple(v.shape)) for k, v in tensors.items()]


def write_all(directory, tensors, max_shard_size):
    writer = ShardedWriter(directory, specs(tensors), max_shard_size=max_shard_size)
    for name, value in tensors.items():
        writer.write(name, value)
    return writer.close()


def test_a_strided_tensor_is_written_as_its_values(tmp_path):
    strided = torch.arange(8, dtype=torch.float32)[::2]  # 1-D and not contiguous: reshape(-1) keeps it so
    writer = ShardedWriter(tmp_path, [OutputTensor("s", "F32", (4,))], max_shard_size=100)
    writer.write("s", strided)
    writer.close()
    assert torch.equal(load_file(tmp_path / "model.safetensors")["s"], torch.tensor([0.0, 2.0, 4.0, 6.0]))


def test_single_file_round_trips_through_safetensors(tmp_path):
    t = sample()
    assert write_all(tmp_path, t, 10**9) == ["model.safetensors"]
    loaded = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in t.items())
    header = open_weights(LocalSource(tmp_path)).headers["model.safetensors"]
    assert header.metadata == {"format": "pt"}
    assert header.data_start % 8 == 0


def test_shards_and_index(tmp_path):
    t = {f"t{i}": torch.full((10,), float(i)) for i in range(5)}  # 40 bytes each
    files = write_all(tmp_path, t, 100)
    assert files[-1] == "model.safetensors.index.json"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 200
    assert sorted(set(index["weight_map"].values())) == files[:-1] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    weights = open_weights(LocalSource(tmp_path))
    assert set(weights.tensors) == set(t)


def test_shard_layout_gives_big_tensors_their_own_shard():
    tensors = [OutputTensor("s", "F32", (2,)), OutputTensor("big", "F32", (100,)), OutputTensor("t", "F32", (2,))]
    assert [[t.name for t in s] for s in shard_layout(tensors, 50)] == [["s"], ["big"], ["t"]]
    # a shard may be exactly the limit: "at most --max-shard-size", not below it
    exact = [OutputTensor("a", "F32", (10,)), OutputTensor("b", "F32", (15,))]  # 40 + 60 bytes
    assert [[t.name for t in s] for s in shard_layout(exact, 100)] == [["a", "b"]]
    # a first tensor over the limit gets its shard too, with no empty shard before it
    first_big = [OutputTensor("big", "F32", (100,)), OutputTensor("s", "F32", (2,))]
    assert [[t.name for t in s] for s in shard_layout(first_big, 50)] == [["big"], ["s"]]


def test_writer_enforces_the_plan(tmp_path):
    writer = ShardedWriter(tmp_path, [OutputTensor("a", "F32", (2,)), OutputTensor("b", "F32", (2,))], max_shard_size=100)
    with pytest.raises(PlanError, match="expected tensor 'a'"):
        writer.write("b", torch.zeros(2))
    with pytest.raises(PlanError, match="planned F32"):
        writer.write("a", torch.zeros(3))
    with pytest.raises(PlanError, match="planned F32"):
        writer.write("a", torch.zeros(2, dtype=torch.float16))
    writer.write("a", torch.zeros(2))
    with pytest.raises(PlanError, match="never written"):
        writer.close()
    writer.abort()


@pytest.mark.parametrize("text, value", [("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 2**30), ("123", 123), (7, 7)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", 0, -5, "nan", "infGB", "0.1B", True, "GB"])
def test_parse_size_rejects(text):
    with pytest.raises(RecipeError, match="size"):
        parse_size(text)


def test_atomic_dir_appears_only_when_complete(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as tmp:
        (tmp / "f").write_text("x")
        assert not target.exists()
    assert (target / "f").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_leaves_existing_output_untouched(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("keep me")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target, overwrite=True) as tmp:
            (tmp / "new").write_text("partial")
            raise RuntimeError("midway")
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_existing_output_needs_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        with atomic_output_dir(target):
            pass
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("fresh")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the replaced output is gone, not kept aside


def test_an_output_made_meanwhile_is_not_replaced_without_overwrite(tmp_path):
    """Two merges to one new output: the second replaced the first without --overwrite, both said done."""
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(OutputExistsError, match="already exists and is not empty"), atomic_output_dir(target) as tmp:
        (tmp / "mine").write_text("second")
        target.mkdir()  # the first merge finishes meanwhile
        (target / "theirs").write_text("first")
    assert [p.name for p in target.parent.iterdir()] == ["out"] and (target / "theirs").read_text() == "first"
    # a merge that fails takes the folders it made with it
    with pytest.raises(RuntimeError), atomic_output_dir(tmp_path / "made" / "for" / "it" / "out"):
        raise RuntimeError("midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_a_disk_that_refuses_the_output_is_said_in_words(tmp_path, monkeypatch):
    """A disk filling up mid-write was a bare "No space left on device"; a read-only folder named the
    temporary folder ".out.hubmerge-tmp-..." the user never chose."""
    import errno
    import os

    from hubmerge.errors import OutputNotWritableError

    with pytest.raises(OutputNotWritableError, match=r"output '.*out' could not be written: its disk filled up "
                       r"while it was written; nothing partial was left. Free some space"), \
            atomic_output_dir(tmp_path / "out"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(type(tmp_path), "mkdir", lambda self, *a, **k: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, "Permission denied", str(self))))
    with pytest.raises(OutputNotWritableError, match=r"its folder '.*locked' cannot be made or written "
                       r"\(permission denied\)") as refused, atomic_output_dir(tmp_path / "locked" / "out"):
        pass
    assert "hubmerge-tmp" not in str(refused.value)


def test_an_output_that_links_to_an_input_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "out").symlink_to(tmp_path / "model")
    with pytest.raises(OutputHoldsInputError, match="the input model"):
        check_output(tmp_path / "out", overwrite=True, keep={tmp_path / "model": "the input model"})


def test_empty_existing_directory_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "out" / "f").exists()


def test_leftovers_of_killed_runs_are_cleaned(tmp_path):
    dead_pid = 2**22 + 12345  # above pid_max on Linux: never alive
    stale = tmp_path / f".out.hubmerge-tmp-{dead_pid}-abcd"
    stale.mkdir()
    (stale / "partial").write_text("x")
    moved_aside = tmp_path / f".out.hubmerge-old-{dead_pid}-abcd"
    moved_aside.mkdir()
    (moved_aside / "previous").write_text("the old output")
    clean_stale(tmp_path / "out")
    assert not stale.exists()
    assert (tmp_path / "out" / "previous").read_text() == "the old output"
    # a merge still running (this process: the web app runs merges side by side) keeps its folders
    import os

    running = tmp_path / f".other.hubmerge-tmp-{os.getpid()}-beef"
    running.mkdir()
    (running / "half-written").write_text("x")
    clean_stale(tmp_path / "other")
    assert (running / "half-written").exists()


def test_an_output_left_aside_by_a_run_killed_after_its_rename_is_removed(tmp_path):
    # killed between renaming its new output into place and removing the old one: the new one stays
    dead_pid = 2**22 + 12345  # above pid_max on Linux: never alive
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "current").write_text("the new output")
    moved_aside = tmp_path / f".out.hubmerge-old-{dead_pid}-abcd"
    moved_aside.mkdir()
    (moved_aside / "previous").write_text("the old output")
    clean_stale(tmp_path / "out")
    assert not moved_aside.exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["current"]


def test_leftovers_of_another_users_running_merge_are_kept(tmp_path, monkeypatch):
    """A shared folder: a merge of another user is alive, but signalling it is refused (EPERM); its
    temporary output must not be taken for a killed run's and deleted under it."""
    import os

    other_pid = 2**22 + 54321
    running = tmp_path / f".out.hubmerge-tmp-{other_pid}-cafe"
    running.mkdir()
    (running / "half-written").write_text("x")

    def kill(pid, signal):
        if pid == other_pid:
            raise PermissionError(1, "Operation not permitted")
        return os.kill(pid, signal)

    monkeypatch.setattr("hubmerge.weights.writer.os.kill", kill)
    clean_stale(tmp_path / "out")
    assert (running / "half-written").exists()


def test_a_failed_final_rename_leaves_the_previous_output(tmp_path, monkeypatch):
    """With --overwrite the old output is moved aside before the new one takes its name: if that last
    rename fails, the old one must come back, not be lost with the new."""
    from pathlib import Path

    target = tmp_path / "out"
    target.mkdir()
    (target / "previous").write_text("the old output")
    rename = Path.rename

    def failing(self, destination):
        if Path(destination) == target and "hubmerge-tmp" in self.name:
            raise OSError(5, "Input/output error")
        return rename(self, destination)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="Input/output error"), atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("the new output")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["previous"]


def test_a_file_written_atomically_leaves_no_temporary_file_when_it_cannot_replace(tmp_path):
    """The replace fails (a folder of that name): the error reaches the caller, no ``.name.*.tmp`` stays."""
    from hubmerge.atomic_file import write_atomically

    assert write_atomically(tmp_path / "card.md", "text").read_text() == "text"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "inside").write_text("x")
    with pytest.raises(OSError):
        write_atomically(tmp_path / "busy", b"bytes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "card.md"]


def test_an_overwrite_whose_output_another_merge_moved_aside_meanwhile_takes_its_place(tmp_path, monkeypatch):
    """Two --overwrite merges to one place finishing at once: the other one moved the old output aside
    between this one's check and its own move; that move raised a bare FileNotFoundError, the merge lost."""
    from pathlib import Path

    target = tmp_path / "out"
    target.mkdir()
    (target / "previous").write_text("the old output")
    rename, other = Path.rename, tmp_path / "moved-by-the-other-merge"

    def other_merge_first(self, destination):
        if self == target and "hubmerge-old" in Path(destination).name and not other.exists():
            rename(target, other)  # the other merge's own move aside, a moment earlier
        return rename(self, destination)

    monkeypatch.setattr(Path, "rename", other_merge_first)
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("this merge")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved-by-the-other-merge", "out"]


def test_an_overwrite_replaces_an_output_another_merge_put_there_meanwhile(tmp_path, monkeypatch):
    """Between this merge's move aside and its rename, another --overwrite merge put its output there: this
    one, finishing later, replaces it as --overwrite says (it said 'pass --overwrite' before), and leaves no
    folder aside."""
    from pathlib import Path

    target = tmp_path / "out"
    target.mkdir()
    (target / "previous").write_text("the old output")
    rename, done = Path.rename, []

    def other_merge_between(self, destination):
        if Path(destination) == target and "hubmerge-tmp" in self.name and not done:
            done.append(True)
            target.mkdir()
            (target / "theirs").write_text("the other merge")
        return rename(self, destination)

    monkeypatch.setattr(Path, "rename", other_merge_between)
    with atomic_output_dir(target, overwrite=True) as tmp:
        (tmp / "mine").write_text("this merge")
    assert done and [p.name for p in target.iterdir()] == ["mine"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_overwrite_that_other_merges_keep_beating_says_so_and_leaves_theirs(tmp_path, monkeypatch):
    """Other merges put their output there before each of this one's tries: it gives up saying so, not
    'pass --overwrite' (it was given), and leaves the last one's output whole, its own gone."""
    from pathlib import Path

    from hubmerge.errors import OutputNotWritableError

    target = tmp_path / "out"
    rename, others = Path.rename, []

    def others_first(self, destination):
        if Path(destination) == target and "hubmerge-tmp" in self.name:
            target.mkdir()
            others.append(target / f"theirs-{len(others)}")
            others[-1].write_text("another merge")
        return rename(self, destination)

    monkeypatch.setattr(Path, "rename", others_first)
    with pytest.raises(OutputNotWritableError, match="other merges put their outputs there 3 times"):
        with atomic_output_dir(target, overwrite=True) as tmp:
            (tmp / "mine").write_text("this merge")
    assert [p.name for p in target.iterdir()] == ["theirs-2"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
