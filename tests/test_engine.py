"""The streaming engine against full-load reference merges, on tiny ConvNeXt and ResNet families."""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import replace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from hubmerge import engine
from hubmerge.cli import main
from hubmerge.engine import merger
from hubmerge.errors import (
    CancelledError,
    DtypeMismatchError,
    HeaderParseError,
    MissingTensorError,
    ModelFilesNotFoundError,
    NonFiniteTensorError,
    OutputExistsError,
    OutputHoldsInputError,
    OutputNotOursError,
    OutputSpaceError,
    PlanError,
    RangeReadError,
    RecipeError,
    ShapeMismatchError,
    ShardIndexError,
    UnsupportedDtypeError,
)
from hubmerge.methods import get_method
from hubmerge.plan_summary import human_bytes
from hubmerge.recipe import DatasetRef, Recipe, load_recipe
from hubmerge.weights.sources import LocalSource

from ._models import cache_snapshot, make_family, snapshot, state_dict, write_recipe


@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("convnext"), "convnext")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("resnet"), "resnet")



def open_files_under(folder) -> int:
    """How many of this process's file descriptors are open on files under ``folder``."""
    links = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
    return sum(link.startswith(f"{os.path.realpath(folder)}/") for link in links)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_a_plan_never_executed_or_closed_leaves_no_file_open(convnext, tmp_path):
    """``print(hubmerge.plan(...))``, as the README shows it, neither executes nor closes the plan: each one
    left its inputs' files open (two per input), and a loop of plans ran out of file descriptors."""
    recipe = write_recipe(tmp_path / "r.yaml", convnext, "ties")
    root = convnext.base.parent
    before = open_files_under(root)
    merge_plan = engine.plan(recipe)
    assert open_files_under(root) > before  # the headers' files, open until the plan goes
    del merge_plan
    for _ in range(3):
        assert engine.plan(recipe).bytes_to_read > 0
    assert open_files_under(root) == before

def reference_merge(family, method: str, parameters: dict) -> dict[str, torch.Tensor]:
    """Load every model whole, then call the method on each backbone tensor (what FusionBench does)."""
    spec = get_method(method)
    params = spec.resolve_params(parameters)
    base = state_dict(family.base)
    models = [state_dict(p) for p in family.models.values()]
    out = {}
    for name, value in base.items():
        if not name.startswith(family.backbone):
            continue
        if not value.is_floating_point():
            out[name] = value
            continue
        kwargs = dict(params)
        if spec.accepts_base:
            kwargs["base"] = value.float()
        if spec.uses_weights:
            kwargs["weights"] = None
        if spec.needs_generator:
            kwargs["generator"] = torch.Generator().manual_seed(merger._seed_for(params["seed"], name))
        out[name] = spec.fn([m[name].float() for m in models], **kwargs)
    return out


def run_merge(tmp_path, family, method, parameters=None, **options):
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(write_recipe(tmp_path / f"{method}.yaml", family, method, parameters=parameters))
    out = tmp_path / f"out-{method}"
    engine.merge(recipe, out, **options)
    return out


ALL_METHODS = [
    ("simple_average", {}),
    ("task_arithmetic", {"scaling_factor": 0.3}),
    ("ties", {"density": 0.2}),
    ("ties", {"density": 0.5, "disjoint_merge": "mean"}),
    ("dare", {"drop_rate": 0.5, "seed": 3}),
    ("dare", {"drop_rate": 0.3, "combine": "ties"}),
    ("breadcrumbs", {}),
    ("model_stock", {}),
]


@pytest.mark.parametrize("method, parameters", ALL_METHODS, ids=lambda v: str(v))
def test_every_method_equals_the_full_load_reference(tmp_path, convnext, method, parameters):
    out = run_merge(tmp_path, convnext, method, parameters)
    merged = load_file(out / "model.safetensors")
    expected = reference_merge(convnext, method, parameters)
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value.to(merged[name].dtype), rtol=1e-5, atol=1e-6, msg=name)


def test_simple_average_and_task_arithmetic_match_direct_torch(tmp_path, convnext):
    base = state_dict(convnext.base)
    models = [state_dict(p) for p in convnext.models.values()]
    average = load_file(run_merge(tmp_path, convnext, "simple_average") / "model.safetensors")
    arithmetic = load_file(run_merge(tmp_path, convnext, "task_arithmetic", {"scaling_factor": 0.7}) / "model.safetensors")
    name = "convnext.encoder.stages.2.layers.0.pwconv1.weight"
    stacked = torch.stack([m[name] for m in models])
    torch.testing.assert_close(average[name], stacked.mean(0))
    torch.testing.assert_close(arithmetic[name], base[name] + 0.7 * (stacked - base[name]).sum(0))


def test_slerp_on_two_models(tmp_path, convnext):
    two = type(convnext)(convnext.base, dict(list(convnext.models.items())[:2]), convnext.backbone)
    out = run_merge(tmp_path, two, "slerp", {"t": 0.25})
    merged = load_file(out / "model.safetensors")
    a, b = (state_dict(p) for p in two.models.values())
    name = "convnext.embeddings.patch_embeddings.weight"
    torch.testing.assert_close(merged[name], get_method("slerp").fn([a[name], b[name]], t=0.25))


@pytest.mark.parametrize("method", ["simple_average", "task_arithmetic", "ties"])
def test_float64_inputs_are_merged_in_float64(tmp_path, method):
    """The output of float64 inputs is written in float64, but the merge computed in float32: 0.1 and 0.2
    averaged to 0.15000000596046448."""
    values = {"base": [0.0, 0.05], "a": [0.1, 1 / 3], "b": [0.2, 2 / 3]}
    for name, value in values.items():
        (tmp_path / name).mkdir()
        save_file({"w": torch.tensor(value, dtype=torch.float64)}, tmp_path / name / "model.safetensors")
    recipe = {"method": method, "models": [{"model": str(tmp_path / "a")}, {"model": str(tmp_path / "b")}]}
    if method != "simple_average":
        recipe["base_model"] = str(tmp_path / "base")
    engine.merge(recipe, tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")["w"]
    a, b, base = (torch.tensor(values[n], dtype=torch.float64) for n in ("a", "b", "base"))
    expected = get_method(method).fn([a, b], **({} if method == "simple_average" else {"base": base}))
    assert merged.dtype == torch.float64
    torch.testing.assert_close(merged, expected, rtol=1e-15, atol=0)  # float32 arithmetic is off by 1e-8


def test_output_is_a_transformers_model_with_per_task_heads(tmp_path, convnext):
    from transformers import AutoModelForImageClassification

    out = run_merge(tmp_path, convnext, "simple_average")
    model = AutoModelForImageClassification.from_pretrained(out)
    first_path = next(iter(convnext.models.values()))
    assert model.config.num_labels == len(json.loads((first_path / "config.json").read_text())["id2label"])
    assert model(torch.zeros(1, 3, 32, 32)).logits.shape == (1, model.config.num_labels)
    for task, path in convnext.models.items():
        head = load_file(out / "heads" / task / "model.safetensors")
        source = state_dict(path)
        assert set(head) == {"classifier.weight", "classifier.bias"}
        assert torch.equal(head["classifier.weight"], source["classifier.weight"])
        assert json.loads((out / "heads" / task / "config.json").read_text())["id2label"] == json.loads(
            (path / "config.json").read_text()
        )["id2label"]
    merged = load_file(out / "model.safetensors")
    assert torch.equal(merged["classifier.weight"], state_dict(first_path)["classifier.weight"])
    assert (out / "preprocessor_config.json").exists()
    recipe = load_recipe(out / "hubmerge_recipe.yaml")
    assert recipe.method == "simple_average" and recipe.tasks == list(convnext.models)


def test_integer_buffers_are_copied_never_averaged(tmp_path, resnet):
    out = run_merge(tmp_path, resnet, "simple_average")
    merged = load_file(out / "model.safetensors")
    base = state_dict(resnet.base)
    ints = [n for n, v in base.items() if not v.is_floating_point()]
    assert ints, "the ResNet family must have num_batches_tracked buffers"
    for name in ints:
        assert merged[name].dtype == torch.int64
        assert torch.equal(merged[name], base[name])  # models hold 7, 14, 21: an average would give 14
    running = "resnet.embedder.embedder.normalization.running_var"
    torch.testing.assert_close(merged[running], torch.stack([state_dict(p)[running] for p in resnet.models.values()]).mean(0))


@pytest.mark.parametrize("method, parameters", ALL_METHODS, ids=lambda v: str(v))
def test_batchnorm_statistics_are_the_fine_tunes_mean_under_methods_that_take_a_base(tmp_path, resnet, method,
                                                                                     parameters):
    out = run_merge(tmp_path, resnet, method, parameters)
    merged = load_file(out / "model.safetensors")
    expected = reference_merge(resnet, method, parameters)
    models = [state_dict(p) for p in resnet.models.values()]
    statistics = [name for name in expected if name.endswith((".running_mean", ".running_var"))]
    assert statistics, "the ResNet family must have BatchNorm statistics"
    averaged = get_method(method).accepts_base  # the averages merge them as the reference does
    if averaged:
        expected |= {name: torch.stack([m[name] for m in models]).mean(0) for name in statistics}
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value.to(merged[name].dtype), rtol=1e-5, atol=1e-6, msg=name)
    merge_plan = engine.plan(load_recipe(out / "hubmerge_recipe.yaml"))
    engine.close_plan(merge_plan)
    assert merge_plan.counts["averaged"] == (len(statistics) if averaged else 0)
    recorded = json.loads((out / "hubmerge_heads.json").read_text())["averaged_statistics"]
    assert sorted(recorded) == (sorted(statistics) if averaged else [])
    from hubmerge.card import collect_card, render_card

    said = f"The {len(statistics)} BatchNorm running statistics (means and variances) are the fine-tuned models' mean"
    assert (said in render_card(collect_card(out)).text) == averaged


def test_batchnorm_statistics_stay_valid_where_task_vectors_would_break_the_model(tmp_path):
    """Task arithmetic at 1.0 on the trained ResNets: applied to every float tensor (as FusionBench does), it
    drives running variances negative and the model's outputs to NaN; hubmerge averages the statistics."""
    from hubmerge.fixtures import build_fixtures

    from ._fixture_helpers import TaskEvaluator, backbone_of, load_tensors, mean, task_arithmetic

    fixtures = build_fixtures(family="resnet")
    base = backbone_of(load_tensors(fixtures.base), fixtures.backbone)
    tuned = [backbone_of(load_tensors(fixtures.models[task]), fixtures.backbone) for task in fixtures.tasks]
    everything = task_arithmetic(base, tuned, 1.0)
    assert min(float(v.min()) for name, v in everything.items() if name.endswith(".running_var")) < 0
    out = run_merge(tmp_path, fixtures, "task_arithmetic", {"scaling_factor": 1.0})
    merged = backbone_of(load_tensors(out), fixtures.backbone)
    for name, value in merged.items():
        if name.endswith((".running_mean", ".running_var")):
            torch.testing.assert_close(value, torch.stack([t[name] for t in tuned]).mean(0))
        else:
            torch.testing.assert_close(value, everything[name])
    evaluator = TaskEvaluator.load(fixtures)
    broken, kept = mean(evaluator.evaluate(everything)), mean(evaluator.evaluate(merged))
    print(f"\ntask arithmetic 1.0 on the trained ResNets: {broken:.3f} on every tensor, {kept:.3f} by hubmerge")
    assert kept >= broken + 0.4  # measured: 0.24 (chance is 0.25) against 0.76


def test_dare_at_its_defaults_keeps_the_trained_resnets_working(tmp_path):
    """DARE scales the task-vector entries it keeps by 1 / (1 - drop_rate), 10x at its defaults: applied to the
    running variances too, it made them negative and the merged ResNets fell to chance (0.240)."""
    from hubmerge.fixtures import build_fixtures

    from ._fixture_helpers import TaskEvaluator, backbone_of, load_tensors, mean

    fixtures = build_fixtures(family="resnet")
    merged = backbone_of(load_tensors(run_merge(tmp_path, fixtures, "dare")), fixtures.backbone)
    assert min(float(v.min()) for name, v in merged.items() if name.endswith(".running_var")) >= 0
    assert mean(TaskEvaluator.load(fixtures).evaluate(merged)) >= 0.75  # measured: 0.856


def test_sharding_of_inputs_does_not_change_the_output(tmp_path, convnext):
    resharded = tmp_path / "resharded"
    for task, path in convnext.models.items():
        target = resharded / task
        target.mkdir(parents=True)
        tensors = state_dict(path)
        names = sorted(tensors)
        thirds = [names[i::3] for i in range(3)]  # interleaved: every shard holds every stage
        weight_map = {}
        for i, part in enumerate(thirds):
            file = f"model-{i + 1:05d}-of-00003.safetensors"
            save_file({n: tensors[n] for n in part}, target / file)
            weight_map.update({n: file for n in part})
        (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        shutil.copy(path / "config.json", target / "config.json")
    family = type(convnext)(convnext.base, {t: resharded / t for t in convnext.models}, convnext.backbone)
    one = load_file(run_merge(tmp_path / "a", convnext, "ties") / "model.safetensors")
    three = load_file(run_merge(tmp_path / "b", family, "ties") / "model.safetensors")
    assert one.keys() == three.keys()
    assert all(torch.equal(one[k], three[k]) for k in one)


def test_output_shards_and_dtype(tmp_path, convnext):
    from transformers import AutoModelForImageClassification

    recipe = load_recipe(
        write_recipe(tmp_path / "r.yaml", convnext, "task_arithmetic", extra={"dtype": "bfloat16"})
    )
    out = tmp_path / "out"
    engine.merge(recipe, out, max_shard_size="300KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    tensors = {}
    for shard in shards:
        tensors.update(load_file(out / shard))
    assert {v.dtype for v in tensors.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForImageClassification.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_inputs_in_different_float_dtypes_merge_in_one_that_holds_them_all(tmp_path, convnext):
    """A fine-tune published in float16 beside float32 ones: the output took the dtype of the first input
    listed, so listing that one first wrote the whole merge in float16. The plan now says what it writes."""
    from hubmerge.plan_summary import summary_rows
    from hubmerge.weights.dtypes import common_float

    (task, first), *rest = convnext.models.items()
    half = tmp_path / "half"
    shutil.copytree(first, half)
    for file in half.glob("*.safetensors"):
        tensors = load_file(file)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, file,
                  metadata={"format": "pt"})
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))  # as saved from a float16 model
    mixed = replace(convnext, models={task: half, **dict(rest)})
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", mixed, "task_arithmetic"))
    merge_plan = engine.plan(recipe)
    try:
        assert dict(summary_rows(merge_plan))["output dtype"] == "float32: the inputs mix float16 and float32"
        assert merge_plan.to_dict()["merged_dtypes"] == ["float32"]  # `plan --json`
    finally:
        engine.close_plan(merge_plan)
    engine.merge(recipe, tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    for name, value in reference_merge(mixed, "task_arithmetic", {}).items():
        assert merged[name].dtype == value.dtype, name
        torch.testing.assert_close(merged[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # the float16 input's head stayed float16 beside the float32 backbone: its task could not run
    heads = {file: load_file(file) for file in [tmp_path / "out" / "model.safetensors",
                                                 *(tmp_path / "out" / "heads").glob("*/model.safetensors")]}
    assert {str(v.dtype) for tensors in heads.values() for v in tensors.values() if v.is_floating_point()} == {
        "torch.float32"}
    own = load_file(half / "model.safetensors")
    head = load_file(tmp_path / "out" / "heads" / task / "model.safetensors")
    assert all(torch.equal(head[k], own[k].float()) for k in head)  # float16 values, held exactly
    from hubmerge import load_merged

    with torch.no_grad():
        logits = load_merged(tmp_path / "out", task=task)(pixel_values=torch.zeros(1, 3, 32, 32)).logits
    assert logits.dtype == torch.float32 and logits.shape[-1] == head["classifier.weight"].shape[0]
    # without a base, the output's config is the first input's: it said float16 over float32 weights
    engine.merge(load_recipe(write_recipe(tmp_path / "avg.yaml", mixed, "simple_average", base=False)),
                 tmp_path / "avg")
    assert json.loads((tmp_path / "avg" / "config.json").read_text())["dtype"] == "float32"

    def output_dtype(extra):
        merge_plan = engine.plan(load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "ties", extra=extra)))
        try:
            return dict(summary_rows(merge_plan))["output dtype"]
        finally:
            engine.close_plan(merge_plan)

    assert output_dtype(None) == "float32, as the inputs"
    assert output_dtype({"dtype": "bfloat16"}) == "bfloat16, as asked"
    assert [common_float(codes) for codes in (["F16"], ["F16", "F16"], ["BF16", "F16"], ["F16", "F32"],
                                                ["BF16", "F64"], ["F8_E4M3", "F16"])] == \
        ["F16", "F16", "F32", "F32", "F64", "F32"]


def test_configs_in_the_older_spelling_say_the_dtype_written(tmp_path, convnext):
    """Configs saved by older transformers spell the dtype ``torch_dtype`` only: left as the inputs said, a
    merged output's config claimed float16 over float32 weights; a recipe's ``dtype:`` went unrecorded where
    the input's config had no ``dtype`` key."""
    old = {}
    for name, path in {"base": convnext.base, **convnext.models}.items():
        old[name] = tmp_path / name
        shutil.copytree(path, old[name])
        config = json.loads((old[name] / "config.json").read_text())
        config.pop("dtype", None)
        (old[name] / "config.json").write_text(json.dumps({**config, "torch_dtype": "float16"}))
    older = replace(convnext, base=old["base"], models={task: old[task] for task in convnext.models})

    def written(name, extra=None):
        engine.merge(load_recipe(write_recipe(tmp_path / f"{name}.yaml", older, "task_arithmetic", extra=extra)),
                     tmp_path / name)
        return [json.loads(path.read_text()) for path in sorted((tmp_path / name).glob("**/config.json"))]

    as_inputs = written("as-inputs")
    assert len(as_inputs) == 1 + len(convnext.models)  # the root's and every head's
    assert {(c["torch_dtype"], c.get("dtype")) for c in as_inputs} == {("float32", None)}
    assert {(c["torch_dtype"], c["dtype"]) for c in written("asked", {"dtype": "bfloat16"})} == {
        ("bfloat16", "bfloat16")}


def test_plan_reports_counts_and_sizes(convnext, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "ties"))
    merge_plan = engine.plan(recipe)
    try:
        counts = merge_plan.counts
        backbone = [n for n in state_dict(convnext.base) if n.startswith("convnext")]
        assert counts["merged"] == len(backbone)
        assert counts["head"] == 2 * len(convnext.models)
        assert counts["skipped"] == 2  # the base model's own head
        read = merge_plan.bytes_to_read
        model_bytes = sum(v.numel() * v.element_size() for v in state_dict(convnext.base).values() if True)
        assert read < 4.2 * model_bytes  # base + 3 models, no header bytes counted twice
        data = merge_plan.to_dict()
        assert data["method"] == "ties" and len(data["inputs"]) == 4
        assert {task: d["classes"] for task, d in data["head_decisions"].items()} == {"alpha": 3, "beta": 5, "gamma": 4}
        assert json.dumps(data)
    finally:
        engine.close_plan(merge_plan)


# --------------------------------------------------------------------------- bad input


def broken_copy(tmp_path, family, task="beta"):
    """A copy of the family where ``task``'s model directory can be damaged freely."""
    target = tmp_path / "broken"
    shutil.copytree(family.models[task], target)
    models = dict(family.models)
    models[task] = target
    return type(family)(family.base, models, family.backbone), target


def expect_plan_error(tmp_path, family, error, match, method="simple_average"):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, method))
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        engine.merge(recipe, out)
    assert not out.exists()
    return out


def test_truncated_input(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)
    blob = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    expect_plan_error(tmp_path, family, HeaderParseError, "broken")


def test_header_length_past_end_of_file(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)
    blob = bytearray((target / "model.safetensors").read_bytes())
    blob[:8] = (len(blob) * 2).to_bytes(8, "little")
    (target / "model.safetensors").write_bytes(bytes(blob))
    expect_plan_error(tmp_path, family, HeaderParseError, "past the end")


def rewrite_header(path, change):
    blob = (path).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (n - len(raw)) if len(raw) <= n else b""
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + n :])


def test_overlapping_offsets(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)

    def overlap(header):
        names = [k for k in header if k != "__metadata__"]
        _, b = sorted(names, key=lambda k: header[k]["data_offsets"][0])[:2]
        header[b]["data_offsets"] = [header[b]["data_offsets"][0] - 4, header[b]["data_offsets"][1] - 4]

    rewrite_header(target / "model.safetensors", overlap)
    expect_plan_error(tmp_path, family, HeaderParseError, "overlaps")


def test_unknown_dtype(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)
    rewrite_header(target / "model.safetensors", lambda h: h["classifier.bias"].update(dtype="F33"))
    expect_plan_error(tmp_path, family, HeaderParseError, "unknown dtype 'F33'")


def test_tensor_missing_in_one_model(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)
    tensors = state_dict(target)
    del tensors["convnext.encoder.stages.1.layers.0.dwconv.bias"]
    save_file(tensors, target / "model.safetensors")
    expect_plan_error(tmp_path, family, MissingTensorError, "stages.1.layers.0.dwconv.bias: missing in beta")


def test_shape_mismatch_lists_every_offending_tensor(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)
    tensors = state_dict(target)
    bad = ["convnext.encoder.stages.0.layers.0.dwconv.bias", "convnext.layernorm.weight"]
    for name in bad:
        tensors[name] = torch.zeros(tensors[name].numel() + 1)
    save_file(tensors, target / "model.safetensors")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "simple_average"))
    with pytest.raises(ShapeMismatchError) as info:
        engine.plan(recipe)
    assert set(info.value.tensors) == set(bad)
    for name in bad:
        assert name in str(info.value)


def test_resnets_of_other_sizes_are_named_beside_their_missing_tensors(tmp_path):
    """A resnet34 fine-tune listed with resnet18 ones (or a transformers resnet-50 with resnet-18 ones) was
    refused with dozens of missing tensors and "are these fine-tunes of the same base model?", never saying
    that one is a model of another size; a plain missing tensor is not blamed on the architecture."""
    from transformers import ResNetConfig, ResNetForImageClassification

    from hubmerge.vision.export import export_torchvision_resnet

    for name, arch in (("base", "resnet18"), ("a", "resnet18"), ("b", "resnet34")):
        export_torchvision_resnet(arch, tmp_path / name, num_classes=2)
    recipe = {"method": "task_arithmetic", "base_model": str(tmp_path / "base"),
              "models": [{"model": str(tmp_path / t), "task": t} for t in "ab"]}
    with pytest.raises(MissingTensorError, match=r"(?s)missing in base, a\n.*different torchvision-resnet models \("
                                                 r"base: architecture=resnet18; a: architecture=resnet18; "
                                                 r"b: architecture=resnet34\)\.$") as refused:
        engine.plan(recipe)
    assert str(refused.value).count("different") == 1
    tensors = load_file(tmp_path / "a" / "model.safetensors")
    del tensors["layer1.0.bn1.bias"]
    save_file(tensors, tmp_path / "b" / "model.safetensors")  # a resnet18 with one tensor lost, in b's folder
    with pytest.raises(MissingTensorError) as refused:
        engine.plan(recipe)
    assert "layer1.0.bn1.bias: missing in b" in str(refused.value) and "different" not in str(refused.value)

    for name, layer_type, depths in (("t18", "basic", [1, 1]), ("t50", "bottleneck", [1, 2])):
        config = ResNetConfig(embedding_size=4, hidden_sizes=[4, 8], depths=depths, layer_type=layer_type,
                              num_labels=2)
        ResNetForImageClassification(config).save_pretrained(tmp_path / name)
    recipe = {"method": "simple_average", "models": [{"model": str(tmp_path / t), "task": t} for t in ("t18", "t50")]}
    with pytest.raises(MissingTensorError, match=r"different resnet models \(t18: layer_type=basic, depths=\[1, 1\]; "
                                                 r"t50: layer_type=bottleneck, depths=\[1, 2\]\)\.$"):
        engine.plan(recipe)
    shutil.copytree(tmp_path / "t50", tmp_path / "tx")  # a config edited by hand, without the layout's keys
    config = json.loads((tmp_path / "tx" / "config.json").read_text())
    (tmp_path / "tx" / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                             if k not in ("layer_type", "depths")}))
    recipe["models"].append({"model": str(tmp_path / "tx"), "task": "tx"})
    with pytest.raises(MissingTensorError, match=r"depths=\[1, 2\]; tx: not said\)\.$"):
        engine.plan(recipe)


def test_the_family_decides_what_is_merged_when_the_recipe_does_not(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average", target=False))
    merge_plan = engine.plan(recipe)
    engine.close_plan(merge_plan)
    assert merge_plan.family.name == "convnext" and merge_plan.target_modules == ("convnext",)
    assert merge_plan.counts["head"] == 2 * len(convnext.models)


def test_heads_of_different_sizes_cannot_be_merged(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average",
                                      extra={"target_modules": ["convnext", "classifier"]}))
    with pytest.raises(ShapeMismatchError, match=r"target_modules: \[convnext\]"):
        engine.plan(recipe)


def test_inputs_of_no_known_family_are_merged_whole(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        save_file({"encoder.w": torch.full((2,), float(name == "b")), "head.w": torch.ones(2)},
                  tmp_path / name / "model.safetensors")
        (tmp_path / name / "config.json").write_text('{"model_type": "mystery"}')
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", _Paths(tmp_path), "simple_average", target=False, base=False))
    merge_plan = engine.plan(recipe)
    assert merge_plan.family is None and merge_plan.target_modules == () and merge_plan.heads == ()
    engine.execute(merge_plan, tmp_path / "out")
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["encoder.w"], torch.full((2,), 0.5))


def test_an_evaluated_merge_of_no_known_family_needs_an_image_processor(tmp_path):
    """Only torchvision families have their transforms built in: any other output, a generic merge's too,
    is evaluated with the preprocessor_config.json it takes from its first input."""
    from hubmerge.evaluation import check_planned_evaluation

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        save_file({"encoder.w": torch.ones(2)}, tmp_path / name / "model.safetensors")
        (tmp_path / name / "config.json").write_text('{"model_type": "mystery"}')
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", _Paths(tmp_path), "simple_average", target=False, base=False))
    with pytest.raises(ModelFilesNotFoundError, match="preprocessor_config.json: not found"):
        check_planned_evaluation(engine.plan(recipe), {})
    (tmp_path / "a" / "preprocessor_config.json").write_text("{}")
    check_planned_evaluation(engine.plan(recipe), {})


def test_inputs_of_different_families_are_refused(tmp_path, convnext, resnet):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average", target=False, base=False,
                                      extra={"models": [{"model": str(convnext.base), "task": "a"},
                                                        {"model": str(resnet.base), "task": "b"}]}))
    with pytest.raises(PlanError, match="different model families: a=convnext, b=resnet"):
        engine.plan(recipe)



def test_an_input_of_no_known_family_among_known_ones_says_why(tmp_path, convnext):
    """A ConvNeXt V2 fine-tune on a ConvNeXt base: the refusal names its config and what it says, not only
    'unknown'."""
    v2 = tmp_path / "v2"
    shutil.copytree(convnext.models["alpha"], v2)
    config = json.loads((v2 / "config.json").read_text())
    (v2 / "config.json").write_text(json.dumps({**config, "model_type": "convnextv2"}))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "task_arithmetic",
                                      extra={"models": [{"model": str(convnext.models["beta"]), "task": "beta"},
                                                        {"model": str(v2), "task": "alpha"}]}))
    with pytest.raises(PlanError) as info:
        engine.plan(recipe)
    assert "base=convnext, beta=convnext, alpha=unknown" in str(info.value)
    assert f"alpha: {v2} (model_type 'convnextv2') is not a supported architecture. Supported: convnext" in str(info.value)

def _save_models(root, **models):
    """One directory per keyword under ``root``, holding that dict of tensors as model.safetensors."""
    for name, tensors in models.items():
        (root / name).mkdir()
        save_file(tensors, root / name / "model.safetensors")
    return {name: str(root / name) for name in models}


def test_a_target_prefix_matches_whole_name_components_only(tmp_path):
    """target_modules [layer1] merges layer1.*, never layer10.* (which the default input's copy keeps)."""
    paths = _save_models(tmp_path, a={"layer1.w": torch.zeros(2), "layer10.w": torch.zeros(2)},
                         b={"layer1.w": torch.ones(2), "layer10.w": torch.ones(2)})
    engine.merge({"method": "simple_average", "target_modules": ["layer1"],
                  "models": [{"model": paths["a"]}, {"model": paths["b"]}]}, tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(merged["layer1.w"], torch.full((2,), 0.5))
    assert torch.equal(merged["layer10.w"], torch.zeros(2))


def test_only_inputs_other_than_the_default_have_their_untargeted_tensors_skipped(tmp_path):
    """The default input's untargeted tensors are the output's own (copied), not "skipped" as the others' are."""
    paths = _save_models(tmp_path, a={"enc.w": torch.zeros(2), "head.w": torch.zeros(2)},
                         b={"enc.w": torch.ones(2), "head.w": torch.ones(2)})
    merge_plan = engine.plan({"method": "simple_average", "target_modules": ["enc"],
                              "models": [{"model": paths["a"]}, {"model": paths["b"]}]})
    engine.close_plan(merge_plan)
    assert merge_plan.skipped == (("model1", "head.w"),)
    assert {t.name: (t.action, t.readers) for t in merge_plan.tensors} == {"enc.w": ("merge", (0, 1)),
                                                                          "head.w": ("copy", (0,))}


def test_a_base_the_method_does_not_take_is_not_read_for_the_merge_but_must_hold_its_tensors(tmp_path):
    """simple_average with a base_model: the base gives files and integer buffers, never a merged tensor's
    bytes or dtype; yet it must hold every merged tensor (a missing one is said, not a KeyError)."""
    paths = _save_models(tmp_path, base={"w": torch.zeros(4, dtype=torch.float32)},
                         a={"w": torch.zeros(4, dtype=torch.float16)}, b={"w": torch.ones(4, dtype=torch.float16)},
                         empty={"other": torch.zeros(1)})
    recipe = {"method": "simple_average", "base_model": paths["base"], "models": [{"model": paths["a"]},
                                                                                 {"model": paths["b"]}]}
    merge_plan = engine.plan(recipe)
    engine.close_plan(merge_plan)
    (merged,) = merge_plan.tensors
    assert merged.readers == (1, 2) and merged.out_dtype == "F16"
    assert merge_plan.bytes_to_read == 2 * 4 * 2
    with pytest.raises(MissingTensorError, match="w: missing in base"):
        engine.plan(recipe | {"base_model": paths["empty"]})


def test_a_tensor_float_in_one_input_and_integer_in_another_is_refused(tmp_path):
    paths = _save_models(tmp_path, a={"w": torch.zeros(2)}, b={"w": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(DtypeMismatchError, match="w"):
        engine.plan({"method": "simple_average", "models": [{"model": paths["a"]}, {"model": paths["b"]}]})


def test_a_merge_that_overflows_the_output_dtype_blames_the_merge_not_an_input(tmp_path):
    """Finite float16 inputs whose task vectors add up past float16's range: no input holds the Inf."""
    paths = _save_models(tmp_path, base={"w": torch.zeros(2, dtype=torch.float16)},
                         a={"w": torch.full((2,), 60000.0, dtype=torch.float16)},
                         b={"w": torch.full((2,), 60000.0, dtype=torch.float16)})
    with pytest.raises(NonFiniteTensorError, match="overflowed the output dtype") as info:
        engine.merge({"method": "task_arithmetic", "parameters": {"scaling_factor": 1.0}, "base_model": paths["base"],
                      "models": [{"model": paths["a"]}, {"model": paths["b"]}]}, tmp_path / "out")
    assert info.value.tensor == "w" and not (tmp_path / "out").exists()
    # the inputs are fine: the advice is a dtype that holds the result, not "fix or drop that model"
    assert "fix or drop" not in str(info.value)
    assert "float16 cannot hold its values: write the output in float32" in str(info.value)


def test_a_copied_tensor_past_the_recipe_dtypes_range_is_refused_not_written_as_inf(tmp_path):
    """A task's head kept as it is, cast to the recipe's float16: its 1e5 was written as Inf in silence (only
    merged tensors were checked), and that task's logits were no numbers. An input's own NaN is still copied as it is."""
    kept = torch.ones(2, 2)
    kept[0, 0] = 1e5
    nan = torch.ones(2, 2)
    nan[0, 0] = float("nan")
    paths = _save_models(tmp_path, a={"body.w": torch.zeros(2), "head.w": kept},
                         b={"body.w": torch.ones(2), "head.w": nan}, c={"body.w": torch.ones(2), "head.w": kept / 1e5})
    recipe = {"method": "simple_average", "target_modules": ["body"], "dtype": "float16",
              "models": [{"model": paths["a"], "task": "ta"}, {"model": paths["b"], "task": "tb"}]}
    with pytest.raises(NonFiniteTensorError, match="ta's tensor cast to float16. float16 cannot hold") as info:
        engine.merge(recipe, tmp_path / "out")
    assert info.value.tensor == "head.w" and not (tmp_path / "out").exists()
    engine.merge({**recipe, "dtype": "float32"}, tmp_path / "out")
    assert float(load_file(tmp_path / "out" / "heads" / "ta" / "model.safetensors")["head.w"][0, 0]) == 1e5
    nan_head = [{"model": paths["b"], "task": "tb"}, {"model": paths["c"], "task": "tc"}]
    engine.merge({**recipe, "models": nan_head}, tmp_path / "nan")  # tb's NaN is its own: copied as it is
    assert torch.isnan(load_file(tmp_path / "nan" / "heads" / "tb" / "model.safetensors")["head.w"][0, 0])


def test_nan_in_an_averaged_running_statistic_is_reported_too(tmp_path):
    """BatchNorm statistics are averaged, not merged, under methods that take a base: checked all the same."""
    bad = torch.ones(2)
    bad[1] = float("nan")
    paths = _save_models(tmp_path, base={"bn.running_var": torch.ones(2)}, a={"bn.running_var": bad},
                         b={"bn.running_var": torch.ones(2)})
    recipe = {"method": "task_arithmetic", "base_model": paths["base"],
              "models": [{"model": paths["a"]}, {"model": paths["b"]}]}
    with pytest.raises(NonFiniteTensorError) as info:
        engine.merge(recipe, tmp_path / "out")
    assert info.value.tensor == "bn.running_var" and info.value.models == ("model0",)
    assert not (tmp_path / "out").exists()


def test_the_merge_result_lists_every_file_it_wrote(tmp_path, convnext):
    out = tmp_path / "out"
    result = engine.merge(load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average")), out)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"config.json", "preprocessor_config.json"} <= written
    assert set(result.files) == written


def test_a_task_name_that_cannot_name_its_head_folder_is_refused_with_the_recipe(tmp_path, convnext):
    path = write_recipe(tmp_path / "r.yaml", convnext, "simple_average", extra={
        "models": [{"model": str(convnext.models["alpha"]), "task": "../alpha"},
                   {"model": str(convnext.models["beta"]), "task": "beta"}]})
    with pytest.raises(RecipeError, match="'models\\[0\\].task': task name '../alpha' cannot name the folder heads/"):
        load_recipe(path)  # before any header is read


class _Paths:
    """A minimal stand-in for ``_models.Family``: two model directories ``a`` and ``b``."""

    def __init__(self, root):
        self.base, self.backbone = root / "a", "encoder"
        self.models = {"a": root / "a", "b": root / "b"}


# ---------------------------------------------------------------- per-task heads on trained fixtures


@pytest.fixture(scope="module")
def trained():
    from hubmerge.fixtures import build_fixtures

    return build_fixtures(family="convnext")


def test_heads_that_fit_are_kept_bit_for_bit_with_their_dataset_labels(tmp_path, trained):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", trained, "task_arithmetic", target=False, extra={
        "models": [{"model": str(p), "task": t, "dataset": str(trained.datasets[t])} for t, p in trained.models.items()],
        "default_task": trained.tasks[2]}))
    merge_plan = engine.plan(recipe)
    assert merge_plan.target_modules == ("convnext",) and [h.task for h in merge_plan.heads] == list(trained.tasks)
    assert not any(h.reinitialized for h in merge_plan.heads)
    assert all(h.decision.label_source == "dataset" and h.decision.rows is None for h in merge_plan.heads)
    out = tmp_path / "out"
    engine.execute(merge_plan, out)
    index = json.loads((out / "hubmerge_heads.json").read_text())
    assert list(index["tasks"]) == list(trained.tasks) and index["default_task"] == trained.tasks[2]
    assert index["family"] == "convnext" and index["target_modules"] == ["convnext"]
    for task, path in trained.models.items():
        head = load_file(out / "heads" / task / "model.safetensors")
        original = state_dict(path)
        assert set(head) == {"classifier.weight", "classifier.bias"} == set(index["tasks"][task]["head_tensors"])
        for name, value in head.items():
            assert torch.equal(value, original[name]), name
        config = json.loads((out / "heads" / task / "config.json").read_text())
        names = datasets_names(trained.datasets[task])
        assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
        assert config["label2id"] == {n: i for i, n in enumerate(names)}
        assert config["hubmerge_head"] == {"reinitialized": False, "reason": "", "label_source": "dataset", "reordered": False}
        assert index["tasks"][task]["num_classes"] == len(names)
    root = json.loads((out / "config.json").read_text())
    assert root == json.loads((out / "heads" / trained.tasks[2] / "config.json").read_text())
    assert torch.equal(load_file(out / "model.safetensors")["classifier.weight"],
                       state_dict(trained.models[trained.tasks[2]])["classifier.weight"])


def datasets_names(path):
    import datasets

    return datasets.load_from_disk(str(path))["test"].features["label"].names


def test_registry_labels_land_in_the_configs(tmp_path, convnext):
    from hubmerge.vision.classnames import class_names

    # a known task whose 10-output head has placeholder labels gets the registry's names; an unknown
    # task (beta, labelled class_0..class_4) keeps the model's own
    model = tmp_path / "eurosat"
    shutil.copytree(convnext.models["alpha"], model)
    (model / "config.json").write_text(json.dumps(
        {**json.loads((model / "config.json").read_text()), "id2label": {str(i): f"LABEL_{i}" for i in range(10)}}))
    tensors = state_dict(model)
    tensors["classifier.weight"] = torch.cat([tensors["classifier.weight"]] * 4)[:10]
    tensors["classifier.bias"] = torch.cat([tensors["classifier.bias"]] * 4)[:10]
    save_file(tensors, model / "model.safetensors")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average", extra={
        "models": [{"model": str(model), "task": "eurosat"}, {"model": str(convnext.models["beta"]), "task": "beta"}]}))
    merge_plan = engine.plan(recipe)
    decisions = {h.task: h.decision for h in merge_plan.heads}
    assert decisions["eurosat"].label_source == "registry" and decisions["beta"].label_source == "config"
    engine.execute(merge_plan, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert list(config["id2label"].values()) == list(class_names("eurosat"))


def test_wrong_size_heads_are_reinitialised_deterministically_and_reported(tmp_path, trained):
    import datasets

    three = tmp_path / "three"  # the base model (10-class head) used for a 3-class task
    small = datasets.load_from_disk(str(trained.datasets["digits_low"]))
    small = small.filter(lambda row: row["label"] < 3).cast_column("label", datasets.ClassLabel(names=["0", "1", "2"]))
    small.save_to_disk(str(three))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", trained, "simple_average", extra={"models": [
        {"model": str(trained.models["digits_parity"]), "task": "digits_parity"},
        {"model": str(trained.base), "task": "first_three", "dataset": str(three)}]}))
    merge_plan = engine.plan(recipe)
    head = {h.task: h for h in merge_plan.heads}["first_three"]
    assert head.reinitialized and "10 outputs" in head.reason and head.labels == {0: "0", 1: "1", 2: "2"}
    assert merge_plan.to_dict()["head_decisions"]["first_three"]["reinitialized"] is True
    from hubmerge.plan_summary import summary_rows

    assert dict(summary_rows(merge_plan))["head: first_three"] == (  # the count once, in the reason
        "re-initialized: the head has 10 outputs but the task has 3 classes (from the dataset)")
    assert {t.name: t.action for t in head.tensors} == {"classifier.weight": "init", "classifier.bias": "init"}
    engine.execute(merge_plan, tmp_path / "out")
    engine.merge(recipe, tmp_path / "again")
    new = load_file(tmp_path / "out" / "heads" / "first_three" / "model.safetensors")
    assert torch.equal(new["classifier.weight"], load_file(tmp_path / "again" / "heads" / "first_three" / "model.safetensors")["classifier.weight"])
    base_head = state_dict(trained.base)["classifier.weight"]
    assert new["classifier.weight"].shape == (3, base_head.shape[1]) and new["classifier.weight"].dtype == base_head.dtype
    bound = 1 / base_head.shape[1] ** 0.5  # nn.Linear's: uniform in ±1/sqrt(fan_in)
    assert 0.9 * bound < new["classifier.weight"].abs().max() <= bound and new["classifier.weight"].std() > 0
    bias = new["classifier.bias"]  # nn.Linear's bound too, from a stream of its own: not the weight's first values
    assert bias.shape == (3,) and bias.abs().max() <= bound and not torch.equal(bias, new["classifier.weight"].flatten()[:3])
    config = json.loads((tmp_path / "out" / "heads" / "first_three" / "config.json").read_text())
    assert config["hubmerge_head"]["reinitialized"] and "3 classes" in config["hubmerge_head"]["reason"]
    index = json.loads((tmp_path / "out" / "hubmerge_heads.json").read_text())
    assert index["tasks"]["first_three"]["reinitialized"] and not index["tasks"]["digits_parity"]["reinitialized"]
    from hubmerge.card import collect_card, render_card  # the card flags it (its contract with this output)

    card = render_card(collect_card(tmp_path / "out"))
    assert "The head of **first_three** was re-initialized" in card.text  # a limitation, not the table alone
    assert "its accuracy is not meaningful until it is fine-tuned" in " ".join(card.text.split())


def test_reordered_dataset_labels_permute_the_head_rows(tmp_path, trained):
    import datasets

    from hubmerge.fixtures import accuracy
    from hubmerge.vision.loading import load_merged, model_labels

    swapped = tmp_path / "parity_swapped"  # digits_parity's data with its two classes in the other order
    data = datasets.load_from_disk(str(trained.datasets["digits_parity"]))
    features = data["test"].features.copy()
    features["label"] = datasets.ClassLabel(names=["odd", "even"])
    data.map(lambda row: {"label": 1 - row["label"]}).cast(features).save_to_disk(str(swapped))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", trained, "simple_average", extra={"models": [
        {"model": str(trained.models["digits_parity"]), "task": "digits_parity", "dataset": str(swapped)},
        {"model": str(trained.models["digits_low"]), "task": "digits_low"}]}))
    merge_plan = engine.plan(recipe)
    assert merge_plan.heads[0].decision.rows == (1, 0)
    from hubmerge.plan_summary import summary_rows

    assert dict(summary_rows(merge_plan))["head: digits_parity"] == (  # what `plan` shows before the merge
        "kept (fine-tuned), rows reordered to the dataset's labels; 2 classes from the dataset"
    )
    engine.execute(merge_plan, tmp_path / "out")
    head = load_file(tmp_path / "out" / "heads" / "digits_parity" / "model.safetensors")
    original = state_dict(trained.models["digits_parity"])
    assert torch.equal(head["classifier.weight"], original["classifier.weight"][[1, 0]])
    assert torch.equal(head["classifier.bias"], original["classifier.bias"][[1, 0]])
    model = load_merged(tmp_path / "out", "digits_parity")
    assert model_labels(model) == {0: "odd", 1: "even"} and accuracy(model, swapped) > 0.8


def test_labels_that_disagree_with_the_dataset_stop_the_plan(tmp_path, trained):
    import datasets

    from hubmerge.errors import HeadMismatchError

    other = tmp_path / "other"  # two classes, like digits_parity, but other ones
    data = datasets.load_from_disk(str(trained.datasets["digits_parity"]))
    data.cast_column("label", datasets.ClassLabel(names=["small", "large"])).save_to_disk(str(other))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", trained, "simple_average", extra={"models": [
        {"model": str(trained.models["digits_parity"]), "task": "digits_parity", "dataset": str(other)},
        {"model": str(trained.models["digits_low"]), "task": "digits_low"}]}))
    with pytest.raises(HeadMismatchError, match=r"task 'digits_parity': .*'even', 'odd' are not among"):
        engine.plan(recipe)


def test_target_prefix_that_matches_nothing(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average", extra={"target_modules": ["vit"]}))
    with pytest.raises(PlanError, match="convnext"):
        engine.plan(recipe)


def test_path_traversal_in_weight_map(tmp_path, convnext):
    family, target = broken_copy(tmp_path, convnext)
    names = list(state_dict(target))
    (target / "model.safetensors").unlink()  # beside it, model.safetensors is the model, as in transformers
    (target / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: "../../etc/model.safetensors" for n in names}})
    )
    expect_plan_error(tmp_path, family, ShardIndexError, "outside the model directory")


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_nan_or_inf_in_an_input_is_reported_and_nothing_written(tmp_path, convnext, bad_value):
    family, target = broken_copy(tmp_path, convnext)
    tensors = state_dict(target)
    name = "convnext.encoder.stages.3.layers.0.pwconv2.weight"
    tensors[name][0, 0] = bad_value
    save_file(tensors, target / "model.safetensors")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "task_arithmetic"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "hubmerge_recipe.yaml").write_text("previous output")
    with pytest.raises(NonFiniteTensorError) as info:
        engine.merge(recipe, out, overwrite=True)
    assert info.value.tensor == name and info.value.models == ("beta",)
    assert [p.name for p in out.iterdir()] == ["hubmerge_recipe.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "out", "r.yaml"]


def test_failure_midway_leaves_the_output_untouched(tmp_path, convnext, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "ties"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "hubmerge_recipe.yaml").write_text("previous output")
    calls = {"n": 0}
    original = LocalSource.read_into

    def flaky(self, path, offset, buffer):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RangeReadError(self.where(path), "disk fell off", offset=offset, length=len(buffer))
        return original(self, path, offset, buffer)

    monkeypatch.setattr(LocalSource, "read_into", flaky)
    with pytest.raises(RangeReadError, match="disk fell off"):
        engine.merge(recipe, out, overwrite=True, group_bytes=64 * 1024)
    assert [p.name for p in out.iterdir()] == ["hubmerge_recipe.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.yaml"]


def test_models_in_a_hugging_face_cache_snapshot_merge_as_from_their_own_folders(tmp_path, convnext):
    """A snapshot's files are symlinks into ../../blobs/ (`snapshot_download()` returns such paths): every read
    of them said "path escapes the model directory"."""
    own = load_recipe(write_recipe(tmp_path / "own.yaml", convnext, "ties"))
    cached = load_recipe(write_recipe(tmp_path / "cached.yaml", convnext, "ties", extra={
        "base_model": str(cache_snapshot(convnext.base, tmp_path / "hub")),
        "models": [{"model": str(cache_snapshot(path, tmp_path / "hub")), "task": task}
                   for task, path in convnext.models.items()]}))
    engine.merge(own, tmp_path / "a")
    engine.merge(cached, tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "b" / "heads").iterdir()) == sorted(convnext.models)
    assert (tmp_path / "b" / "preprocessor_config.json").read_bytes() == (
        convnext.base / "preprocessor_config.json").read_bytes()  # a snapshot's links into its blobs are its own


def test_an_inputs_links_out_of_its_folder_and_its_reports_are_not_copied(tmp_path, convnext):
    """A cloned repo's `notes.txt -> ~/.cache/huggingface/token` was copied into the output, and pushed; its
    eval_results.json became the merge's results in the card's metadata, and the Trainer's all_results.json
    and trainer_state.json (that input's accuracy and training log) went out as the merge's."""
    base = tmp_path / "base"
    shutil.copytree(convnext.base, base)
    (tmp_path / "token").write_text("hf_secret")
    (base / "notes.txt").symlink_to(tmp_path / "token")
    (base / "eval_results.json").write_text('{"digits_low": {"accuracy": 0.999}}')
    (base / "EVAL_SCOPE.JSON").write_text("{}")
    (base / "LICENSE").write_text("kept")
    trainer_reports = ("all_results.json", "train_results.json", "test_results.json", "predict_results.json",
                       "trainer_state.json")  # the Trainer's, of this input
    for name in trainer_reports:
        (base / name).write_text('{"eval_accuracy": 0.999}')
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "task_arithmetic", extra={"base_model": str(base)}))
    engine.merge(recipe, tmp_path / "out")
    assert not any((tmp_path / "out" / name).exists() for name in trainer_reports)
    assert not (tmp_path / "out" / "EVAL_SCOPE.JSON").exists()  # what a case-insensitive disk calls eval_scope.json
    assert not (tmp_path / "out" / "notes.txt").exists() and not (tmp_path / "out" / "eval_results.json").exists()
    assert (tmp_path / "out" / "LICENSE").read_text() == "kept"
    # config.json is read to make the output's own: a link out of the folder would be published as that
    (tmp_path / "credentials.json").write_text('{"model_type": "convnext", "refresh_token": "secret"}')
    (base / "config.json").unlink()
    (base / "config.json").symlink_to(tmp_path / "credentials.json")
    with pytest.raises(PlanError, match="config.json links to a file outside the model's folder"):
        engine.merge(recipe, tmp_path / "again")


def test_existing_output_is_refused_before_anything_is_read(tmp_path, convnext, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "hubmerge_recipe.yaml").write_text("x")  # an earlier output
    monkeypatch.setattr(engine, "plan", lambda *a, **k: pytest.fail("planned before checking the output"))
    with pytest.raises(OutputExistsError, match=r"--overwrite \(from Python: overwrite=True\)"):
        engine.merge(recipe, out)
    (tmp_path / "empty").touch()  # it was "already exists and is not empty"
    with pytest.raises(OutputExistsError, match="output '.*empty' is a file, not an earlier output"):
        engine.merge(recipe, tmp_path / "empty")


def test_overwrite_replaces_only_an_earlier_output(tmp_path, convnext):
    """`merge -o results --overwrite` deleted a folder of the user's own files (no merge wrote it) and put the
    merge in its place; only a folder holding hubmerge_recipe.yaml, as every output does, is replaced."""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average"))
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "runs.csv").write_text("a week of work")
    (tmp_path / "notes.txt").write_text("mine")
    for target in (mine, tmp_path / "notes.txt"):
        for overwrite in (False, True):  # without --overwrite, it is not offered as the way out
            with pytest.raises(OutputNotOursError, match="even with --overwrite. Choose another output directory"):
                engine.merge(recipe, target, overwrite=overwrite)
    with pytest.raises(OutputNotOursError):  # execute checks again: Python may execute a plan directly
        engine.execute(engine.plan(recipe), mine, overwrite=True)
    assert (mine / "runs.csv").read_text() == "a week of work" and (tmp_path / "notes.txt").read_text() == "mine"
    engine.merge(recipe, tmp_path / "merged")
    engine.merge(recipe, tmp_path / "merged", overwrite=True)  # an earlier output is replaced
    (tmp_path / "empty").mkdir()
    engine.merge(recipe, tmp_path / "empty")  # an empty folder holds nothing to lose


def test_an_output_that_is_or_holds_an_input_is_refused_even_with_overwrite(tmp_path, convnext, monkeypatch):
    """`merge r.yaml -o low --overwrite` replaced the input model `low` with the merge, and `-o .` deleted the
    folder it ran in, inputs and recipe with it."""
    for name, path in [("base", convnext.base), *convnext.models.items()]:
        shutil.copytree(path, tmp_path / name)
    write_recipe(tmp_path / "r.yaml", convnext, "ties", extra={
        "base_model": "./base", "models": [{"model": f"./{task}", "task": task} for task in convnext.models]})
    before = snapshot(tmp_path)
    task = next(iter(convnext.models))
    monkeypatch.chdir(tmp_path)
    for output, message in [(task, f"output '.*{task}' is the input model of task '{task}'"),
                            (".", "output '.*' is the current directory"),
                            ("..", f"output '.*' holds {tmp_path}, the current directory")]:
        with pytest.raises(OutputHoldsInputError, match=message + ": writing the merge there would delete it"):
            engine.merge("r.yaml", output, overwrite=True)
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(OutputHoldsInputError, match=f"holds {tmp_path / 'r.yaml'}, the recipe file"):
        engine.merge(tmp_path / "r.yaml", tmp_path, overwrite=True)
    with pytest.raises(OutputHoldsInputError, match="r.yaml' is the recipe file"):
        engine.merge(tmp_path / "r.yaml", tmp_path / "r.yaml", overwrite=True)  # an output replaces a file too
    recipe = load_recipe(tmp_path / "r.yaml")
    with pytest.raises(OutputHoldsInputError, match=f"holds {tmp_path / 'base'}, the base model"):
        engine.merge(recipe, tmp_path, overwrite=True)
    (tmp_path / "data").mkdir()
    recipe = replace(recipe, models=(replace(recipe.models[0], dataset=DatasetRef(str(tmp_path / "data"))),
                                     *recipe.models[1:]))
    with pytest.raises(OutputHoldsInputError, match=f"is the dataset of task '{task}'"):
        engine.merge(recipe, tmp_path / "data", overwrite=True)
    (tmp_path / "data").rmdir()
    assert snapshot(tmp_path) == before
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(OutputHoldsInputError, match="is your home directory"):
        engine.merge(tmp_path / "r.yaml", tmp_path / "home", overwrite=True)
    engine.merge(tmp_path / "r.yaml", tmp_path / "merged")  # beside its inputs is fine
    engine.merge(tmp_path / "r.yaml", tmp_path / "merged", overwrite=True)


def test_an_output_its_disk_cannot_hold_is_refused_before_anything_is_read(tmp_path, convnext, monkeypatch):
    import collections
    import shutil as real_shutil

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average"))
    merge_plan = engine.plan(recipe)
    usage = collections.namedtuple("usage", "total used free")
    asked: list[str] = []

    def disk_usage(path):
        asked.append(str(path))
        return usage(10**12, 0, merge_plan.bytes_to_write)  # the tensors would fit, the rest would not

    monkeypatch.setattr(real_shutil, "disk_usage", disk_usage)
    reads: list[int] = []
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(OutputSpaceError, match="needs .* but its disk has .* free") as info:
        engine.execute(merge_plan, target, on_progress=lambda done, total: reads.append(done))
    assert info.value.path == str(target) and isinstance(info.value, OSError)
    assert asked == [str(tmp_path)] and reads == [] and not (tmp_path / "new").exists()
    monkeypatch.setattr(real_shutil, "disk_usage", lambda path: usage(10**12, 0, 10**12))
    assert engine.execute(merge_plan, target).output == target


def test_a_plan_prints_as_one_line(tmp_path, convnext):
    merge_plan = engine.plan(load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "ties")))
    counts = merge_plan.counts
    assert repr(merge_plan) == (
        f"MergePlan(ties, {len(merge_plan.inputs)} inputs, tensors: {counts['merged']} merged, "
        f"{counts['copied']} copied, {counts['head']} head, {counts['skipped']} skipped, "
        f"read {human_bytes(merge_plan.bytes_to_read)}, write {human_bytes(merge_plan.bytes_to_write)})"
    )
    engine.close_plan(merge_plan)


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (999, "999 B"), (1000, "1.00 kB"), (1_234_567, "1.23 MB"), (2.5e12, "2.50 TB"),
     (999.6, "1.00 kB"), (999_994, "999.99 kB"), (999_995, "1.00 MB"), (999_999_999_999, "1.00 TB")],  # no "1000.00"
)
def test_sizes_are_in_decimal_units_as_the_hub_shows_them(n, text):
    assert human_bytes(n) == text


def test_plan_and_merge_take_a_recipe_file_or_dict_as_they_take_a_recipe(tmp_path, convnext):
    """``hubmerge.merge("recipe.yaml", out)``, as the package docstring shows, not only a loaded Recipe."""
    path = write_recipe(tmp_path / "r.yaml", convnext, "simple_average")
    loaded = engine.plan(load_recipe(path))
    for other in (engine.plan(str(path)), engine.plan(yaml.safe_load(path.read_text()))):
        assert other.recipe == loaded.recipe and other.to_dict() == loaded.to_dict()
        engine.close_plan(other)
    engine.close_plan(loaded)
    engine.merge(path, tmp_path / "out")
    with pytest.raises(RecipeError, match="does not exist"):
        engine.plan(tmp_path / "missing.yaml")


def test_a_refused_execute_closes_the_plans_files(tmp_path, convnext):
    """A long-lived process (the app) that gets OutputExistsError or a missing device must not keep every
    input file open: the refusal closes the plan as a finished merge does."""
    import contextlib
    from dataclasses import replace

    inputs = tmp_path / "inputs"  # a copy of its own: no other test holds these files open

    def copied(path):
        return shutil.copytree(path, inputs / path.name)

    family = replace(convnext, base=copied(convnext.base), models={t: copied(p) for t, p in convnext.models.items()})

    def open_inputs() -> int:  # this process's descriptors on the input files, whatever else it has open
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor is gone by now
                count += os.readlink(f"/proc/self/fd/{fd}").startswith(f"{inputs}/")
        return count

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "simple_average"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("mine")
    merge_plan = engine.plan(recipe)
    assert open_inputs() > 0  # planning read the headers through open files
    with pytest.raises(OutputExistsError):
        engine.execute(merge_plan, tmp_path / "out")
    assert open_inputs() == 0
    assert engine.execute(merge_plan, tmp_path / "other").output == tmp_path / "other"  # still usable


def test_cancel_stops_and_writes_nothing(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average"))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        engine.execute(engine.plan(recipe), tmp_path / "out", cancel=cancel)
    assert not (tmp_path / "out").exists()


def test_a_merge_that_fails_midway_ends_its_reads_before_raising(tmp_path):
    """The reader threads stop when execute raises, not when the caller lets go of the error (a web app's
    session, a test's ``pytest.raises``, keeps it), and no read runs on after the inputs are closed."""
    bad = torch.ones(2)
    bad[0] = float("nan")
    tensors = {f"w{i}": torch.ones(2) for i in range(12)}
    paths = _save_models(tmp_path, a={**tensors, "w0": bad}, b=tensors)
    recipe = {"method": "simple_average", "models": [{"model": paths["a"]}, {"model": paths["b"]}]}
    with pytest.raises(NonFiniteTensorError) as info:
        engine.merge(recipe, tmp_path / "out", group_bytes=1, workers=2)
    assert info.value.tensor == "w0"
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hubmerge-read")]


def test_progress_reaches_the_total(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "simple_average"))
    seen = []
    merge_plan = engine.plan(recipe)
    total = merge_plan.bytes_to_read
    engine.execute(merge_plan, tmp_path / "out", on_progress=lambda done, total: seen.append((done, total)),
                   group_bytes=32 * 1024)
    assert len(seen) > 5 and seen[-1] == (total, total)
    assert all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))


def test_small_budgets_give_identical_results(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "task_arithmetic"))
    engine.merge(recipe, tmp_path / "a")
    engine.merge(recipe, tmp_path / "b", group_bytes=1, budget_bytes=1, workers=1)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_device(tmp_path, convnext):
    with pytest.raises(RecipeError, match="device"):
        engine.resolve_device("cuda:99" if torch.cuda.is_available() else "cuda")
    with pytest.raises(RecipeError, match="unknown device 'tpu:x'; use auto, cpu or cuda"):  # execute(device=...)
        engine.resolve_device("tpu:x")


@pytest.mark.parametrize("build", [None, "13.0"])
def test_a_cuda_device_this_machine_lacks_says_why_and_what_to_use(build, monkeypatch, capsys, tmp_path, convnext):
    """`--device cuda` on a CPU-only machine said only that there was no CUDA device, not what to ask for."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", build)
    why = "a build without CUDA" if build is None else "built for CUDA 13.0. finds no usable GPU"
    with pytest.raises(RecipeError, match=f"CUDA was asked for but this torch .*{why}.*; use cpu, or auto"):
        engine.resolve_device("cuda:0")
    recipe = write_recipe(tmp_path / "r.yaml", convnext, "simple_average")
    assert main(["merge", str(recipe), "-o", str(tmp_path / "out"), "--device", "cuda", "--quiet"]) == 1
    assert "--device cpu, or `device: auto` in the recipe" in capsys.readouterr().err


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_an_apple_gpu_this_machine_lacks_is_a_typed_error(tmp_path, convnext, capsys):
    """The recipe accepts `device: mps`; without one, torch's RuntimeError came out as an 'unexpected error'."""
    with pytest.raises(RecipeError, match="mps .an Apple GPU. was asked for but this machine has none"):
        engine.resolve_device("mps")
    recipe = write_recipe(tmp_path / "r.yaml", convnext, "simple_average")
    assert main(["merge", str(recipe), "-o", str(tmp_path / "out"), "--device", "mps", "--quiet"]) == 1
    assert "RecipeError" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["simple_average", "ties", "dare"])
def test_gpu_merge_equals_cpu_merge(tmp_path, convnext, method):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, method))
    engine.merge(recipe, tmp_path / "cpu", device="cpu")
    engine.merge(recipe, tmp_path / "gpu", device="cuda")
    a, b = load_file(tmp_path / "cpu" / "model.safetensors"), load_file(tmp_path / "gpu" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_the_output_keeps_its_default_inputs_tensors_in_that_inputs_file_order(tmp_path):
    """Sequential reads: tensors come in the order of the default input's shards, then of each shard's data
    (by absolute offset alone, the second shard's small header put its tensor before the first's)."""
    (tmp_path / "a").mkdir()
    save_file({"b1": torch.zeros(100), "b2": torch.zeros(1)}, tmp_path / "a" / "model-00001-of-00002.safetensors")
    save_file({"a": torch.zeros(1)}, tmp_path / "a" / "model-00002-of-00002.safetensors")
    (tmp_path / "a" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "b1": "model-00001-of-00002.safetensors", "b2": "model-00001-of-00002.safetensors",
        "a": "model-00002-of-00002.safetensors"}}))
    paths = _save_models(tmp_path, b={"a": torch.ones(1), "b1": torch.ones(100), "b2": torch.ones(1)})
    merge_plan = engine.plan({"method": "simple_average", "models": [{"model": str(tmp_path / "a")},
                                                                     {"model": paths["b"]}]})
    engine.close_plan(merge_plan)
    assert [t.name for t in merge_plan.tensors] == ["b1", "b2", "a"]


def test_an_integer_tensor_outside_the_targets_keeps_its_dtype_beside_a_recipe_dtype(tmp_path):
    paths = _save_models(tmp_path, a={"enc.w": torch.zeros(2), "steps": torch.tensor(3)},
                         b={"enc.w": torch.ones(2), "steps": torch.tensor(4)})
    for dtype in ({"dtype": "float16"}, {}):
        merge_plan = engine.plan({"method": "simple_average", "target_modules": ["enc"], **dtype,
                                  "models": [{"model": paths["a"]}, {"model": paths["b"]}]})
        engine.close_plan(merge_plan)
        assert {t.name: t.out_dtype for t in merge_plan.tensors}["steps"] == "I64"


def test_a_complex_tensor_to_merge_is_refused(tmp_path):
    paths = _save_models(tmp_path, a={"w": torch.zeros(2, dtype=torch.complex64)},
                         b={"w": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(UnsupportedDtypeError, match="C64"):
        engine.plan({"method": "simple_average", "models": [{"model": paths["a"]}, {"model": paths["b"]}]})


def test_a_task_named_as_another_input_leaves_each_inputs_missing_tensors_said(tmp_path):
    """A task 'base' beside the base model, or 'model1' beside an untasked second model: one label for both
    inputs hid the one's missing tensor behind the other's, and the merge ended in a KeyError."""
    paths = _save_models(tmp_path, base={"w": torch.zeros(2)}, a={"w": torch.ones(2), "x": torch.ones(1)},
                         b={"w": torch.ones(2), "x": torch.ones(1)}, c={"w": torch.ones(2)})
    with pytest.raises(MissingTensorError, match="x: missing in base_model\n"):
        engine.plan({"method": "task_arithmetic", "base_model": paths["base"],
                     "models": [{"model": paths["a"], "task": "base"}, {"model": paths["b"], "task": "beta"}]})
    with pytest.raises(MissingTensorError, match=r"x: missing in models\[1\]\n"):
        engine.plan({"method": "simple_average", "models": [{"model": paths["a"], "task": "model1"},
                                                            {"model": paths["c"]}]})
    merge_plan = engine.plan({"method": "simple_average", "base_model": paths["base"],
                              "models": [{"model": paths["c"], "task": "base"}, {"model": paths["c"]}]})
    engine.close_plan(merge_plan)
    assert [m.label for m in merge_plan.inputs] == ["base_model", "base", "model1"]


def test_a_plans_counts_and_bytes_take_its_heads_and_averaged_statistics(tmp_path):
    tensors = {"enc.w": torch.zeros(4), "enc.bn.running_mean": torch.zeros(2), "head.w": torch.zeros(3),
               "steps": torch.tensor(1)}
    paths = _save_models(tmp_path, base=tensors, a=tensors, b=tensors)
    recipe = {"method": "task_arithmetic", "base_model": paths["base"], "target_modules": ["enc"],
              "models": [{"model": paths["a"], "task": "alpha"}, {"model": paths["b"], "task": "beta"}]}
    merge_plan = engine.plan(recipe)
    engine.close_plan(merge_plan)
    assert merge_plan.counts == {"merged": 1, "averaged": 1, "copied": 2, "head": 4, "skipped": 2}
    # the root: 16 + 8 merged and averaged, head.w 12 and steps 8 copied; each task's head the same 12 + 8
    assert merge_plan.bytes_to_write == 16 + 8 + 12 + 8 + 2 * (12 + 8)
    statistics_only = engine.plan(recipe | {"target_modules": ["enc.bn"]})
    engine.close_plan(statistics_only)
    assert statistics_only.merged_dtypes == ("float32",)  # averaged tensors are written in it too


def test_a_small_plans_peak_memory_is_its_own_size_not_the_budgets(tmp_path):
    """Under the read-ahead budget and one group, the estimate is what the plan reads (held ahead, then as
    read) plus its working set: three copies for a running sum, one per input and the result otherwise."""
    paths = _save_models(tmp_path, base={"w": torch.zeros(64)}, a={"w": torch.ones(64)}, b={"w": torch.ones(64)})
    for method, copies in (("task_arithmetic", 3), ("ties", 4)):
        merge_plan = engine.plan({"method": method, "base_model": paths["base"],
                                  "models": [{"model": paths["a"]}, {"model": paths["b"]}]})
        engine.close_plan(merge_plan)
        assert merge_plan.bytes_to_read == 3 * 64 * 4
        assert merge_plan.peak_memory_estimate() == 2 * merge_plan.bytes_to_read + copies * 64 * 4
        assert "tensors: 1 merged, 0 copied, 0 head, 0 skipped," in repr(merge_plan)  # only 'averaged' left out at 0


def test_per_model_weights_reach_a_method_that_is_no_running_sum(tmp_path):
    """TIES takes each model's weight as its task vector's factor: the merge must hand them over."""
    a, b = torch.tensor([1.0, -2.0, 3.0, 0.5]), torch.tensor([2.0, 1.0, -1.0, 0.25])
    paths = _save_models(tmp_path, base={"w": torch.zeros(4)}, a={"w": a}, b={"w": b})
    recipe = Recipe.from_dict({"method": "ties", "base_model": paths["base"],
                               "models": [{"model": paths["a"], "weight": 1.0}, {"model": paths["b"], "weight": 0.25}]})
    engine.merge(recipe, tmp_path / "out")
    merged = load_file(tmp_path / "out" / "model.safetensors")["w"]
    method, params = get_method("ties"), dict(recipe.parameters)
    assert torch.allclose(merged, method.fn([a, b], base=torch.zeros(4), weights=[1.0, 0.25], **params).float())
    assert not torch.allclose(merged, method.fn([a, b], base=torch.zeros(4), weights=None, **params).float())


def test_large_finite_values_whose_sum_overflows_are_no_nan_or_inf(tmp_path):
    """The check sums each merged tensor once: a sum past float32's range is looked at value by value."""
    big = torch.full((4,), 3e38)
    paths = _save_models(tmp_path, a={"w": big}, b={"w": big})
    engine.merge({"method": "simple_average", "models": [{"model": paths["a"]}, {"model": paths["b"]}]},
                 tmp_path / "out")
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["w"], big)


def test_the_recipes_target_modules_win_over_the_familys_backbone(tmp_path, convnext):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", convnext, "task_arithmetic",
                                      extra={"target_modules": ["convnext.encoder"]}))
    merge_plan = engine.plan(recipe)
    engine.close_plan(merge_plan)
    assert merge_plan.target_modules == ("convnext.encoder",)
    actions = {t.name: t.action for t in merge_plan.tensors}
    assert {a for n, a in actions.items() if n.startswith("convnext.embeddings.")} == {"copy"}
    assert "merge" in {a for n, a in actions.items() if n.startswith("convnext.encoder.")}


def test_a_random_methods_seed_per_tensor_stays_what_it_was():
    """DARE drops each tensor's entries with a generator seeded from the recipe's seed and the tensor's name:
    the same recipe must give the same merge in every hubmerge version."""
    assert merger._seed_for(0, "convnext.w") == 5018118928687955268
    assert merger._seed_for(42, "a") == 5137005794012959639


def test_execute_refuses_to_overwrite_an_earlier_output_it_reads_as_an_input(tmp_path):
    """An earlier output is one execute may replace, but not while the plan reads it as an input."""
    paths = _save_models(tmp_path, a={"w": torch.zeros(2)}, b={"w": torch.ones(2)})
    engine.merge({"method": "simple_average", "models": [{"model": paths["a"]}, {"model": paths["b"]}]},
                 tmp_path / "earlier")
    merge_plan = engine.plan({"method": "simple_average",
                              "models": [{"model": str(tmp_path / "earlier")}, {"model": paths["b"]}]})
    with pytest.raises(OutputHoldsInputError, match="is the input model of models\\[0\\]"):
        engine.execute(merge_plan, tmp_path / "earlier", overwrite=True)


def test_the_output_weights_say_who_merged_them_and_how(tmp_path):
    from safetensors import safe_open

    paths = _save_models(tmp_path, a={"w": torch.zeros(2)}, b={"w": torch.ones(2)})
    engine.merge({"method": "simple_average", "models": [{"model": paths["a"]}, {"model": paths["b"]}]},
                 tmp_path / "out")
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as weights:
        assert weights.metadata() == {"format": "pt", "merged_by": "hubmerge", "method": "simple_average"}
