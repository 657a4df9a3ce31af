"""Fine-tunes of one backbone saved in different ways (one file or shards split elsewhere, bfloat16 / float16 /
float32, mixed within a file, with or without metadata, 0-d and empty tensors, int and bool buffers), merged
by every method from local folders and from the local Hub, against a direct computation on full state dicts."""

from __future__ import annotations

import json
import uuid

import pytest
import torch
from safetensors.torch import load_file, save_file

from hubmerge import engine
from hubmerge.engine.merger import _seed_for
from hubmerge.methods import get_method, list_methods
from hubmerge.vision.families import is_running_statistic

METHODS = [m.name for m in list_methods()]
WEIGHTS = (1.0, 3.0)


def _tensors(seed, base=None):
    g = torch.Generator().manual_seed(seed)
    shapes = {"enc.0.weight": (8, 4), "enc.0.bias": (8,), "enc.1.weight": (4, 4), "bn.running_mean": (8,),
              "bn.running_var": (8,), "scalar": (), "empty": (0, 4)}
    if base is None:
        out = {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}
        out["bn.running_var"] = out["bn.running_var"].abs() + 0.5
    else:
        out = {name: base[name] + 0.1 * torch.randn(shape, generator=g) for name, shape in shapes.items()}
    out["bn.num_batches_tracked"] = torch.tensor(seed * 10)  # int64, 0-d
    out["mask"] = torch.tensor([True, seed % 2 == 0, False])
    return out


def _save_sharded(folder, tensors, parts):
    folder.mkdir()
    weight_map = {}
    for i, part in enumerate(parts):
        file = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        save_file({n: tensors[n] for n in part}, folder / file)  # no __metadata__
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """base: float32, one file, no metadata; a: bfloat16 weights beside float32 biases in one file ('np');
    b: float16, three shards split elsewhere than a's. enc.1.weight is float16 in all three."""
    root = tmp_path_factory.mktemp("layouts")
    base = _tensors(0)
    base["enc.1.weight"] = base["enc.1.weight"].half()
    a, b = _tensors(1, base), _tensors(2, base)
    a = {n: v.bfloat16() if n.endswith("weight") and n != "enc.1.weight" else v for n, v in a.items()}
    b = {n: v.half() if v.is_floating_point() else v for n, v in b.items()}
    (root / "base").mkdir()
    save_file(base, root / "base" / "model.safetensors")
    (root / "a").mkdir()
    save_file(a, root / "a" / "model.safetensors", metadata={"format": "np"})
    names = sorted(b)
    _save_sharded(root / "b", b, [names[:1], names[1:6], names[6:]])
    return root, {"base": base, "a": a, "b": b}


def _recipe(method, ref, dtype=None):
    spec = get_method(method)
    recipe = {"method": method, "models": [{"model": ref("a"), "task": "ta"}, {"model": ref("b"), "task": "tb"}]}
    if spec.accepts_base:
        recipe["base_model"] = ref("base")
    if spec.uses_weights:
        for entry, weight in zip(recipe["models"], WEIGHTS):
            entry["weight"] = weight
    if dtype is not None:
        recipe["dtype"] = dtype
    return recipe


def _expected(method, state, dtype=None):
    """The merge computed directly: floats in float32, then written in the recipe's dtype or one that holds
    every input read; int and bool buffers copied from the base (the first model without one); BatchNorm
    statistics averaged under a method that takes a base."""
    spec = get_method(method)
    models, base = [state["a"], state["b"]], state["base"]
    out = {}
    for name, first in models[0].items():
        if not first.is_floating_point():
            out[name] = (base if spec.accepts_base else models[0])[name]
            continue
        values = [m[name].float() for m in models]
        averaged = spec.accepts_base and is_running_statistic(name)
        read = [m[name].dtype for m in models] + ([base[name].dtype] if spec.accepts_base and not averaged else [])
        written = getattr(torch, dtype) if dtype else (read[0] if len(set(read)) == 1 else torch.float32)
        if averaged:
            out[name] = torch.stack(values).mean(0).to(written)
            continue
        kwargs = dict(spec.resolve_params({}))
        if spec.accepts_base:
            kwargs["base"] = base[name].float()
        if spec.uses_weights:
            kwargs["weights"] = list(WEIGHTS)
        if spec.needs_generator:
            kwargs["generator"] = torch.Generator().manual_seed(_seed_for(int(kwargs["seed"]), name))
        out[name] = spec.fn(values, **kwargs).to(written)
    return out


def _check(output, expected):
    merged = load_file(output / "model.safetensors")
    assert merged.keys() == expected.keys()
    for name, value in expected.items():
        assert (merged[name].dtype, merged[name].shape) == (value.dtype, value.shape), name
        torch.testing.assert_close(merged[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_merges_mixed_dtypes_and_shards_as_computed_directly(layouts, tmp_path, method):
    root, state = layouts
    engine.merge(_recipe(method, lambda name: str(root / name)), tmp_path / "out")
    _check(tmp_path / "out", _expected(method, state))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_the_recipes_dtype_is_every_floats_dtype_and_leaves_buffers_as_they_are(layouts, tmp_path, dtype):
    root, state = layouts
    engine.merge(_recipe("task_arithmetic", lambda name: str(root / name), dtype), tmp_path / "out")
    expected = _expected("task_arithmetic", state, dtype)
    _check(tmp_path / "out", expected)
    assert {str(v.dtype) for v in expected.values()} == {f"torch.{dtype}", "torch.int64", "torch.bool"}


def test_every_method_merges_the_same_layouts_from_the_hub(layouts, local_hub, tmp_path):
    """The same files as Hub repos, read by ranged requests: the same tensors as computed directly."""
    from huggingface_hub import HfApi

    root, state = layouts
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    tag = uuid.uuid4().hex[:6]
    repos = {}
    for name in ("base", "a", "b"):
        repos[name] = f"alice/layouts-{name}-{tag}"
        api.create_repo(repos[name])
        api.upload_folder(folder_path=root / name, repo_id=repos[name])
    for method in METHODS:
        out = tmp_path / method
        engine.merge(_recipe(method, repos.__getitem__), out, token=local_hub.alice_token)
        _check(out, _expected(method, state))


def test_fine_tunes_saved_under_a_training_wrappers_prefix_are_refused_not_merged_as_no_familys(tmp_path):
    """Every input 'module.'-prefixed (saved from DataParallel): each failed its config's family, so the plan took
    them all for models of no family and merged them whole, writing ConvNeXt's config over names transformers
    does not load (it made every weight anew)."""
    from hubmerge.errors import UnsupportedArchitectureError

    from ._models import save_model, state_dict

    refs = []
    for i in range(2):
        folder = save_model("convnext", tmp_path / f"m{i}", seed=i, num_labels=3)
        tensors = state_dict(folder)
        (folder / "model.safetensors").unlink()
        save_file({f"module.{n}": v for n, v in tensors.items()}, folder / "model.safetensors")
        refs.append({"model": str(folder), "task": f"t{i}"})
    with pytest.raises(UnsupportedArchitectureError, match="every name starts with 'module.'"):
        engine.merge({"method": "simple_average", "models": refs}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tied_weights_saved_once_merge_as_the_same_model_saved_whole(tmp_path):
    """One fine-tune saved by safetensors' save_model (tied weights once, the other name in its metadata), one
    saved whole: the merge was refused ('out.weight: missing in model0'); both names are the average now."""
    from safetensors.torch import save_model

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.out = torch.nn.Linear(4, 3, bias=False), torch.nn.Linear(4, 3, bias=False)
            self.out.weight = self.emb.weight

    once, whole = Tied(), Tied()
    for name in ("once", "whole"):
        (tmp_path / name).mkdir()
    save_model(once, str(tmp_path / "once" / "model.safetensors"))
    save_file({n: v.clone() for n, v in whole.state_dict().items()}, tmp_path / "whole" / "model.safetensors")
    models = [{"model": str(tmp_path / "once")}, {"model": str(tmp_path / "whole")}]
    engine.merge({"method": "simple_average", "models": models}, tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    expected = (once.emb.weight + whole.emb.weight).detach() / 2
    assert merged.keys() == {"emb.weight", "out.weight"}
    torch.testing.assert_close(merged["emb.weight"], expected)
    torch.testing.assert_close(merged["out.weight"], expected)
