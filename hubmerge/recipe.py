"""The Recipe: the one configuration object behind the CLI, the UI, the card and reproduction.

A recipe is YAML (see DESIGN.md) or built in code; either way it is validated here, once, with
messages that name the field and say what to write instead. Strings such as ``"org/name@rev"`` are
parsed into ``ModelRef`` at this boundary and never re-parsed later.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

import yaml

from .errors import PER_MODEL_WEIGHTS, ModelFilesNotFoundError, RecipeError, did_you_mean, listed
from .methods import get_method, list_methods
from .yaml_limits import MAX_SIZE, expanded_size

__all__ = ["RECIPE_FILE", "DatasetRef", "ModelEntry", "ModelRef", "Recipe", "described_dataset", "load_recipe",
           "read_yaml", "shared_names", "task_name_problem"]

RECIPE_FILE = "hubmerge_recipe.yaml"  # the recipe a merged output keeps, every input pinned to its commit

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]{0,95}/)?[A-Za-z0-9][\w.\-]{0,95}$")
# huggingface_hub's cache keeps a commit of repo org/name in .../models--org--name/snapshots/<commit sha>/
_CACHE_SNAPSHOT = re.compile(r"^models--(?P<repo>.+)/snapshots/(?P<commit>[0-9a-f]{40})$")
_DTYPES = ("float32", "float16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
# A task names its head's folder (heads/<task>/) in the output and on the Hub: one path component.
_TASK_NAME = re.compile(r"^[^\W_][\w.\- ]{0,95}(?<! )\Z")


def task_name_problem(task: str) -> str | None:
    """Why ``task`` cannot name its head's folder ``heads/<task>/`` (a separator, ``..``, ...) or its row of
    the evaluation report, or None."""
    if task == "average":  # hubmerge.evaluation.report.AVERAGE, the report's mean over the tasks
        return "task name 'average' is the evaluation report's mean over the tasks; rename the task"
    if _TASK_NAME.match(task) and ".." not in task:
        return None
    return (f"task name {task!r} cannot name the folder heads/<task>/: use letters, digits, '_', '-', '.' and "
            "inner spaces, starting with a letter or digit, at most 96 characters (e.g. 'stanford-cars')")


@dataclass(frozen=True)
class ModelRef:
    """A model: a Hub repo id with an optional revision, or a local directory."""

    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if (self.repo_id is None) == (self.path is None):
            raise RecipeError("a model is either a repo id or a local path")

    @classmethod
    def parse(
        cls, text: str | os.PathLike[str], *, base_dir: Path | None = None, field: str = "model"
    ) -> ModelRef:
        """``org/name``, ``org/name@revision``, or a path (``./dir``, ``/abs/dir``, ``~/dir``, an existing
        dir, or any path object: ``str(Path("./merged"))`` is ``merged``, which must not become a repo id when
        missing).

        A Hugging Face cache snapshot path (``.../models--org--name/snapshots/<commit>``) that is not on this
        machine, as in a recipe merged elsewhere, is ``org/name@<commit>``: the same files, from the Hub."""
        path_object = isinstance(text, os.PathLike)
        if path_object:
            text = os.fspath(text)
        if not isinstance(text, str) or not text.strip():
            raise RecipeError(f"expected a repo id like 'org/name[@revision]' or a local path, got {text!r}", field=field)
        text = text.strip()
        looks_local = path_object or text.startswith((".", "/", "~")) or "\\" in text
        candidate = Path(text).expanduser()
        if base_dir is not None and not candidate.is_absolute():
            candidate = base_dir / candidate
        if looks_local or candidate.is_dir():  # an existing directory wins, as in from_pretrained
            local = cls(path=candidate)
            if local.hub_copy and not candidate.is_dir():  # a Hugging Face cache snapshot from another machine
                repo_id, commit = local.hub_copy
                return cls(repo_id=repo_id, revision=commit)  # the same commit, from the Hub
            return local
        repo_id, _, revision = text.partition("@")
        if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
            raise RecipeError(
                f"'{text}' is neither an existing directory nor a valid repo id ('org/name[@revision]')",
                field=field,
            )
        if "@" in text and (not revision or re.search(r"\s", revision)):
            raise RecipeError(f"'{text}': the revision after '@' is empty or has spaces", field=field)
        return cls(repo_id=repo_id, revision=revision or None)

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def hub_copy(self) -> tuple[str, str] | None:
        """``(repo_id, commit)`` when the path is a Hugging Face cache snapshot (what ``snapshot_download()``
        returns), so a card can name where the local files came from; None otherwise."""
        if self.path is None:
            return None
        found = _CACHE_SNAPSHOT.match("/".join(self.path.parts[-3:]))
        if found is None:
            return None
        names = found["repo"].split("--")  # repo ids have no "--": models--org--name is org/name
        if len(names) > 2 or not _REPO_ID.match(repo_id := "/".join(names)):
            return None
        return repo_id, found["commit"]

    def pinned(self, sha: str | None) -> ModelRef:
        """The same model at commit ``sha``; a local directory as an absolute path, the same folder from
        anywhere (a merged output's recipe is read from the output's folder)."""
        if self.path is not None:
            return replace(self, path=self.path.absolute())
        return self if sha is None else replace(self, revision=sha)

    def __str__(self) -> str:
        if self.path is not None:  # a relative one as ./dir: 'dir' alone reads back as a Hub repo id
            text = str(self.path)
            return text if self.path.is_absolute() or text.startswith(".") else f"./{self.path.as_posix()}"
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset to evaluate a task on: a Hub dataset id (+ config) or a ``save_to_disk`` directory, and the
    columns of its labels and images where the evaluation cannot find them (None: found by type or usual name)."""

    path: str
    name: str | None = None
    split: str = "test"
    label_column: str | None = None
    image_column: str | None = None

    @property
    def is_local(self) -> bool:
        """A folder on this machine (``./d``, ``/abs/d``, ``~/d``, a Windows path, any path that exists, or one
        no Hub id could be: ``my data/d``, ``a/b/c``) rather than a Hub dataset id: how the evaluation, the head
        check, the card and the output check tell."""
        return (self.path.startswith((".", "/", "~")) or "\\" in self.path or not _REPO_ID.match(self.path)
                or Path(self.path).expanduser().exists())

    def resolved(self, base_dir: Path | None) -> DatasetRef:
        """The same dataset with a relative local path taken from ``base_dir``: ``./data``, or a bare ``data/d``
        that is a folder there or no Hub id could be, as a model's path is read (from the working directory,
        a recipe's bare folder was a Hub id to the evaluation once the merge was done)."""
        if base_dir is None or self.path.startswith("/") or "\\" in self.path or _DRIVE.match(self.path):
            return self
        path = base_dir / Path(self.path).expanduser()
        if self.path.startswith((".", "~")) or path.is_dir() or not _REPO_ID.match(self.path):
            return replace(self, path=str(path.resolve()))
        return self

    @classmethod
    def parse(cls, value: Any, *, field: str = "dataset") -> DatasetRef:
        """``org/name``, ``org/name:split``, ``org/name:config:split`` or a mapping ``{path, name, split,
        label_column, image_column}``."""
        if isinstance(value, str) and value.strip():
            parts = [part.strip() for part in _spec_parts(value.strip())]
            if len(parts) > 3 or not all(parts):  # 'org/name::test' was read as split ':test'
                raise RecipeError(f"cannot read dataset {value!r}: write it 'org/name', 'org/name:split' or "
                                  "'org/name:config:split'", field=field)
            if len(parts) == 3:
                return cls(path=parts[0], name=parts[1], split=parts[2])
            return cls(path=parts[0], split=parts[1] if len(parts) == 2 else "test")
        if isinstance(value, Mapping):
            unknown = set(value) - {"path", *_DATASET_OPTIONAL}
            if unknown or not isinstance(value.get("path"), str):
                raise RecipeError(
                    "a dataset is 'org/name[:split]' or a mapping with 'path' and optional "
                    + ", ".join(f"'{key}'" for key in _DATASET_OPTIONAL),
                    field=field,
                )
            columns = {key: _column_name(value.get(key), f"{field}.{key}") for key in _DATASET_COLUMNS}
            return cls(path=value["path"], name=value.get("name"), split=value.get("split") or "test", **columns)
        raise RecipeError(f"expected a dataset id like 'org/name[:split]', got {value!r}", field=field)

    def shared(self, names: Mapping[Path, str]) -> DatasetRef:
        """The same dataset named as ``names`` (``shared_names``) names its folder, when it is a local one."""
        if not self.is_local or (name := names.get(Path(self.path).expanduser())) is None:
            return self
        return replace(self, path=name)

    def to_yaml(self) -> str | dict[str, str]:
        """The one-line form where it says everything and reads back, else the mapping (a config or a column
        named, a Windows path, whose drive's colon earlier hubmerge versions took for a split's)."""
        if self.name is None and self.label_column is None and self.image_column is None:
            line = self.path if self.split == "test" else f"{self.path}:{self.split}"
            if self.reads_back(line) and not _DRIVE.match(self.path):
                return line
        out = {"path": self.path, "name": self.name, "split": self.split, "label_column": self.label_column,
               "image_column": self.image_column}
        return {key: value for key, value in out.items() if value is not None}

    def reads_back(self, line: str) -> bool:
        """Whether ``line``, parsed as a one-line dataset, is this one (not so for a Windows path's colon, nor
        for columns, which only a mapping names)."""
        try:
            return DatasetRef.parse(line) == self
        except RecipeError:
            return False

    @property
    def one_line(self) -> str:
        """``to_yaml`` as YAML on one line: the one-line form, or the mapping in flow style, quoted where YAML
        needs it (a column named ``a: b``); recipe hints and the web form's dataset cell show it."""
        written = self.to_yaml()
        if isinstance(written, str):
            return written
        return str(yaml.safe_dump(written, default_flow_style=True, sort_keys=False, allow_unicode=True,
                                  width=math.inf)).strip()

    @property
    def recipe_line(self) -> str:
        """``dataset: ...`` as a recipe writes it, on one line (a mapping in flow style)."""
        return f"dataset: {self.one_line}"

    def __str__(self) -> str:
        return self.spec  # shown as the user writes it, so a hint's `--task NAME=DATASET` parses back

    @property
    def spec(self) -> str:
        """The one-line form ``parse`` reads back: ``path[:config]:split`` (its columns are the recipe's
        mapping's, or ``--label-column`` / ``--image-column``)."""
        return f"{self.path}:{self.name}:{self.split}" if self.name else f"{self.path}:{self.split}"

    @property
    def described(self) -> str:
        """``spec`` and the columns named for it, which the one line cannot say: how the card names the dataset,
        e.g. ``org/d:test, label column coarse_label``."""
        return described_dataset(self.spec, self.label_column, self.image_column)

    def same_split(self, other: DatasetRef) -> bool:
        """Whether ``other`` is this dataset's split, whichever columns either names."""
        return (self.path, self.name, self.split) == (other.path, other.name, other.split)

    def missing_split(self, splits: Sequence[str], *, task: str | None = None) -> str:
        """Why this split cannot be read, and the recipe line (and ``evaluate --task`` value, for ``task``) that
        picks one of ``splits`` instead."""
        if not splits:
            return f"has no split '{self.split}', nor any other"
        other = replace(self, split=next((s for s in ("test", "validation") if s in splits), splits[0]))
        if other.reads_back(other.spec):  # a drive's colon too; not columns, which only a mapping names
            how = f" after a colon, e.g. `dataset: {other.spec}`"
        else:
            how = f": `{other.recipe_line}`"
        plain = replace(other, label_column=None, image_column=None)
        if plain.reads_back(plain.spec):  # --task takes the one line, its columns from their own options
            columns = " with its --label-column / --image-column" if plain != other else ""
            how += f" in a recipe, `--task {task or 'NAME'}={plain.spec}`{columns} for `hubmerge evaluate`"
        return f"has no split '{self.split}' (its splits: {', '.join(splits)}); name the one to evaluate on{how}"


_DATASET_COLUMNS = ("label_column", "image_column")
_DATASET_OPTIONAL = ("name", "split", *_DATASET_COLUMNS)
# A Windows drive at the start of a dataset's path (C:\data, d:/x): its colon separates no split.
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")


def _spec_parts(text: str) -> list[str]:
    """``DATASET[:CONFIG][:SPLIT]`` cut at its colons, a drive's kept in ``DATASET``: the one reader of the
    one-line form (a recipe's, ``--task``'s, a report's)."""
    drive = text[:2] if _DRIVE.match(text) else ""
    first, *rest = text[len(drive):].split(":")
    return [drive + first, *rest]


def _column_name(value: Any, field: str) -> str | None:
    """A dataset's column as the recipe names it: a non-empty name, or None (not named)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(f"a column's name, e.g. 'coarse_label', got {value!r}", field=field)
    return value


@dataclass(frozen=True)
class ModelEntry:
    """One fine-tuned input: the model, its task (whose head it carries), weight and dataset."""

    model: ModelRef
    task: str | None = None
    weight: float | None = None
    dataset: DatasetRef | None = None

    @property
    def label(self) -> str:
        return self.task or str(self.model)


_TOP_LEVEL = (
    "method",
    "parameters",
    "base_model",
    "models",
    "target_modules",
    "dtype",
    "device",
    "default_task",
    "name",
)
_ENTRY_KEYS = ("model", "task", "weight", "dataset")

# Keys a recipe written for mergekit or FusionBench, or by guess, would use: what each is here.
_BASE_HINT = "The base model goes under 'base_model'."
_NO_TOKENIZER = "mergekit's tokenizer settings have no use here: image classifiers have no tokenizer."
_PEER_KEYS = {
    "merge_method": "mergekit's 'merge_method' is 'method' here.",
    "base": _BASE_HINT,
    "pretrained": _BASE_HINT,
    "_pretrained_": "FusionBench's '_pretrained_' is 'base_model' here.",
    "out_dtype": "mergekit's 'out_dtype' is 'dtype' here.",
    "tokenizer": _NO_TOKENIZER,
    "tokenizer_source": _NO_TOKENIZER,
    "slices": "mergekit's 'slices' (layer ranges) have no equivalent here: hubmerge merges whole models, and "
    "'target_modules' chooses the merged tensors by name prefix.",
    "weights": PER_MODEL_WEIGHTS,
    "tasks": "Tasks are per model: give each entry under 'models' a 'task'.",
}
_MODEL_HINT = "An entry names its model with 'model: org/name[@revision]' or a local path."
_PEER_ENTRY_KEYS = {
    "parameters": "mergekit's per-model 'parameters' are not read here: give the model's 'weight' on its entry, "
    "and the method's parameters once, under the top-level 'parameters'.",
    "path": _MODEL_HINT,
    "repo_id": _MODEL_HINT,
}


def _unknown_keys(given: Mapping[Any, Any], allowed: Sequence[str], peers: Mapping[str, str]) -> str | None:
    """One sentence per key of ``given`` not in ``allowed`` (the translation, else a suggestion), or None."""
    unknown = [str(key) for key in given if key not in allowed]
    if not unknown:
        return None
    return " ".join(
        f"unknown key '{key}'." + (f" {peers[key]}" if key in peers else did_you_mean(key, allowed))
        for key in unknown
    )


@dataclass(frozen=True)
class Recipe:
    """A validated merge recipe. Build it with ``Recipe.from_dict`` / ``load_recipe`` or directly."""

    method: str
    models: tuple[ModelEntry, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    base_model: ModelRef | None = None
    target_modules: tuple[str, ...] = ()
    dtype: str | None = None
    device: str = "auto"
    default_task: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Check everything that can be checked without reading a model; raise RecipeError."""
        method = get_method(self.method)
        object.__setattr__(self, "parameters", method.resolve_params(self.parameters))
        n = len(self.models)
        if n == 0:
            raise RecipeError("list at least one model to merge", field="models")
        if n < method.min_models:
            raise RecipeError(f"{method.name} needs at least {method.min_models} models, got {n}", field="models")
        if method.max_models is not None and n > method.max_models:
            raise RecipeError(f"{method.name} takes at most {method.max_models} models, got {n}", field="models")
        if method.needs_base and self.base_model is None:
            raise RecipeError(f"{method.name} works on task vectors and needs a 'base_model'", field="base_model")
        weights = [m.weight for m in self.models]
        if any(w is not None for w in weights):
            if not method.uses_weights:  # merged without them, while the card's recipe still lists them
                weighing = ", ".join(m.name for m in list_methods() if m.uses_weights)  # before "every model":
                raise RecipeError(f"{method.name} uses no per-model weights, so each 'weight' would be ignored; "
                                  f"remove them, or choose a method that weighs the models ({weighing})",
                                  field="models")  # giving the rest a weight would not do
            if any(w is None for w in weights):
                raise RecipeError("give a 'weight' to every model or to none", field="models")
            if not all(math.isfinite(w) for w in weights if w is not None):
                raise RecipeError("weights must be finite numbers", field="models")
        elif method.needs_weights:
            raise RecipeError(f"{method.name} needs a 'weight' for every model", field="models")
        if method.linear is not None:  # its coefficients (weights that sum to 0) fail here, not after the plan
            method.linear(n, None if weights[0] is None else [float(w) for w in weights if w is not None],
                          self.parameters)
        for i, entry in enumerate(self.models):
            problem = task_name_problem(entry.task) if entry.task is not None else None
            if problem:
                raise RecipeError(problem, field=f"models[{i}].task")
        tasks = [m.task for m in self.models if m.task is not None]
        duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
        if duplicates:
            raise RecipeError(f"task(s) {', '.join(duplicates)} appear more than once", field="models")
        folded = [t.casefold() for t in tasks]
        if clashing := [t for t in tasks if folded.count(t.casefold()) > 1]:
            raise RecipeError(
                f"tasks {', '.join(map(repr, clashing))} differ only in case: their heads' folders (heads/<task>/) "
                "would be one folder on macOS and Windows; name them apart",
                field="models",
            )
        if self.default_task is not None and self.default_task not in tasks:
            raise RecipeError(
                f"'{self.default_task}' is not one of the recipe's tasks ({', '.join(tasks) or 'none'})"
                + did_you_mean(self.default_task, tasks),
                field="default_task",
            )
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise RecipeError(f"dtype must be one of {', '.join(_DTYPES)} (or omitted to keep the inputs', float32 "
                              "where they differ)", field="dtype")
        if not _DEVICE.match(self.device):
            raise RecipeError("device must be auto, cpu, cuda or cuda:N", field="device")
        for prefix in self.target_modules:
            if not isinstance(prefix, str) or not prefix.strip("."):
                raise RecipeError(f"target module prefixes must be non-empty strings, got {prefix!r}", field="target_modules")

    # ------------------------------------------------------------------ derived facts

    @property
    def tasks(self) -> list[str]:
        return [m.task for m in self.models if m.task is not None]

    def check_heads(self, held: Sequence[str], output: object) -> None:
        """Refuse an output whose heads are not the tasks this, its recipe, merged (``hubmerge_heads.json``
        edited since the merge): its card, push or evaluation would name heads that are not there.

        Raises:
            ModelFilesNotFoundError: a task without its head, or a head of no task.
        """
        problems = []
        if missing := [t for t in self.tasks if t not in held]:
            problems.append(f"no head for {listed(missing, 5)}, which its recipe merged")
        if extra := [t for t in held if t not in self.tasks]:
            problems.append(f"heads for {listed(extra, 5)}, which its recipe does not name")
        if problems:
            raise ModelFilesNotFoundError(
                f"'{output}' is not as it was merged: its hubmerge_heads.json lists {' and '.join(problems)} "
                "(edited since the merge?); merge it again, or restore the file", model=str(output)
            )

    @property
    def datasets(self) -> dict[str, DatasetRef]:
        """Task -> the dataset it is evaluated on, for the entries that name both."""
        return {m.task: m.dataset for m in self.models if m.task is not None and m.dataset is not None}

    @property
    def local_paths(self) -> dict[Path, str]:
        """The local folders the merge reads (input models, datasets), each with what it is: the output must
        not replace them."""
        found: dict[Path, str] = {}
        if self.base_model is not None and self.base_model.path is not None:
            found[self.base_model.path] = "the base model"
        for i, entry in enumerate(self.models):
            if entry.model.path is not None:
                found.setdefault(entry.model.path, f"the input model of {_entry_name(i, entry)}")
            if entry.dataset is not None and entry.dataset.is_local:
                found.setdefault(Path(entry.dataset.path).expanduser(), f"the dataset of {_entry_name(i, entry)}")
        return found

    @property
    def inputs(self) -> list[ModelRef]:
        """The base model (when there is one), then every model, in order."""
        return ([self.base_model] if self.base_model else []) + [m.model for m in self.models]

    @property
    def on_hub(self) -> bool:
        """Whether any model (or the base) is a Hub repo rather than a local directory."""
        return any(not ref.is_local for ref in self.inputs)

    @property
    def inputs_in_words(self) -> str:
        """"3 fine-tuned models and their base", or "3 models" without one: how the CLI and the card count."""
        count = len(self.models)
        if self.base_model is None:
            return f"{count} models"
        return f"{count} fine-tuned models and their base" if count != 1 else "1 fine-tuned model and its base"

    @property
    def resolved_default_task(self) -> str | None:
        return self.default_task or (self.tasks[0] if self.tasks else None)

    def with_revisions(self, shas: Mapping[ModelRef, str | None]) -> Recipe:
        """A copy with every Hub model pinned to the commit sha it resolved to, and every local folder
        (model, ``./dataset``) absolute: written into an output, its recipe is read from there, where a path
        relative to the working directory named another folder (a dataset) or a Hub repo (a model)."""
        return replace(
            self,
            base_model=self.base_model.pinned(shas.get(self.base_model)) if self.base_model else None,
            models=tuple(replace(m, model=m.model.pinned(shas.get(m.model)),
                                 dataset=m.dataset.resolved(Path.cwd()) if m.dataset else None)
                         for m in self.models),
        )

    def shared(self, names: Mapping[Path, str]) -> Recipe:
        """The recipe as it is published: each local folder (model, dataset) by its name in ``names``
        (``shared_names``), Hub inputs as they are. It parses, and merges again where those folders are laid
        out beside it; its local paths are not this machine's."""
        def shared_ref(ref: ModelRef) -> ModelRef:
            name = names.get(ref.path) if ref.path is not None else None
            return ref if name is None else ModelRef(path=Path(name))

        return replace(
            self,
            base_model=shared_ref(self.base_model) if self.base_model else None,
            models=tuple(replace(m, model=shared_ref(m.model), dataset=m.dataset.shared(names) if m.dataset else None)
                         for m in self.models),
        )

    # ------------------------------------------------------------------ YAML

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None = None, source: str | None = None) -> Recipe:
        """Build a recipe from parsed YAML; ``base_dir`` resolves relative model paths."""
        try:
            return cls._from_dict(data, base_dir=base_dir)
        except RecipeError as exc:
            if source and exc.source is None:
                exc.append_to_message(f"(in {source})")
            raise

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], *, base_dir: Path | None) -> Recipe:
        if not isinstance(data, Mapping):
            raise RecipeError("a recipe is a YAML mapping with at least 'method' and 'models'")
        unknown = _unknown_keys(data, _TOP_LEVEL, _PEER_KEYS)
        if unknown:
            raise RecipeError(f"{unknown} Allowed keys: {', '.join(_TOP_LEVEL)}.")
        method = data.get("method")
        if not isinstance(method, str):
            raise RecipeError("name a merge method, e.g. 'method: task_arithmetic'", field="method")
        raw_models = data.get("models")
        if not isinstance(raw_models, list):
            raise RecipeError("'models' must be a list of entries like '- model: org/name'", field="models")
        models = tuple(cls._entry(item, i, base_dir) for i, item in enumerate(raw_models))
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise RecipeError("'parameters' must be a mapping like '{scaling_factor: 0.3}'", field="parameters")
        base = data.get("base_model")
        for key in ("default_task", "name"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise RecipeError(f"{key} must be a name, got {data[key]!r}", field=key)
        target = data.get("target_modules") or ()
        if isinstance(target, str):
            target = (target,)
        if not isinstance(target, (list, tuple)):
            raise RecipeError("a list of name prefixes, e.g. [convnext]", field="target_modules")
        return cls(
            method=method,
            models=models,
            parameters=dict(parameters),
            base_model=ModelRef.parse(base, base_dir=base_dir, field="base_model") if base is not None else None,
            target_modules=tuple(str(t) for t in target),
            dtype=data.get("dtype"),
            device=str(data.get("device") or "auto"),
            default_task=data.get("default_task"),
            name=data.get("name"),
        )

    @staticmethod
    def _entry(item: Any, i: int, base_dir: Path | None) -> ModelEntry:
        where = f"models[{i}]"
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, Mapping) or "model" not in item:
            raise RecipeError("each entry needs 'model: org/name[@revision]' or a local path", field=where)
        unknown = _unknown_keys(item, _ENTRY_KEYS, _PEER_ENTRY_KEYS)
        if unknown:
            raise RecipeError(f"{unknown} Allowed: {', '.join(_ENTRY_KEYS)}.", field=where)
        task = item.get("task")
        if task is not None and (not isinstance(task, str) or not task.strip()):
            raise RecipeError(f"task must be a name, got {task!r}", field=f"{where}.task")
        weight = item.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))):
            raise RecipeError(f"weight must be a number, got {weight!r}", field=f"{where}.weight")
        dataset = item.get("dataset")
        return ModelEntry(
            model=ModelRef.parse(item["model"], base_dir=base_dir, field=f"{where}.model"),
            task=task,
            weight=float(weight) if weight is not None else None,
            dataset=DatasetRef.parse(dataset, field=f"{where}.dataset").resolved(base_dir) if dataset is not None else None,
        )

    @classmethod
    def from_yaml(cls, text: str, *, base_dir: Path | None = None, source: str | None = None) -> Recipe:
        data = read_yaml(text, source=source)
        if data is None:
            raise RecipeError("the recipe is empty", source=source)
        from .fusionbench import from_fusionbench, is_fusionbench

        if is_fusionbench(data):
            return from_fusionbench(data, base_dir=base_dir, source=source)
        return cls.from_dict(data, base_dir=base_dir, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, ready for YAML; parameters include the defaults that were filled in."""
        out: dict[str, Any] = {"method": self.method, "parameters": dict(self.parameters)}
        if self.name:
            out["name"] = self.name
        if self.base_model is not None:
            out["base_model"] = str(self.base_model)
        models = []
        for entry in self.models:
            item: dict[str, Any] = {"model": str(entry.model)}
            if entry.task is not None:
                item["task"] = entry.task
            if entry.weight is not None:
                item["weight"] = entry.weight
            if entry.dataset is not None:
                item["dataset"] = entry.dataset.to_yaml()
            models.append(item)
        out["models"] = models
        if self.target_modules:
            out["target_modules"] = list(self.target_modules)
        if self.dtype:
            out["dtype"] = self.dtype
        if self.device != "auto":
            out["device"] = self.device
        if self.default_task:
            out["default_task"] = self.default_task
        return out

    def to_yaml(self) -> str:
        text: str = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        return text


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last one, so a
    second ``models:`` block would silently replace the first. Numbers as YAML 1.2 writes them (``1e-3``,
    ``3e-1``) are numbers: PyYAML follows YAML 1.1, which wants ``1.0e-3`` and reads ``1e-3`` as text."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` brings keys that this mapping's own may override, as YAML intends
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader refuses it itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping (the second would replace the first)",
                    key_node.start_mark,
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


_UniqueKeyLoader.add_implicit_resolver(  # after YAML 1.1's own float rule, for what that rule leaves as text
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str, *, source: str | None = None) -> Any:
    """YAML as a recipe (or a part of one, such as the web form's dataset cell) is read: safely, a key given
    twice refused, and refused where it nests or expands (aliases of aliases) past anything a recipe holds.

    Raises:
        RecipeError: the text is no YAML, or nests or expands too far.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"the YAML cannot be parsed{where}: {problem}", source=source) from None
    except RecursionError:
        raise RecipeError("the YAML nests deeper than a recipe ever does", source=source) from None
    if data is not None and expanded_size(data) > MAX_SIZE:  # before a message's repr or a dump writes it all out
        raise RecipeError(f"the YAML writes out to more than {MAX_SIZE:,} values and characters once its "
                          "aliases are expanded (aliases of aliases?); a recipe is a few thousand", source=source)
    return data


def described_dataset(spec: str, label_column: str | None, image_column: str | None) -> str:
    """A dataset's one line and the columns named for it (``DatasetRef.described``), also where only the line and
    the columns were kept (an evaluation's results)."""
    named = [f"{what} column {name}" for what, name in (("label", label_column), ("image", image_column))
             if name is not None]
    return ", ".join([spec, *named])


def shared_names(folders: Iterable[Path]) -> dict[Path, str]:
    """How a published recipe, card or report names each local folder: ``./`` and its path below the folders'
    common parent (``/home/alice/work/base`` and ``/home/alice/work/task1`` are ``./base`` and ``./task1``), so
    that no path of this machine (home folder, user name, disk layout) is published. A Hugging Face cache
    snapshot is ``./models--org--name/snapshots/<commit>``, which reads back as that commit on the Hub.

    Where that parent is a filesystem root or above the home folder (inputs on two disks, or in two users'
    homes), each folder is named by the fewest last components that tell the folders apart instead.
    """
    found = {folder: Path(os.path.abspath(folder)) for folder in folders}
    names = {folder: "./" + PurePath(*path.parts[-3:]).as_posix() for folder, path in found.items()
             if ModelRef(path=path).hub_copy}
    rest = {folder: path for folder, path in found.items() if folder not in names}
    if not rest:
        return names
    parent = _common_parent(list(rest.values()))
    if parent is not None:
        return names | {folder: f"./{path.relative_to(parent).as_posix()}" for folder, path in rest.items()}
    below_root = [path.parts[1:] for path in rest.values()]
    for count in range(1, max(map(len, below_root)) + 1):
        tails = [PurePath(*parts[-count:]).as_posix() for parts in below_root]
        if len(set(tails)) == len(tails):
            break
    return names | {folder: f"./{tail}" for folder, tail in zip(rest, tails)}


def _common_parent(paths: list[Path]) -> Path | None:
    """The folder ``paths`` are all below, or None where naming them from there would show this machine's
    layout: a filesystem root, or a folder above the home folder (``/home``: the user name below it)."""
    try:
        parent = Path(os.path.commonpath([path.parent for path in paths]))
    except ValueError:  # on two drives
        return None
    return None if parent == Path(parent.anchor) or parent in Path.home().parents else parent


def _entry_name(index: int, entry: ModelEntry) -> str:
    return f"task '{entry.task}'" if entry.task is not None else f"models[{index}]"


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; relative model paths are taken from the file's directory."""
    path = Path(path)
    if path.is_dir():
        stored = path / RECIPE_FILE
        hint = f"; the recipe this merged output was made from is {stored}" if stored.is_file() else ""
        raise RecipeError(f"'{path}' is a directory, not a recipe file{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file '{path}' cannot be read: {exc}") from None
    return Recipe.from_yaml(text, base_dir=path.parent.absolute(), source=str(path))
