"""Model layouts: single file, shard index, unsafe shard names, and a local source's byte reads."""

from __future__ import annotations

import json
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from hubmerge.errors import HeaderParseError, ModelFilesNotFoundError, RangeReadError, ShardIndexError
from hubmerge.weights import LocalSource, open_weights
from hubmerge.weights.index import no_weights_message
from hubmerge.weights.reader import plan_spans, read_tensors


def tensors(n=4):
    return {f"layer{i}.weight": torch.full((3, 2), float(i)) for i in range(n)} | {"step": torch.tensor(5)}


def sharded(root, groups):
    """Save ``groups`` (list of dicts) as shards with an index, like save_pretrained."""
    root.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, root / name)
        weight_map.update({k: name for k in group})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root


def test_single_file_layout(tmp_path):
    save_file(tensors(), tmp_path / "model.safetensors")
    weights = open_weights(LocalSource(tmp_path))
    assert weights.files == ("model.safetensors",)
    assert set(weights.tensors) == set(tensors())
    read = read_tensors(weights, list(weights.tensors))
    for name, value in tensors().items():
        assert torch.equal(read[name], value)


def test_sharded_layout_reads_the_same_tensors(tmp_path):
    t = tensors(6)
    items = list(t.items())
    sharded(tmp_path, [dict(items[:2]), dict(items[2:5]), dict(items[5:])])
    weights = open_weights(LocalSource(tmp_path))
    assert len(weights.files) == 3
    read = read_tensors(weights, sorted(t))
    assert all(torch.equal(read[k], v) for k, v in t.items())


def test_any_single_safetensors_file_is_used(tmp_path):
    save_file(tensors(), tmp_path / "resnet18.safetensors")
    assert open_weights(LocalSource(tmp_path)).files == ("resnet18.safetensors",)


def test_no_weights_is_a_clear_error(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelFilesNotFoundError, match="found no .safetensors file. hubmerge reads safetensors "
                       "weights only; convert .bin checkpoints with `save_pretrained\\(safe_serialization=True\\)`"):
        open_weights(LocalSource(tmp_path))


def test_a_folder_of_models_or_checkpoints_says_what_to_name_instead(tmp_path):
    """The folder above the fine-tunes, or one of FusionBench's torchvision `.pth` files, was refused with
    advice about `.bin` checkpoints that fitted neither."""
    for task in ("cars", "dtd"):
        (tmp_path / "tuned" / task).mkdir(parents=True)
        save_file(tensors(), tmp_path / "tuned" / task / "model.safetensors")
    with pytest.raises(ModelFilesNotFoundError, match="found no .safetensors file. It holds models one folder down "
                       "\\(cars, dtd\\): give those, not the folder that holds them.$"):
        open_weights(LocalSource(tmp_path / "tuned"))
    save_file(tensors(), tmp_path / "tuned" / "cars.safetensors")
    save_file(tensors(), tmp_path / "tuned" / "dtd.safetensors")
    with pytest.raises(ModelFilesNotFoundError, match="found cars.safetensors, dtd.safetensors. Without "
                       "model.safetensors.index.json, hubmerge reads a model from one file only"):
        open_weights(LocalSource(tmp_path / "tuned"))
    (tmp_path / "pth").mkdir()
    (tmp_path / "pth" / "resnet18_cars.pth").write_bytes(b"x")
    with pytest.raises(ModelFilesNotFoundError, match="with `hubmerge export-resnet`.$"):
        open_weights(LocalSource(tmp_path / "pth"))


def test_missing_directory(tmp_path):
    with pytest.raises(ModelFilesNotFoundError, match="does not exist"):
        LocalSource(tmp_path / "nope")


@pytest.mark.parametrize(
    "shard",
    ["../outside.safetensors", "/etc/passwd.safetensors", "sub/../../x.safetensors", "C:\\x.safetensors",
     "..\\x.safetensors", "model.bin", "a\x00.safetensors"],
)
def test_index_cannot_point_outside_the_model(tmp_path, shard):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(ShardIndexError):
        open_weights(LocalSource(tmp_path))


@pytest.mark.parametrize("content", ["{", "[]", '{"weight_map": []}', '{"weight_map": {}}', "\xff"])
def test_corrupt_index(tmp_path, content):
    (tmp_path / "model.safetensors.index.json").write_bytes(content.encode("utf-8", "surrogateescape") if content != "\xff" else b"\xff")
    with pytest.raises(ShardIndexError):
        open_weights(LocalSource(tmp_path))


def test_model_safetensors_beside_an_index_is_the_model_as_transformers_reads_it(tmp_path):
    """Shards and an index an earlier upload left beside a newer model.safetensors (upload_folder deletes
    nothing): transformers' from_pretrained and huggingface_hub read model.safetensors, the merge read the stale
    shards, so it merged other weights than the model evaluated and loaded as that input."""
    from hubmerge.vision.loading import _weight_files

    sharded(tmp_path, [{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    save_file({"a": torch.ones(2), "b": torch.ones(2)}, tmp_path / "model.safetensors")
    weights = open_weights(LocalSource(tmp_path))
    assert weights.files == ("model.safetensors",)
    assert torch.equal(read_tensors(weights, ["a"])["a"], torch.ones(2))
    assert _weight_files(tmp_path) == [tmp_path / "model.safetensors"]  # as hubmerge loads a model folder


def test_tied_weights_saved_once_read_under_each_name(tmp_path):
    """safetensors' save_model keeps one name of tied weights and records the others in the metadata; they
    were no tensors of the model, so it was refused beside the model saved whole ('out.weight: missing')."""
    from safetensors.torch import save_model

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(4, 3, bias=False)
            self.out.weight = self.emb.weight

    model = Tied()
    save_model(model, str(tmp_path / "model.safetensors"), metadata={"format": "pt", "note": "emb.weight"})
    weights = open_weights(LocalSource(tmp_path))
    assert sorted(weights.tensors) == ["emb.weight", "out.weight"]  # "note" names a tensor but is none
    read = read_tensors(weights, ["emb.weight", "out.weight"])
    assert torch.equal(read["out.weight"], model.emb.weight.detach())
    assert torch.equal(read["emb.weight"], read["out.weight"])


def test_index_naming_a_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(ModelFilesNotFoundError, match="gone.safetensors"):
        open_weights(LocalSource(tmp_path))


def test_index_that_disagrees_with_the_shards(tmp_path):
    sharded(tmp_path, [{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["a"] = index["weight_map"]["b"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match="does not hold it"):
        open_weights(LocalSource(tmp_path))


@pytest.mark.parametrize("twice, said", [
    ('"a": "model-00002-of-00002.safetensors"', "'a' is listed twice: in model-00001-of-00002.safetensors and in "
                                                "model-00002-of-00002.safetensors"),
    ('"a": "model-00001-of-00002.safetensors"', None),  # the same shard twice: harmless, read as one
])
def test_a_tensor_listed_twice_in_the_index_is_refused_when_the_shards_differ(tmp_path, twice, said):
    """json keeps a key's last value: the index listing 'a' in both shards was refused for the wrong one
    ('mapped to model-00002 but that shard does not hold it'), and where the last was right, silently taken."""
    sharded(tmp_path, [{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    index = (tmp_path / "model.safetensors.index.json").read_text()
    (tmp_path / "model.safetensors.index.json").write_text(index.replace("}}", f", {twice}}}}}"))
    if said is None:
        assert open_weights(LocalSource(tmp_path)).tensors["a"].file == "model-00001-of-00002.safetensors"
        return
    with pytest.raises(ShardIndexError, match=re.escape(said)):
        open_weights(LocalSource(tmp_path))


def test_an_index_with_two_weight_maps_is_refused_not_read_as_the_last(tmp_path):
    """The first map's tensors were left out unsaid: 'b' missing from a model whose shard holds it."""
    sharded(tmp_path, [{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    index = (tmp_path / "model.safetensors.index.json").read_text()
    (tmp_path / "model.safetensors.index.json").write_text(
        index.replace("}}", '}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}'))
    with pytest.raises(ShardIndexError, match="'weight_map' is listed twice"):
        open_weights(LocalSource(tmp_path))


def test_an_index_that_swaps_two_tensors_shards_is_refused(tmp_path):
    # both shards are still named, so every tensor is found somewhere: only the file the index names is wrong
    sharded(tmp_path, [{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"] = {"a": index["weight_map"]["b"], "b": index["weight_map"]["a"]}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match="does not hold it"):
        open_weights(LocalSource(tmp_path))


def test_an_index_that_leaves_a_tensor_out_is_refused(tmp_path):
    sharded(tmp_path, [{"a": torch.zeros(2), "c": torch.zeros(1)}, {"b": torch.zeros(2)}])
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    del index["weight_map"]["c"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match="does not list: c$"):
        open_weights(LocalSource(tmp_path))


def test_total_bytes_are_the_files_sizes_headers_included(tmp_path):
    sharded(tmp_path, [{"a": torch.zeros(2)}, {"b": torch.zeros(3)}])
    weights = open_weights(LocalSource(tmp_path))
    assert weights.total_bytes == sum((tmp_path / f).stat().st_size for f in weights.files)


def test_a_hub_repo_with_weights_beside_models_one_folder_down_is_told_to_keep_one_file():
    listing = ["a.safetensors", "b.safetensors", "cars/model.safetensors"]
    message = no_weights_message("org/m", listing, repo_id="org/m")
    assert "keep one, or add the index" in message and "hf download" not in message


def test_tensor_in_two_shards(tmp_path):
    sharded(tmp_path, [{"a": torch.zeros(2), "b": torch.zeros(1)}, {"a": torch.zeros(2)}])
    with pytest.raises(HeaderParseError, match="also appears"):
        open_weights(LocalSource(tmp_path))


def test_truncated_file_is_caught_by_the_header(tmp_path):
    save_file(tensors(), tmp_path / "model.safetensors")
    blob = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(blob[:-7])
    with pytest.raises(HeaderParseError, match="needs"):
        open_weights(LocalSource(tmp_path))


def test_file_truncated_after_planning_is_a_range_error(tmp_path):
    save_file(tensors(), tmp_path / "model.safetensors")
    weights = open_weights(LocalSource(tmp_path))
    blob = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(blob[:-30])
    with pytest.raises(RangeReadError, match="ended early"):
        read_tensors(weights, list(weights.tensors))


def test_spans_coalesce_neighbours_and_respect_the_limit(tmp_path):
    t = tensors(8)
    save_file(t, tmp_path / "model.safetensors")
    weights = open_weights(LocalSource(tmp_path))
    names = sorted(t)
    assert len(plan_spans(weights, names)) == 1
    assert len(plan_spans(weights, names, max_span=24)) == len(names)  # each tensor is 24 bytes (8 for step)
    every_other = names[::2]
    spans = plan_spans(weights, every_other)
    assert sum(len(s.members) for s in spans) == len(every_other)


def test_local_source_refuses_paths_outside(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelFilesNotFoundError, match="escapes"):
        LocalSource(tmp_path / "m").file_size("../x")


class UnmappedSource(LocalSource):
    """A local source that cannot map, so reads go through pooled buffers as over HTTP."""

    def view(self, path, offset, length):
        return None


@pytest.mark.parametrize("source_type", [LocalSource, UnmappedSource], ids=["mapped", "read"])
def test_a_tensor_unaligned_for_its_dtype_is_read_correctly(tmp_path, source_type):
    # safetensors' own writer sorts tensors by alignment, so save_file never makes this layout: built by
    # hand, the F32 data starts at byte 3 of the data section, after a BOOL[3], in the same span.
    flags = torch.tensor([True, False, True])
    values = torch.tensor([1.5, -2.25, 3.0, 1e-3], dtype=torch.float32)
    tail = torch.tensor([7, 250], dtype=torch.uint8)
    header = {
        "a_flag": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]},
        "b_values": {"dtype": "F32", "shape": [4], "data_offsets": [3, 19]},
        "c_tail": {"dtype": "U8", "shape": [2], "data_offsets": [19, 21]},
    }
    raw = json.dumps(header).encode()
    data = flags.numpy().tobytes() + values.numpy().tobytes() + tail.numpy().tobytes()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    weights = open_weights(source_type(tmp_path))
    assert len(plan_spans(weights, list(header))) == 1  # one buffer, the F32 member 3 bytes into it
    read = read_tensors(weights, list(header))
    assert torch.equal(read["a_flag"], flags)
    assert read["b_values"].dtype == torch.float32 and torch.equal(read["b_values"], values)
    assert torch.equal(read["c_tail"], tail)
    # only the unaligned tensor is copied: the others stay views of the span's one buffer
    storage = {name: tensor.untyped_storage().data_ptr() for name, tensor in read.items()}
    assert storage["a_flag"] == storage["c_tail"] != storage["b_values"]
