"""Load standard models out of merged outputs and inputs: any task's head on the merged backbone.

A merged output holds the backbone once and every task's head under ``heads/<task>/``, listed in
``hubmerge_heads.json`` (see ``hubmerge.vision.heads``). ``load_merged`` puts a task's head (and
labels) on the backbone and returns a plain transformers model (or a torchvision ResNet for that
family): nothing custom travels with it. ``load_classifier`` does the same for input models,
optionally with another model's head (the base backbone with a task head, say). Loading is strict:
a missing, unexpected or mis-shaped tensor is an error that names them.

Hub repos are read with ``huggingface_hub``: the revision is pinned to one commit first, then only
the files needed are downloaded (the root config and weights, and the one task's head folder).
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    HubError,
    ModelFilesNotFoundError,
    RecipeError,
    UnknownTaskError,
    UnsupportedArchitectureError,
    WeightsError,
    did_you_mean,
)
from ..json_files import read_json_file
from ..recipe import RECIPE_FILE, ModelRef, task_name_problem
from .families import TORCHVISION_FAMILY, Family, detect_family, torchvision_architecture

if TYPE_CHECKING:
    import torch

__all__ = ["load_classifier", "load_merged", "model_labels", "model_tasks", "resolve_model_dir"]

HEADS_DIR = "heads"
INDEX_FILE = "hubmerge_heads.json"
_MODEL_FILES = ("config.json", "model*.safetensors", "model.safetensors.index.json", "preprocessor_config.json",
                INDEX_FILE)
_SHA = re.compile(r"^[0-9a-f]{40}$")
_TORCHVISION_LABELS: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------- files


@contextmanager
def _hub(repo_id: str, revision: str | None, path: str | None = None) -> Iterator[None]:
    from ..hub.source import hub_errors

    with hub_errors(repo_id, revision=revision, path=path):
        yield


def _pinned(ref: ModelRef, revision: str | None, token: str | None) -> str | None:
    """The commit sha ``ref`` (at ``revision``) points to now, so every file comes from one commit."""
    from huggingface_hub import HfApi, constants

    wanted = revision or ref.revision
    if (wanted is not None and _SHA.match(wanted)) or constants.HF_HUB_OFFLINE:
        return wanted  # a sha already, or offline: the cache resolves the name
    with _hub(str(ref.repo_id), wanted):
        return HfApi(token=token).model_info(str(ref.repo_id), revision=wanted).sha or wanted


def offline_cache_gap(what: str, directory: Path | None = None) -> HubError | None:
    """Offline, a Hub model's snapshot in the cache holds only the files downloaded before (a merge fetches
    its config alone), so a file missing there may be missing from the cache, not from the model: the error
    to raise then instead of blaming the model, or None. ``directory``: None for a Hub repo, else checked."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return None
    if directory is not None and Path(constants.HF_HUB_CACHE).resolve() not in directory.resolve().parents:
        return None  # a directory of the user's own: what it lacks, it lacks
    return HubError(f"cannot get {what}: HF_HUB_OFFLINE is set, and the local cache holds only the files "
                    "downloaded before. Unset HF_HUB_OFFLINE (or run this once online) to fetch it.")


def _local_model_dir(path: Path) -> Path:
    """``path``, when it is a folder with a model in it; otherwise an error that says where the models are
    (a folder of fine-tunes given for one of them, say)."""
    from ..weights.index import INDEX_FILE as WEIGHT_INDEX
    from ..weights.index import SINGLE_FILE, no_weights_message

    if not path.is_dir():  # a typo in a path: not 'not a model directory', as if a folder of other files
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise ModelFilesNotFoundError(f"'{path}' {what}", model=str(path))
    if (path / "config.json").is_file() or any(path.glob("*.safetensors")):
        return path
    entries = list(path.iterdir())
    listing = [entry.name for entry in entries if entry.is_file()] + [
        f"{entry.name}/{name}" for entry in entries if entry.is_dir()
        for name in (SINGLE_FILE, WEIGHT_INDEX) if (entry / name).is_file()
    ]
    raise ModelFilesNotFoundError(no_weights_message(f"'{path}' holds no model", listing), model=str(path))


def resolve_model_dir(
    path_or_repo: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | None = None,
    subfolders: Sequence[str] = (),
    files: Sequence[str] | None = None,
) -> Path:
    """A local directory holding the model: the path itself, or a Hub snapshot (``org/name[@rev]``).

    Args:
        path_or_repo: a directory, or a repo id with an optional ``@revision``.
        revision: overrides the ``@revision`` of the repo id.
        token: for private repos.
        subfolders: folders of a merged output to download as well (e.g. ``heads/mnist``).
        files: the file patterns to download (default: the root config, weights, processor and
            ``hubmerge_heads.json``; patterns are matched against whole repo paths). Such a fetch of a
            few small files draws no bar and, where none exists, logs no warning: the caller says
            what a missing file means.

    Returns:
        The directory (for a repo: its snapshot at one commit in the Hugging Face cache).

    Raises:
        ModelFilesNotFoundError: a local path that is not a directory.
        RepoNotFoundError / HubError / AuthenticationError: for Hub repos.
    """
    ref = ModelRef.parse(path_or_repo)
    if ref.path is not None:
        return _local_model_dir(ref.path)
    from huggingface_hub import snapshot_download

    sha = _pinned(ref, revision, token)
    patterns = list(files if files is not None else _MODEL_FILES)
    patterns += [f"{folder.rstrip('/')}/*" for folder in subfolders]
    with _hub(str(ref.repo_id), sha), (_fetch_quietly() if files is not None else nullcontext()):
        return Path(snapshot_download(str(ref.repo_id), revision=sha, token=token, allow_patterns=patterns))


@contextmanager
def _fetch_quietly() -> Iterator[None]:
    """Without huggingface_hub's "Fetching 2 files" bar and its "No files matched [...]" warning (a plain
    model has no ``hubmerge_heads.json``): next to hubmerge's own output they only puzzle. The settings
    come back as they were once no thread fetches (``setting_changed``)."""
    import logging

    from ..progress import hub_bars_off, setting_changed

    logger = logging.getLogger("huggingface_hub._snapshot_download")
    with setting_changed("snapshot_download's log level", lambda: logger.level,
                         lambda: logger.setLevel(logging.ERROR), logger.setLevel), hub_bars_off():
        yield


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object a model file holds; None when it is absent or holds something else.

    Raises:
        WeightsError: the file is no JSON (a hand edit or a cut download), in words, not a JSONDecodeError.
    """
    data = read_json_file(path, lambda problem: WeightsError(f"'{path}' is {problem}"))
    return data if isinstance(data, dict) else None


def _weight_files(directory: Path) -> list[Path]:
    from ..weights.index import INDEX_FILE as WEIGHT_INDEX
    from ..weights.index import safe_shard_name

    if (directory / "model.safetensors").is_file():  # before an index beside it, as the merge reads a model
        return [directory / "model.safetensors"]
    index = read_json_object(directory / WEIGHT_INDEX)
    if index is not None and isinstance(index.get("weight_map"), dict):  # a published repo's: names checked
        where = str(directory / WEIGHT_INDEX)
        return [directory / safe_shard_name(where, name) for name in sorted(set(index["weight_map"].values()))]
    return sorted(directory.glob("*.safetensors"))


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = _weight_files(directory)
    if not files:
        if gap := offline_cache_gap(f"the weights of '{directory}'", directory):
            raise gap
        raise ModelFilesNotFoundError(f"'{directory}' holds no .safetensors weights", path=str(directory))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise ModelFilesNotFoundError(f"'{file}' is listed in the shard index but missing", path=str(file))
        tensors.update(load_file(file))
    return tensors


# ---------------------------------------------------------------------------- building


def _build(family: Family, config: Mapping[str, Any], where: str) -> torch.nn.Module:
    """An empty model of ``family`` shaped by ``config``, on the meta device (no time spent initialising)."""
    import torch

    with torch.device("meta"):
        if family.library == "torchvision":
            import torchvision

            architecture = str(config.get("architecture"))
            builder = getattr(torchvision.models, architecture, None) if architecture.startswith("resnet") else None
            if builder is None:
                raise UnsupportedArchitectureError(f"{where} (torchvision architecture {architecture!r})",
                                                   ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
            classes = len(config["id2label"]) if config.get("id2label") else int(config.get("num_classes", 1000))
            model: torch.nn.Module = builder(weights=None, num_classes=classes)
            return model
        from transformers import AutoConfig, AutoModelForImageClassification

        values = dict(config)
        built = AutoConfig.for_model(values.pop("model_type"), **values)
        return AutoModelForImageClassification.from_config(built)


def _load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> torch.nn.Module:
    """Fill a meta-device model with ``state``; every tensor must be named, none may be left over."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {list(state[k].shape)} (model {list(expected[k].shape)})"
                    for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{where}: the weights do not fit the model its config describes: "
            f"missing {missing[:8] or 'none'}{' ...' if len(missing) > 8 else ''}; "
            f"unexpected {unexpected[:8] or 'none'}{' ...' if len(unexpected) > 8 else ''}; "
            f"wrong shape {shapes[:8] or 'none'}. Is it a complete model of this family?"
        )
    model.load_state_dict(dict(state), strict=True, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a non-persistent buffer the checkpoint cannot fill
        raise WeightsError(f"{where}: the model has tensors no checkpoint holds: {left[:8]}")
    return model.eval()


def _float_dtype(state: Mapping[str, torch.Tensor], family: Family) -> torch.dtype | None:
    """The dtype the backbone runs in (its own head's, else its first float tensor's): a head from a model saved
    in another (a float16 fine-tune's on a float32 base) is cast to it, or the forward pass mixes dtypes."""
    own = state.get(family.head_weight)
    if own is not None and own.is_floating_point():
        return own.dtype
    return next((v.dtype for v in state.values() if v.is_floating_point()), None)


def _torchvision_shape(state: Mapping[str, torch.Tensor], family: Family) -> dict[str, Any]:
    """A torchvision ResNet's architecture and head size as its tensors say them: its ``config.json`` is
    optional, and one written by hand without ``num_classes`` or ``id2label`` made loading raise KeyError."""
    shape: dict[str, Any] = {"architecture": torchvision_architecture(state)}
    if family.head_weight in state:
        shape["num_classes"] = int(state[family.head_weight].shape[0])
    return shape


def _compose(
    backbone_dir: Path, head_dir: Path | None, *, where: str, task_folder: bool = False
) -> torch.nn.Module:
    """The model in ``backbone_dir``, with the head tensors and labels of ``head_dir`` when given.

    ``task_folder``: ``head_dir`` is an output's ``heads/<task>/``, whose every tensor is the task's own (its
    head, and what the merge kept per task outside ``target_modules``), so all of them replace the root's;
    from any other model only the head is taken."""
    state = _state_dict(backbone_dir)
    config = read_json_object(backbone_dir / "config.json")
    family = detect_family(config, state, where=str(backbone_dir))
    if head_dir is not None:
        head_config = read_json_object(head_dir / "config.json")
        head_state = _state_dict(head_dir)
        if family.head_weight not in head_state:
            raise WeightsError(f"{where}: '{head_dir}' holds no '{family.head_weight}' to use as a {family.name} head")
        dtype = _float_dtype(state, family)
        state = {k: v for k, v in state.items() if not family.is_head(k)}
        state.update({k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
                      for k, v in head_state.items() if task_folder or family.is_head(k)})
        config = dict(config or {})
        for key in ("id2label", "label2id", "num_classes"):
            config.pop(key, None)
            if head_config and key in head_config:
                config[key] = head_config[key]
        if "id2label" not in config:
            rows = head_state[family.head_weight].shape[0]
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(rows)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(rows)}
    if family.name == TORCHVISION_FAMILY:  # a config written by hand may leave out what the tensors say
        config = {**_torchvision_shape(state, family), **(config or {})}
    if config is None:
        if gap := offline_cache_gap(f"the config.json of '{backbone_dir}'", backbone_dir):
            raise gap
        raise ModelFilesNotFoundError(f"'{backbone_dir}' has no config.json", path=str(backbone_dir))
    config = {k: v for k, v in config.items() if not k.startswith("hubmerge_")}
    model = _load_strict(_build(family, config, where), state, where)
    if family.library == "torchvision":  # torchvision models carry no labels: remember them here
        _TORCHVISION_LABELS[model] = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    return model


# ---------------------------------------------------------------------------- merged outputs


def _local_index(directory: Path, listed: Sequence[str] | None = None) -> tuple[list[str], str | None]:
    """The tasks and default task of an output: ``hubmerge_heads.json``, else its head folders and recipe.

    ``listed``: the head folders when they are not on disk (a Hub output that predates the index).
    """
    index = read_json_object(directory / INDEX_FILE)
    if index is not None and isinstance(index.get("tasks"), dict):
        tasks, default = list(index["tasks"]), index.get("default_task")
        for task in [*tasks, *([default] if default is not None else [])]:
            problem = task_name_problem(task) if isinstance(task, str) else f"a task name must be text, not {task!r}"
            if problem:  # a path outside heads/ would be read as the head
                raise WeightsError(f"'{directory / INDEX_FILE}' names a task no hubmerge output holds: {problem}")
        return tasks, default
    heads = directory / HEADS_DIR
    if listed is None:
        listed = [p.name for p in heads.iterdir() if (p / "config.json").is_file()] if heads.is_dir() else []
    found, default = sorted(listed), None
    if found and (directory / RECIPE_FILE).is_file():
        from ..recipe import load_recipe

        recipe = load_recipe(directory / RECIPE_FILE)
        found = [t for t in recipe.tasks if t in found] + [t for t in found if t not in recipe.tasks]
        default = recipe.resolved_default_task
    return found, default


@dataclass(frozen=True)
class _OutputIndex:
    ref: ModelRef
    sha: str | None  # the pinned commit of a Hub repo
    directory: Path  # the output, or its snapshot (holding at least the index and the recipe, if any)
    tasks: list[str]
    default: str | None

    @property
    def untasked_output(self) -> bool:
        """A hubmerge output of inputs that named no task: no heads/, its root carries the first input's head."""
        return not self.tasks and (self.directory / RECIPE_FILE).is_file()


def _output_index(path_or_repo: str | os.PathLike[str], revision: str | None, token: str | None) -> _OutputIndex:
    """The tasks and default task of a merged output, reading only ``hubmerge_heads.json`` (and its recipe)."""
    ref = ModelRef.parse(path_or_repo)
    if ref.path is not None:
        if revision is not None:  # it was ignored: the folder was loaded as it is, whatever was asked for
            raise RecipeError(f"'{ref.path}' is a local folder, which has no revisions; revision= is for Hub repos",
                              field="revision")
        return _OutputIndex(ref, None, _local_model_dir(ref.path), *_local_index(ref.path))
    from huggingface_hub import HfApi, constants

    sha = _pinned(ref, revision, token)
    directory = resolve_model_dir(str(ref.repo_id), revision=sha, token=token, files=(INDEX_FILE, RECIPE_FILE))
    if (directory / INDEX_FILE).is_file() or constants.HF_HUB_OFFLINE:
        return _OutputIndex(ref, sha, directory, *_local_index(directory))
    with _hub(str(ref.repo_id), sha):  # no index: a plain model, or an output written before it existed
        files = HfApi(token=token).list_repo_files(str(ref.repo_id), revision=sha)
    listed = {f.split("/")[1] for f in files if f.startswith(f"{HEADS_DIR}/") and f.endswith("/config.json")}
    return _OutputIndex(ref, sha, directory, *_local_index(directory, sorted(listed)))


def model_tasks(
    path_or_repo: str | os.PathLike[str], *, revision: str | None = None, token: str | None = None
) -> list[str]:
    """The tasks a merged output carries (its heads), in recipe order; [] for a plain model.

    Args:
        path_or_repo: a merged output directory or Hub repo ``org/name[@revision]``.
        revision, token: for Hub repos (only ``hubmerge_heads.json`` is downloaded).

    Returns:
        The task names.

    Raises:
        ModelFilesNotFoundError: a local path that is not a directory. HubError / RepoNotFoundError.

    Example:
        >>> model_tasks("out/merged")
        ['sun397', 'stanford-cars', ...]
    """
    return _output_index(path_or_repo, revision, token).tasks


def load_merged(
    path_or_repo: str | os.PathLike[str],
    task: str | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> torch.nn.Module:
    """A standard model for ``task`` from a merged output: the merged backbone with that task's head.

    Args:
        path_or_repo: an output directory of ``hubmerge merge``, or a Hub repo ``org/name[@revision]``.
        task: which head; default: the output's default task (the one the root carries). An output of
            inputs that named no task has no per-task heads: load it without one (its root).
        revision, token: for Hub repos; only the root files and ``heads/<task>/`` are downloaded.

    Returns:
        A transformers ``*ForImageClassification`` (``.logits``, ``config.id2label``) in eval mode,
        or a ``torchvision.models.ResNet`` for that family (labels: ``model_labels``).

    Raises:
        UnknownTaskError: ``task`` is not one of the output's tasks (they are listed), or the
            directory is not a merged output.
        WeightsError: the tensors do not fit the model (missing / unexpected / mis-shaped named).
        ModelFilesNotFoundError, HubError, RepoNotFoundError: files or repos that are not there.

    Example:
        >>> model = load_merged("out/merged", task="mnist")
        >>> model(pixel_values).logits.argmax(-1)
    """
    index = _output_index(path_or_repo, revision, token)
    ref, sha, tasks, default = index.ref, index.sha, index.tasks, index.default
    if index.untasked_output:
        if task is not None:
            raise UnknownTaskError(task, [], hint=f"'{path_or_repo}' keeps no per-task heads, so none for '{task}': its "
                                   "inputs named no task, and its root carries the first input's head. Load it "
                                   "without a task.")
        return load_classifier(str(ref.path or ref.repo_id), revision=sha, token=token)
    if not tasks and ref.repo_id is not None and (gap := offline_cache_gap(f"the heads of '{path_or_repo}'")):
        raise gap  # its hubmerge_heads.json may just not be in the cache
    if not tasks:
        raise UnknownTaskError(
            str(task), [],
            hint=f"'{path_or_repo}' holds no heads/<task>/, so it is no hubmerge output; load a plain model with "
            "transformers' AutoModelForImageClassification or hubmerge.vision.loading.load_classifier.",
        )
    chosen = task if task is not None else (default if default in tasks else tasks[0])
    if chosen not in tasks:
        raise UnknownTaskError(chosen, tasks, hint=f"These are the tasks of '{path_or_repo}'." + did_you_mean(chosen, tasks))
    head_folder = f"{HEADS_DIR}/{chosen}"
    if ref.path is not None:
        directory = ref.path
    else:
        directory = resolve_model_dir(str(ref.repo_id), revision=sha, token=token, subfolders=(head_folder,))
    return _compose(directory, directory / head_folder, where=f"task '{chosen}' of {path_or_repo}",
                    task_folder=True)


def load_classifier(
    model: str | os.PathLike[str],
    *,
    head_from: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> torch.nn.Module:
    """A plain model directory or repo as a classifier; with ``head_from``, wearing that model's head.

    Args:
        model: the backbone's model (a fine-tune, or the base), ``path`` or ``org/name[@revision]``.
        head_from: take the head tensors and labels from this model instead (same family), e.g. a
            task's fine-tune, or a merged output's ``heads/<task>`` folder.
        revision: for ``model`` when it is a repo (``head_from`` takes ``@revision`` in its id).
        token: for Hub repos.

    Returns:
        The model in eval mode, as ``load_merged`` returns them.

    Raises:
        UnsupportedArchitectureError: not one of the supported families.
        WeightsError: tensors that do not fit (named), or ``head_from`` without a head.

    Example:
        >>> base_with_mnist_head = load_classifier("facebook/convnext-base-224", head_from="org/convnext-mnist")
    """
    backbone = resolve_model_dir(model, revision=revision, token=token)
    head = resolve_model_dir(head_from, token=token) if head_from is not None else None
    return _compose(backbone, head, where=str(model) + (f" with the head of {head_from}" if head_from else ""))


def model_labels(model: torch.nn.Module) -> dict[int, str]:
    """id2label of a classifier from ``load_merged``/``load_classifier``, for either backend.

    transformers models: their ``config.id2label``; torchvision models: the labels of the output or
    model they were loaded from (``LABEL_i`` for a model loaded some other way).

    Example:
        >>> model_labels(load_merged("out/merged", "eurosat"))[1]
        'forest'
    """
    if _TORCHVISION_LABELS.get(model):
        return dict(_TORCHVISION_LABELS[model])
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "id2label", None):
        return {int(k): str(v) for k, v in config.id2label.items()}
    out_features = getattr(getattr(model, "fc", None), "out_features", None)
    return {i: f"LABEL_{i}" for i in range(out_features or 0)}
