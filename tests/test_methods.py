"""Merge methods against direct torch computations and hand-computed cases; the registry's schemas."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Optional

import pytest
import torch

from hubmerge.errors import MethodParameterError, UnknownMethodError
from hubmerge.methods import get_method, list_methods

T = torch.tensor


def models(n=4, shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + 0.1 * torch.randn(shape, generator=g) for _ in range(n)]


def call(name, tensors, base=None, weights=None, seed_generator=None, **params):
    method = get_method(name)
    kwargs = method.resolve_params(params)
    if method.accepts_base:
        kwargs["base"] = base
    if method.uses_weights:
        kwargs["weights"] = weights
    if method.needs_generator:
        kwargs["generator"] = seed_generator or torch.Generator().manual_seed(kwargs["seed"])
    return method.fn(tensors, **kwargs)


def apply_linear(name, tensors, base, weights=None, **params):
    """merged = anchor + sum_i c_i (t_i - anchor), written out by hand."""
    method = get_method(name)
    form = method.linear(len(tensors), weights, method.resolve_params(params))
    anchor = base if form.anchored else torch.zeros_like(tensors[0])
    return anchor + sum(c * (t - anchor) for c, t in zip(form.coefficients, tensors))


# ----------------------------------------------------------------------------- direct torch


def test_simple_average():
    _, ts = models()
    torch.testing.assert_close(call("simple_average", ts), (ts[0] + ts[1] + ts[2] + ts[3]) / 4)


def test_weighted_average_normalised_and_not():
    _, ts = models(3)
    w = [1.0, 2.0, 5.0]
    torch.testing.assert_close(call("weighted_average", ts, weights=w), (ts[0] + 2 * ts[1] + 5 * ts[2]) / 8)
    torch.testing.assert_close(call("weighted_average", ts, weights=w, normalize=False), ts[0] + 2 * ts[1] + 5 * ts[2])


def test_weighted_average_needs_usable_weights():
    _, ts = models(2)
    with pytest.raises(MethodParameterError, match="sum to 0"):
        call("weighted_average", ts, weights=[1.0, -1.0])
    with pytest.raises(MethodParameterError, match="2 weights for"):
        call("weighted_average", ts + ts[:1], weights=[1.0, 1.0])


def test_task_arithmetic():
    base, ts = models()
    expected = base + 0.3 * sum(t - base for t in ts)
    torch.testing.assert_close(call("task_arithmetic", ts, base), expected)
    weighted = base + 0.5 * (1 * (ts[0] - base) + 2 * (ts[1] - base))
    torch.testing.assert_close(call("task_arithmetic", ts[:2], base, weights=[1, 2], scaling_factor=0.5), weighted)


@pytest.mark.parametrize(
    "name, params, weights",
    [("simple_average", {}, None), ("weighted_average", {}, [1, 3, 2, 2]),
     ("weighted_average", {"normalize": False}, [1, 3, 2, 2]), ("task_arithmetic", {"scaling_factor": 0.7}, None),
     ("task_arithmetic", {}, [0.5, 1, 1.5, 2])],
)
def test_linear_rules_reproduce_the_function(name, params, weights):
    base, ts = models()
    torch.testing.assert_close(apply_linear(name, ts, base, weights, **params), call(name, ts, base, weights, **params))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_equals_a_direct_computation(dtype):
    """float32 is trimmed by the radix selection, float64 (an output written in it) by kthvalue."""
    base, ts = models(3, shape=(40,))
    base, ts = base.to(dtype), [t.to(dtype) for t in ts]
    deltas = torch.stack([t - base for t in ts])
    k = math.ceil(0.3 * 40)
    trimmed = torch.zeros_like(deltas)
    for i, d in enumerate(deltas):
        idx = d.abs().topk(k).indices
        trimmed[i, idx] = d[idx]
    sign = trimmed.sum(0).sign()
    agree = (trimmed.sign() == sign) & (trimmed != 0)
    expected_sum = base + 0.3 * (trimmed * agree).sum(0)
    expected_mean = base + 0.3 * (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    torch.testing.assert_close(call("ties", ts, base, density=0.3), expected_sum)
    torch.testing.assert_close(call("ties", ts, base, density=0.3, disjoint_merge="mean"), expected_mean)


def test_ties_hand_computed():
    base = torch.ones(5)
    d = [T([1.0, -2.0, 0.5, 0.0, 3.0]), T([-1.5, 1.0, 0.2, 0.4, -0.1]), T([0.3, -0.6, -0.7, 0.9, 2.0])]
    # density 0.4 of 5 entries: keep ceil(2.0) = 2 per task vector
    #   d1 -> [0, -2, 0, 0, 3]   d2 -> [-1.5, 1, 0, 0, 0]   d3 -> [0, 0, 0, 0.9, 2]
    # elected signs from the sums [-1.5, -1, 0, 0.9, 5] -> [-, -, 0, +, +]
    # agreeing entries: [-1.5], [-2], [], [0.9], [3, 2]
    #   sum  -> [-1.5, -2, 0, 0.9, 5]     mean -> [-1.5, -2, 0, 0.9, 2.5]
    # merged = 1 + 0.5 * that
    tensors = [base + x for x in d]
    torch.testing.assert_close(call("ties", tensors, base, density=0.4, scaling_factor=0.5),
                               T([0.25, 0.0, 1.0, 1.45, 3.5]))
    torch.testing.assert_close(call("ties", tensors, base, density=0.4, scaling_factor=0.5, disjoint_merge="mean"),
                               T([0.25, 0.0, 1.0, 1.45, 2.25]))


def test_ties_keeps_exactly_k_when_magnitudes_tie():
    base = torch.zeros(6)
    t = T([1.0, -1.0, 1.0, -1.0, 1.0, 0.5])  # five entries tie for the largest magnitude
    merged = call("ties", [t], base, density=0.5, scaling_factor=1.0)  # keep ceil(3) = 3: the first three
    torch.testing.assert_close(merged, T([1.0, -1.0, 1.0, 0.0, 0.0, 0.0]))


def _top_k_by_magnitude(delta, k):
    """``delta`` with all but its ``k`` largest-magnitude entries zeroed (1-D, distinct magnitudes)."""
    kept = torch.zeros_like(delta)
    idx = delta.abs().topk(k).indices
    kept[idx] = delta[idx]
    return kept


def test_ties_rounds_a_fractional_keep_count_up():
    """density x size is rarely a whole number: density 0.3 of 5 entries keeps ceil(1.5) = 2, as the
    help text says; rounding down would silently keep half of what the user asked for."""
    base, ts = models(1, shape=(5,), seed=3)
    merged = call("ties", ts, base, density=0.3, scaling_factor=1.0)
    torch.testing.assert_close(merged, base + _top_k_by_magnitude(ts[0] - base, 2))
    assert int(torch.count_nonzero(merged - base)) == 2


@pytest.mark.parametrize("density", [0.07, 0.14, 0.56])
def test_ties_keep_count_is_not_inflated_by_float_error(density):
    """0.07 * 100 is 7.000000000000001 in floats: a bare ceil keeps 8 entries where the user asked for 7."""
    base, ts = models(1, shape=(100,), seed=4)
    k = round(density * 100)
    merged = call("ties", ts, base, density=density, scaling_factor=1.0)
    assert int(torch.count_nonzero(merged - base)) == k
    torch.testing.assert_close(merged, base + _top_k_by_magnitude(ts[0] - base, k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_and_breadcrumbs_with_density_zero_are_the_base(dtype):
    """Keeping no entry selects nothing (no k-th largest of zero entries is asked for), in either dtype."""
    base, ts = models(2, shape=(30,))
    base, ts = base.to(dtype), [t.to(dtype) for t in ts]
    assert torch.equal(call("ties", ts, base, density=0.0), base)
    assert torch.equal(call("breadcrumbs", ts, base, density=0.0, gamma=0.0), base)


def test_ties_with_density_one_and_one_model_is_task_arithmetic():
    base, ts = models(1)
    torch.testing.assert_close(call("ties", ts, base, density=1.0), call("task_arithmetic", ts, base))


def test_dare_hand_computed():
    base = torch.zeros(4)
    tensors = [T([1.0, 2.0, 3.0, 4.0]), T([0.5, -1.0, 1.5, 2.0])]
    # torch.rand((2, 4)) with seed 0 = [[0.4963, 0.7682, 0.0885, 0.1320], [0.3074, 0.6341, 0.4901, 0.8964]]
    # kept where >= 0.5: [[F, T, F, F], [F, T, F, T]]; rescaled by 1 / (1 - 0.5) = 2:
    #   d1 -> [0, 4, 0, 0]   d2 -> [0, -2, 0, 4]
    # linear: sum = [0, 2, 0, 4]; ties: signs [0, +, 0, +], agreeing [4], [4] -> [0, 4, 0, 4]
    gen = lambda: torch.Generator().manual_seed(0)
    torch.testing.assert_close(call("dare", tensors, base, seed_generator=gen(), scaling_factor=1.0), T([0.0, 2.0, 0.0, 4.0]))
    torch.testing.assert_close(call("dare", tensors, base, seed_generator=gen(), scaling_factor=1.0, combine="ties"),
                               T([0.0, 4.0, 0.0, 4.0]))
    no_rescale = call("dare", tensors, base, seed_generator=gen(), scaling_factor=1.0, rescale=False)
    torch.testing.assert_close(no_rescale, T([0.0, 1.0, 0.0, 2.0]))


def test_dare_ties_mean_averages_the_agreeing_entries():
    """DARE-TIES with disjoint_merge mean: same drops as test_dare_hand_computed, where both models keep
    entry 1 with the same sign: d1 -> [0, 4, 0, 0], d2 -> [0, 2, 0, 4];
    sum [0, 6, 0, 4], mean [0, 3, 0, 4]."""
    base = torch.zeros(4)
    tensors = [T([1.0, 2.0, 3.0, 4.0]), T([0.5, 1.0, 1.5, 2.0])]
    gen = lambda: torch.Generator().manual_seed(0)
    summed = call("dare", tensors, base, seed_generator=gen(), scaling_factor=1.0, combine="ties")
    torch.testing.assert_close(summed, T([0.0, 6.0, 0.0, 4.0]))
    mean = call("dare", tensors, base, seed_generator=gen(), scaling_factor=1.0, combine="ties",
                disjoint_merge="mean")
    torch.testing.assert_close(mean, T([0.0, 3.0, 0.0, 4.0]))


def test_dare_equals_a_direct_computation_and_is_seeded():
    base, ts = models(3, shape=(10, 10))
    generator = torch.Generator().manual_seed(7)
    mask = torch.rand((3, 100), generator=torch.Generator().manual_seed(7)) >= 0.3
    deltas = torch.stack([t - base for t in ts]).reshape(3, -1)
    expected = base + 0.3 * (deltas * mask / 0.7).sum(0).reshape(10, 10)
    torch.testing.assert_close(call("dare", ts, base, seed_generator=generator, drop_rate=0.3), expected)
    again = call("dare", ts, base, seed_generator=torch.Generator().manual_seed(7), drop_rate=0.3)
    other = call("dare", ts, base, seed_generator=torch.Generator().manual_seed(8), drop_rate=0.3)
    assert torch.equal(again, expected) and not torch.equal(other, expected)


def test_dare_without_drops_is_task_arithmetic():
    base, ts = models()
    torch.testing.assert_close(call("dare", ts, base, drop_rate=0.0), call("task_arithmetic", ts, base))


def test_breadcrumbs_drops_outliers_and_the_tail():
    base = torch.zeros(10)
    t = torch.arange(1.0, 11.0)  # magnitudes 1..10
    # gamma 0.1 drops the top 1 (10); density 0.5 keeps the next 5 (9..5); the tail 4..1 goes
    merged = call("breadcrumbs", [t], base, gamma=0.1, density=0.5, scaling_factor=1.0)
    torch.testing.assert_close(merged, T([0, 0, 0, 0, 5, 6, 7, 8, 9, 0.0]))


def _breadcrumbs_direct(delta, outliers, kept):
    """Keep the entries ranked ``outliers`` .. ``kept - 1`` by magnitude (0 = largest), zero the rest."""
    order = delta.abs().argsort(descending=True)
    out = torch.zeros_like(delta)
    out[order[outliers:kept]] = delta[order[outliers:kept]]
    return out


def test_breadcrumbs_counts_are_not_inflated_by_float_error():
    """gamma 0.07 and gamma + density 0.57 of 100 entries are 7.000000000000001 and 57.00000000000001 in
    floats: a bare ceil drops 8 outliers and keeps down to rank 58, shifting the whole kept band."""
    base, ts = models(2, shape=(100,), seed=5)
    merged = call("breadcrumbs", ts, base, gamma=0.07, density=0.5, scaling_factor=1.0)
    expected = base + sum(_breadcrumbs_direct(t - base, 7, 57) for t in ts)
    torch.testing.assert_close(merged, expected)


def test_breadcrumbs_defaults_equal_a_direct_computation():
    """The defaults (gamma 0.01, density 0.9, scaling 0.3) are what a recipe without parameters merges
    with: on 100 entries, drop the largest one and keep the next 90."""
    defaults = get_method("breadcrumbs").resolve_params({})
    assert defaults == {"density": 0.9, "gamma": 0.01, "scaling_factor": 0.3}
    base, ts = models(3, shape=(100,), seed=6)
    expected = base + 0.3 * sum(_breadcrumbs_direct(t - base, 1, 91) for t in ts)
    torch.testing.assert_close(call("breadcrumbs", ts, base), expected)


def test_model_stock_matches_its_formula():
    base, ts = models(3, shape=(50,))
    d = [t - base for t in ts]
    cos = [torch.nn.functional.cosine_similarity(d[i], d[j], dim=0) for i, j in ((0, 1), (0, 2), (1, 2))]
    c = sum(cos) / 3
    t = 3 * c / (1 + 2 * c)
    expected = t * torch.stack(ts).mean(0) + (1 - t) * base
    torch.testing.assert_close(call("model_stock", ts, base), expected)


def test_model_stock_edge_cases():
    base = torch.zeros(4)
    same = T([1.0, 2.0, 0.0, -1.0])
    torch.testing.assert_close(call("model_stock", [same, same], base), same)  # cos 1 -> t 1
    torch.testing.assert_close(call("model_stock", [same, -same], base), base)  # cos -1 -> t 0
    torch.testing.assert_close(call("model_stock", [base, same], base), base)  # a zero task vector -> cos 0


def test_slerp():
    a, b = T([1.0, 0.0]), T([0.0, 2.0])
    assert torch.equal(call("slerp", [a, b], t=0.0), a)
    torch.testing.assert_close(call("slerp", [a, b], t=1.0), b)
    half = call("slerp", [a, b], t=0.5)
    s = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    torch.testing.assert_close(half, T([s, 2 * s]))
    torch.testing.assert_close(call("slerp", [a, 3 * a], t=0.5), 2 * a)  # colinear: linear
    torch.testing.assert_close(call("slerp", [a, torch.zeros(2)], t=0.25), 0.75 * a)
    torch.testing.assert_close(call("slerp", [torch.zeros(2), a], t=0.25), 0.25 * a)  # either one zero


def test_slerp_of_anti_parallel_tensors_is_linear():
    """cos = -1: the arc is undefined (sin omega ~ 1e-16) and the formula blows up to huge or NaN weights;
    the merge must fall back to the linear blend, as for parallel tensors."""
    a = T([1.0, -2.0, 0.5])
    b = -2 * a
    for t in (0.25, 0.5):
        merged = call("slerp", [a, b], t=t)
        assert torch.isfinite(merged).all()
        torch.testing.assert_close(merged, torch.lerp(a, b, t))


def test_slerp_default_is_the_midpoint():
    """A recipe without 't' gets the point halfway along the arc."""
    assert get_method("slerp").resolve_params({}) == {"t": 0.5}
    a, b = T([1.0, 0.0]), T([0.0, 2.0])
    s = math.sin(math.pi / 4) / math.sin(math.pi / 2)
    torch.testing.assert_close(call("slerp", [a, b]), T([s, 2 * s]))


def test_angles_between_large_tensors_are_measured_in_float64():
    """Tensor.norm of 4M float32 entries is off by about 1e-4: slerp's output was off by 800 float32 rounding
    steps against the float64 formula, and model_stock's by 200."""
    g = torch.Generator().manual_seed(0)
    base = 0.05 * torch.randn(2048, 2048, generator=g)
    a, b = (base + 0.01 * torch.randn(2048, 2048, generator=g) for _ in range(2))
    a64, b64, base64 = a.double(), b.double(), base.double()

    cos = float((a64 * b64).sum() / (a64.norm() * b64.norm()))
    omega = math.acos(cos)
    expected = (math.sin(0.5 * omega) * a64 + math.sin(0.5 * omega) * b64) / math.sin(omega)
    torch.testing.assert_close(call("slerp", [a, b], t=0.5), expected.float(), rtol=0, atol=2e-7)

    da, db = a64 - base64, b64 - base64
    c = float((da * db).sum() / (da.norm() * db.norm()))
    t = 2 * c / (1 + c)
    expected = t * (a64 + b64) / 2 + (1 - t) * base64
    torch.testing.assert_close(call("model_stock", [a, b], base), expected.float(), rtol=0, atol=2e-7)


@pytest.mark.parametrize("name", [m.name for m in list_methods()])
def test_inputs_are_never_mutated(name):
    base, ts = models(2)
    copies = [t.clone() for t in ts]
    base_copy = base.clone()
    call(name, ts, base, weights=[1.0, 2.0])
    assert all(torch.equal(a, b) for a, b in zip(ts, copies)) and torch.equal(base, base_copy)


# ----------------------------------------------------------------------------- registry


def test_schemas_and_defaults():
    assert [m.name for m in list_methods()] == [
        "simple_average", "weighted_average", "task_arithmetic", "ties", "dare", "breadcrumbs", "model_stock", "slerp"
    ]
    assert get_method("task_arithmetic").resolve_params({}) == {"scaling_factor": 0.3}
    assert get_method("ties").resolve_params({}) == {"density": 0.2, "scaling_factor": 0.3, "disjoint_merge": "sum"}
    dare = get_method("dare").resolve_params({})
    assert dare["drop_rate"] == 0.5 and dare["rescale"] is True and dare["seed"] == 0 and dare["combine"] == "linear"
    assert get_method("ties").param("disjoint_merge").choices == ("sum", "mean")
    for method in list_methods():
        assert method.pretty_name and method.paper and method.description
        for spec in method.params:
            assert spec.help, f"{method.name}.{spec.name} has no help text"
    assert get_method("task_arithmetic").needs_base and not get_method("simple_average").accepts_base
    assert get_method("weighted_average").needs_weights and get_method("dare").needs_generator
    assert get_method("slerp").max_models == 2
    # the help and the app show the docstring's first paragraph, not its details
    assert get_method("model_stock").description == (
        "``t * mean(tensors) + (1 - t) * base`` with ``t = N cos / (1 + (N - 1) cos)``."
    )


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("ties", {"density": 1.5}, "density' must be <= 1.0"),
        ("ties", {"density": "a lot"}, "density' must be a number"),
        ("ties", {"disjoint_merge": "max"}, "one of sum, mean"),
        ("ties", {"threshold": 20}, r"unknown parameter 'threshold'.*threshold 20 is density 0\.2"),
        ("ties", {"merge_func": "sum"}, "'merge_func' is 'disjoint_merge' here"),
        ("ties", {"lambda": 1.0}, "mergekit's 'lambda' is 'scaling_factor' here"),
        ("ties", {"scaling_factr": 1.0}, "Did you mean 'scaling_factor'"),
        ("ties", {"normalize": True}, "mergekit's 'normalize' .* is closest to 'disjoint_merge: mean' here"),
        ("task_arithmetic", {"int8_mask": True}, "merges tensor by tensor and needs no such switch"),
        ("dare", {"sparsity_ratio": 0.5}, "'sparsity_ratio' is 'drop_rate' here"),
        ("dare", {"density": 0.5}, "'density' is 1 - 'drop_rate' here"),
        ("weighted_average", {"weights": [1, 2]}, "give each entry under 'models' a 'weight'"),
        ("dare", {"seed": 1.5}, "seed' must be an integer"),
        ("dare", {"seed": True}, "seed' must be an integer, got True"),
        ("ties", {"density": True}, "density' must be a number, got True"),
        ("breadcrumbs", {"gamma": 1.5}, "gamma' must be <= 1.0"),
        ("dare", {"rescale": "yes"}, "true or false"),
        ("task_arithmetic", {"scaling_factor": -1}, ">= 0.0"),
        ("simple_average", {"x": 1}, "none"),
    ],
)
def test_bad_parameters_name_the_parameter(name, params, message):
    with pytest.raises(MethodParameterError, match=message) as info:
        get_method(name).resolve_params(params)
    assert info.value.field.startswith("parameters.")


def test_weights_on_a_method_without_weights_get_no_per_model_hint():
    """simple_average ignores weights: telling the user to give each model a 'weight' would mislead."""
    with pytest.raises(MethodParameterError) as info:
        get_method("simple_average").resolve_params({"weights": [1, 2]})
    assert "Parameters of simple_average: none." in str(info.value) and "'weight'" not in str(info.value)


def test_integers_are_accepted_as_floats():
    assert get_method("task_arithmetic").resolve_params({"scaling_factor": 1}) == {"scaling_factor": 1.0}


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UnknownMethodError) as info:
        get_method("fisher")
    assert "ties" in str(info.value) and "simple_average" in str(info.value)
    assert "Did you mean" not in str(info.value)
    with pytest.raises(UnknownMethodError, match="Did you mean 'task_arithmetic'"):
        get_method("task-arithmetic")


@pytest.mark.parametrize(
    "name, translation",
    [
        ("linear", "mergekit's 'linear' is 'weighted_average' here"),
        ("dare_linear", "mergekit's 'dare_linear' is 'dare' here"),
        ("dare_ties", "mergekit's 'dare_ties' is 'dare' with 'combine: ties' here"),
        ("breadcrumbs_ties", "mergekit's 'breadcrumbs_ties' has no equivalent here"),
        ("ties_merging", "FusionBench's 'ties_merging' is 'ties' here"),
    ],
)
def test_other_tools_method_names_are_translated(name, translation):
    """Not "Did you mean 'breadcrumbs'?" for breadcrumbs_ties, which would merge differently."""
    with pytest.raises(UnknownMethodError) as info:
        get_method(name)
    assert translation in str(info.value) and "Did you mean" not in str(info.value)


def test_a_method_name_is_translated_once():
    from hubmerge.methods import register

    with pytest.raises(ValueError, match="'linear' is translated twice"):
        register("another_average", pretty_name="x", peer_methods={"linear": "again"})(lambda tensors: tensors[0])


def test_register_refuses_malformed_methods():
    from hubmerge.methods import register

    with pytest.raises(TypeError, match="keyword-only"):
        register("bad1", pretty_name="x")(lambda tensors, scale=1.0: tensors[0])
    with pytest.raises(TypeError, match="annotation"):
        def no_annotation(tensors, *, scale=1.0):
            return tensors[0]
        register("bad2", pretty_name="x")(no_annotation)
    with pytest.raises(TypeError, match="seed"):
        def no_seed(tensors, *, generator=None):
            return tensors[0]
        register("bad3", pretty_name="x")(no_seed)
    with pytest.raises(ValueError, match="twice"):
        register("ties", pretty_name="x")(lambda tensors: tensors[0])
    with pytest.raises(TypeError, match=r"bounds given for unknown parameters \['scale'\]"):
        register("bad4", pretty_name="x", bounds={"scale": (0.0, 1.0)})(lambda tensors: tensors[0])


def test_register_reads_string_annotations(monkeypatch):
    """Methods written with ``from __future__ import annotations``, as this module and all of hubmerge's
    are: the schema is evaluated from the keyword parameters' annotations, ``base``/``weights`` are
    read as text (evaluating ``torch.Tensor`` would import torch; see test_planning_never_imports_torch)."""
    from hubmerge.methods import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))  # leave no test method behind

    def needs_all(tensors: Sequence[torch.Tensor], *, base: torch.Tensor, weights: Sequence[float],
                  mode: Literal["a", "b"] = "a", gain: float = 1.0) -> torch.Tensor:
        return tensors[0]

    def optional_base(tensors: Sequence[torch.Tensor], *, base: Optional[torch.Tensor] = None,  # noqa: UP045
                      weights: Sequence[float] | None = None) -> torch.Tensor:
        return tensors[0]

    _registry.register("test_only_needs_all", pretty_name="x")(needs_all)
    _registry.register("test_only_optional", pretty_name="x")(optional_base)
    method = get_method("test_only_needs_all")
    assert [(p.name, p.type, p.choices) for p in method.params] == [("mode", str, ("a", "b")), ("gain", float, None)]
    assert method.accepts_base and method.needs_base and method.needs_weights
    method = get_method("test_only_optional")
    assert method.accepts_base and not method.needs_base and method.uses_weights and not method.needs_weights


@pytest.mark.parametrize("seed", range(5))
def test_radix_selection_equals_kthvalue(seed):
    from hubmerge.methods.task_vectors import _kth_largest

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10_000, generator=g).abs()
    x[:50] = x[50]  # ties
    x[60] = 0.0
    for k in (1, 2, 50, 1234, 9_999, 10_000):
        assert torch.equal(_kth_largest(x, k), x.kthvalue(x.numel() - k + 1).values)
    tiny = torch.tensor([0.0, 1e-40, 3.0, float("inf")])  # zero, a subnormal, inf
    assert [float(_kth_largest(tiny, k)) for k in (1, 2, 3, 4)] == [float("inf"), 3.0, float(tiny[1]), 0.0]
