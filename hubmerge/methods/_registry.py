"""The merge-method registry: name -> pure tensor function + typed parameter schema.

A method is a plain function ``fn(tensors, *, base, weights, <params>) -> Tensor``. ``@register``
reads its keyword-only parameters once, at import, into a schema (name, type, default, bounds,
choices) that the recipe validates against before anything is planned, that the UI renders as a
form, and that the card prints. The decorator returns the function unchanged.

Reserved argument names, supplied by the engine and never part of the schema:

* ``tensors``: one float32 tensor per fine-tuned model (float64 when the output is written in it), same
  shape, same device.
* ``base``: the base model's tensor (in the same dtype) or ``None`` when the recipe has no base model.
* ``weights``: the per-model weights from the recipe, or ``None`` when none were given. Annotate it
  without ``None`` (``Sequence[float]``) when the method cannot work without weights: the recipe
  then refuses to load without them.
* ``generator``: a CPU ``torch.Generator`` seeded from the ``seed`` parameter and the tensor name;
  a method that declares it must also declare ``seed: int``.

Annotations are read without evaluating the tensor ones (the methods' modules import torch only
inside their functions), so loading a recipe or planning a merge never imports torch.

A method whose result is ``anchor + sum_i c_i * (t_i - anchor)`` (``anchor`` = base or 0) also
gives a ``linear`` rule. The engine then merges it as a running sum, so memory stays flat however
many models are merged.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import PER_MODEL_WEIGHTS, MethodParameterError, UnknownMethodError, did_you_mean

__all__ = [
    "LinearForm",
    "MergeMethod",
    "ParamSpec",
    "get_method",
    "list_methods",
    "register",
]

_RESERVED = ("tensors", "base", "weights", "generator")
_SCALARS: tuple[type, ...] = (bool, int, float, str)


@dataclass(frozen=True)
class ParamSpec:
    """One global parameter of a merge method."""

    name: str
    type: type  # bool, int, float or str
    default: Any
    help: str = ""
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def validate(self, method: str, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise MethodParameterError."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise MethodParameterError(method, self.name, f"'{self.name}' must be true or false, got {value!r}")
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise MethodParameterError(method, self.name, f"'{self.name}' must be an integer, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MethodParameterError(method, self.name, f"'{self.name}' must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):  # NaN passes every range check below, then poisons every tensor
                raise MethodParameterError(method, self.name, f"'{self.name}' must be a finite number, got {value}")
        elif self.type is str:
            if not isinstance(value, str):
                raise MethodParameterError(method, self.name, f"'{self.name}' must be a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise MethodParameterError(
                method, self.name, f"'{self.name}' must be one of {', '.join(self.choices)}; got {value!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise MethodParameterError(method, self.name, f"'{self.name}' must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise MethodParameterError(method, self.name, f"'{self.name}' must be <= {self.maximum}, got {value}")
        return value


@dataclass(frozen=True)
class LinearForm:
    """``merged = anchor + sum_i coefficients[i] * (t_i - anchor)``; anchor is the base if ``anchored``."""

    coefficients: tuple[float, ...]
    anchored: bool


LinearRule = Callable[[int, "Sequence[float] | None", Mapping[str, Any]], LinearForm]


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: its function, schema and facts the planner and card need."""

    name: str
    pretty_name: str
    fn: Callable[..., Any]
    params: tuple[ParamSpec, ...]
    needs_base: bool
    accepts_base: bool
    uses_weights: bool
    needs_weights: bool
    needs_generator: bool
    min_models: int = 1
    max_models: int | None = None
    paper: str | None = None
    description: str = ""
    linear: LinearRule | None = field(default=None, repr=False)
    peer_names: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    peer_methods: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def param(self, name: str) -> ParamSpec:
        for spec in self.params:
            if spec.name == name:
                return spec
        known = [p.name for p in self.params]
        if name in self.peer_names:
            hint = f" {self.peer_names[name]}"
        elif name in ("weight", "weights") and self.uses_weights:
            hint = f" {PER_MODEL_WEIGHTS}"
        else:
            hint = did_you_mean(name, known)
        raise MethodParameterError(
            self.name,
            name,
            f"unknown parameter '{name}'. Parameters of {self.name}: {', '.join(known) or 'none'}." + hint,
        )

    def resolve_params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validate ``given`` against the schema and fill defaults. Unknown names are an error."""
        given = dict(given or {})
        resolved: dict[str, Any] = {}
        for name, value in given.items():
            resolved[name] = self.param(name).validate(self.name, value)
        for spec in self.params:
            resolved.setdefault(spec.name, spec.default)
        return resolved


_REGISTRY: dict[str, MergeMethod] = {}


def _param_type(annotation: Any, fn_name: str, name: str) -> tuple[type, tuple[str, ...] | None]:
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        if not all(isinstance(c, str) for c in choices):
            raise TypeError(f"{fn_name}: Literal choices of '{name}' must be strings")
        return str, tuple(choices)
    if annotation in _SCALARS:
        return annotation, None
    raise TypeError(f"{fn_name}: parameter '{name}' must be annotated bool, int, float, str or Literal[...]")


def _is_optional(annotation: Any) -> bool:
    """Whether ``annotation`` admits None. A string one (``from __future__ import annotations``) is read,
    not evaluated: it names torch types."""
    if isinstance(annotation, str):
        members = re.split(r"[\s|\[\],]+", annotation)
        return annotation.startswith(("Optional[", "typing.Optional[")) or "None" in members
    return type(None) in typing.get_args(annotation)


def _evaluated(annotation: Any, fn: Callable[..., Any]) -> Any:
    """A schema parameter's annotation as an object (``float``, ``Literal[...]``), from the method's own module."""
    if isinstance(annotation, str):
        return eval(annotation, fn.__globals__)  # the method's own source, as inspect's eval_str does
    return annotation


def register(
    name: str,
    *,
    pretty_name: str,
    paper: str | None = None,
    description: str = "",
    min_models: int = 1,
    max_models: int | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    help: Mapping[str, str] | None = None,
    linear: LinearRule | None = None,
    peer_names: Mapping[str, str] | None = None,
    peer_methods: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as merge method ``name``; its keyword-only parameters become the schema.

    ``peer_names`` maps what another tool calls a parameter to a sentence saying what it is here, so a
    recipe written with FusionBench's or mergekit's names gets told the translation, not just refused;
    ``peer_methods`` does the same for what another tool calls the method itself.
    """
    bounds = dict(bounds or {})
    help = dict(help or {})

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"merge method '{name}' is registered twice")
        for other in peer_methods or {}:
            if _translation(other) is not None:
                raise ValueError(f"another tool's method name '{other}' is translated twice")
        signature = inspect.signature(fn)
        parameters = signature.parameters
        if "tensors" not in parameters:
            raise TypeError(f"{fn.__name__}: a merge method takes 'tensors' as its first argument")
        accepts_base = "base" in parameters
        needs_base = accepts_base and not _is_optional(parameters["base"].annotation)
        needs_generator = "generator" in parameters
        specs: list[ParamSpec] = []
        for pname, p in parameters.items():
            if pname in _RESERVED:
                continue
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"{fn.__name__}: method parameter '{pname}' must be keyword-only")
            if p.annotation is inspect.Parameter.empty:
                raise TypeError(f"{fn.__name__}: method parameter '{pname}' has no type annotation")
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"{fn.__name__}: method parameter '{pname}' needs a default")
            ptype, choices = _param_type(_evaluated(p.annotation, fn), fn.__name__, pname)
            low, high = bounds.pop(pname, (None, None))
            specs.append(
                ParamSpec(pname, ptype, p.default, help.get(pname, ""), choices, low, high)
            )
        if bounds:
            raise TypeError(f"{fn.__name__}: bounds given for unknown parameters {sorted(bounds)}")
        if needs_generator and not any(s.name == "seed" and s.type is int for s in specs):
            raise TypeError(f"{fn.__name__}: a method that takes 'generator' must declare 'seed: int'")
        _REGISTRY[name] = MergeMethod(
            name=name,
            pretty_name=pretty_name,
            fn=fn,
            params=tuple(specs),
            needs_base=needs_base,
            accepts_base=accepts_base,
            uses_weights="weights" in parameters,
            needs_weights="weights" in parameters and not _is_optional(parameters["weights"].annotation),
            needs_generator=needs_generator,
            min_models=min_models,
            max_models=max_models,
            paper=paper,
            description=description or (inspect.getdoc(fn) or "").split("\n\n")[0],
            linear=linear,
            peer_names=dict(peer_names or {}),
            peer_methods=dict(peer_methods or {}),
        )
        return fn

    return decorate


def get_method(name: str) -> MergeMethod:
    """Return the registered method ``name``; raise UnknownMethodError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name, list(_REGISTRY), translation=_translation(name)) from None


def _translation(other_name: str) -> str | None:
    """What a method another tool calls ``other_name`` is here, if one of ours says."""
    return next((m.peer_methods[other_name] for m in _REGISTRY.values() if other_name in m.peer_methods), None)


def list_methods() -> list[MergeMethod]:
    """All registered methods, in registration order."""
    return list(_REGISTRY.values())
