"""The public entry points of :mod:`hubmerge.evaluation`: what to evaluate, on which data, and how."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelFilesNotFoundError, RecipeError, UnknownTaskError, did_you_mean
from ..output_stamp import OutputStamp
from .data import LabelMatch, check_head_labels, check_hub_datasets, load_task_data
from .loop import (
    DEFAULT_BATCH_SIZE,
    EvalProgress,
    Job,
    Processor,
    check_max_samples,
    location,
    make_settings,
    progress_bars,
    run_jobs,
    run_pass,
)
from .report import (
    AVERAGE,
    EVAL_SCOPE_FILE,
    CompareReport,
    EvalReport,
    TaskResult,
    render_report,
    save_output_reports,
)

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    import torch
    from rich.console import Console

    from ..engine import MergePlan
    from ..recipe import DatasetRef, ModelRef, Recipe

    # what evaluate_model and compare_inputs take: task -> dataset (None: the recipe's), or task names
    TaskDatasets = Mapping[str, DatasetRef | str | None] | Sequence[str]

__all__ = [
    "compare_inputs",
    "evaluate_classifier",
    "evaluate_model",
    "evaluate_recipe_tasks",
    "parse_task",
]


def parse_task(text: str) -> tuple[str, DatasetRef | None]:
    """Parse a ``--task`` value: ``NAME=DATASET[:SPLIT]``, ``NAME=DATASET:CONFIG:SPLIT`` or ``NAME``.

    ``DATASET`` is a local ``save_to_disk`` directory (a Windows drive's colon, ``C:\\data``, is no split's)
    or a Hub dataset id; the split defaults to ``test``. A bare ``NAME`` gives None: the evaluation then
    takes the dataset the model's recipe names for that task, else the task's usual one
    (``hubmerge.vision.classnames``: ``svhn`` -> ``ufldl-stanford/svhn``, config ``cropped_digits``,
    split ``test``).

    Raises:
        RecipeError: the text is malformed.

    Example:
        >>> parse_task("svhn=ufldl-stanford/svhn:cropped_digits:test")
        ('svhn', DatasetRef(path='ufldl-stanford/svhn', name='cropped_digits', split='test', ...))
    """
    from ..recipe import DatasetRef

    name, sep, dataset = text.partition("=")
    name = name.strip()
    if not name or (sep and not dataset.strip()):
        raise RecipeError(f"write --task NAME=DATASET[:SPLIT], got {text!r}", field="task")
    if name == AVERAGE:
        raise RecipeError(f"'{AVERAGE}' is reserved for the report's mean; rename the task", field="task")
    if not sep:
        return name, None
    try:
        return name, DatasetRef.parse(dataset.strip(), field="task")  # a recipe's one line, a drive's colon kept
    except RecipeError:
        raise RecipeError(
            f"write --task NAME=DATASET[:SPLIT] or NAME=DATASET:CONFIG:SPLIT, got {text!r}", field="task"
        ) from None


def _usual_dataset(name: str) -> DatasetRef:
    """The dataset a task of this name is usually evaluated on (``hubmerge.vision.classnames``)."""
    from ..recipe import DatasetRef
    from ..vision.classnames import canonical_task, dataset_for

    try:
        spec = dataset_for(canonical_task(name))
    except UnknownTaskError:
        spec = None
    if spec is None:
        raise RecipeError(f"task '{name}' has no known dataset; write --task {name}=DATASET[:SPLIT]", field="task")
    return DatasetRef(spec.repo_id, spec.config, spec.split)


def _as_ref(name: str, value: DatasetRef | str) -> DatasetRef:
    from ..recipe import DatasetRef

    if name == AVERAGE:
        raise RecipeError(f"'{AVERAGE}' is reserved for the report's mean; rename the task", field="task")
    if isinstance(value, DatasetRef):
        return value
    ref = parse_task(f"{name}={value}")[1]
    assert ref is not None  # NAME=VALUE always names a dataset
    return ref


def _model_ref(model: str | Path, revision: str | None) -> ModelRef:
    from ..recipe import ModelRef

    ref = ModelRef.parse(model, field="model")
    if revision is None or ref.path is not None:
        return ref
    return ModelRef(repo_id=ref.repo_id, revision=revision)


def evaluate_classifier(
    model: torch.nn.Module,
    dataset: DatasetRef | str,
    *,
    processor: Processor,
    task: str = "task",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    match_labels: LabelMatch = "name",
    autocast: bool = True,
    token: str | None = None,
) -> TaskResult:
    """Evaluate one in-memory classifier on one dataset split.

    Args:
        model: a classifier whose output has ``.logits`` (transformers) or is the logits tensor
            (torchvision). Its labels are read with ``hubmerge.vision.loading.model_labels``. It is
            put in eval mode and moved to ``device``.
        dataset: a ``DatasetRef`` or ``"DATASET[:SPLIT]"`` (a ``save_to_disk`` directory or a Hub id).
        processor: images -> pixel tensor, e.g. ``hubmerge.vision.processors.load_processor(repo)``.
        task: the task name, for messages and the progress bar.
        batch_size: images per forward pass.
        max_samples: evaluate a fixed random subset of this many examples (seed 0, the same on
            every call and for every model) instead of the whole split.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        num_workers: DataLoader workers; default ``min(4, cpu count)``, or 0 for small splits.
        match_labels: ``"name"`` matches the dataset's class names onto the model's ``id2label``
            (remapping a different order); ``"position"`` trusts that label i is output i.
        autocast: use bf16 autocast on CUDA (ignored on CPU).
        token: Hub token for private datasets.

    Returns:
        The :class:`TaskResult`.

    Raises:
        DatasetError: the dataset, split or its image / label columns cannot be found.
        HeadMismatchError: the head and the dataset's labels disagree in size or names.
        RecipeError: a bad argument (device, batch size, max_samples).

    Example:
        >>> result = evaluate_classifier(model, "./data/eurosat:test", processor=load_processor(repo))
        >>> result.accuracy
    """
    from ..recipe import DatasetRef

    check_max_samples(max_samples)
    ref = dataset if isinstance(dataset, DatasetRef) else DatasetRef.parse(dataset)
    settings = make_settings(device, batch_size, num_workers, match_labels, autocast, None)
    data = load_task_data(task, ref, max_samples=max_samples, token=token)
    return run_pass(data, [(task, model)], processor, settings)[task]


def _output_file(ref: ModelRef, name: str, *, token: str | None, required: bool = True) -> Path | None:
    """One of a merged output's files (its folder's, or downloaded from its repo), or None when it has none; one
    not ``required`` is None also where the Hub is out of reach and the cache lacks it (offline, a repo cached by
    a hubmerge that never read that file)."""
    if ref.path is not None:
        from ..vision.loading import resolve_model_dir

        path = resolve_model_dir(ref.path) / name  # a missing folder is missing, not file-less
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    from ..hub.source import hub_errors

    repo_id = str(ref.repo_id)
    with hub_errors(repo_id, revision=ref.revision, path=name):
        try:
            return Path(hf_hub_download(repo_id, name, revision=ref.revision, token=token))
        except LocalEntryNotFoundError:
            if not required:
                return None
            raise  # not a missing file: the Hub is out of reach, which hub_errors says
        except EntryNotFoundError:
            return None


def _read_recipe(ref: ModelRef, *, token: str | None) -> Recipe | None:
    """The recipe stored with a merged output, or None when it has none."""
    from ..recipe import RECIPE_FILE, Recipe

    path = _output_file(ref, RECIPE_FILE, token=token)
    if path is None:
        return None
    if ref.path is not None:
        return Recipe.from_yaml(path.read_text(encoding="utf-8"), base_dir=ref.path, source=str(path))
    return Recipe.from_yaml(path.read_text(encoding="utf-8"), source=f"{ref}/{RECIPE_FILE}")


def _measured_columns(ref: ModelRef, datasets: Mapping[str, DatasetRef], *, token: str | None
                      ) -> dict[str, DatasetRef]:
    """``datasets`` (an output's recipe's) read with the columns the output's saved results were measured with
    (``eval_scope.json``: ``evaluate --save --label-column``), where they were measured on the same split; as the
    recipe names them where that file is out of reach (offline, not cached), as before outputs recorded columns.

    Raises:
        RecipeError: its ``eval_scope.json`` is no JSON object.
    """
    from ..published import read_output_json, scope_datasets

    path = _output_file(ref, EVAL_SCOPE_FILE, token=token, required=False) if datasets else None
    measured = scope_datasets(read_output_json(path) or {}, datasets) if path is not None else {}
    return {task: measured[task] if task in measured and measured[task].same_split(dataset) else dataset
            for task, dataset in datasets.items()}


def check_recipe_datasets(recipe: Recipe, *, token: str | None = None) -> dict[str, tuple[str, ...]]:
    """Before a merge that will be evaluated: refuse a dataset the recipe names by a Hub id that does
    not exist, or a split it lacks (see :func:`~hubmerge.evaluation.data.check_hub_datasets`).

    Returns:
        The class names of each task's Hub dataset, where its card lists them, for
        :func:`check_planned_evaluation`.
    """
    return check_hub_datasets(recipe.datasets, token=token)


def check_planned_labels(merge_plan: MergePlan, class_names: Mapping[str, Sequence[str]],
                         match_labels: LabelMatch = "name") -> None:
    """Before the merge: refuse a head whose labels its Hub dataset's ``class_names`` (from
    :func:`check_recipe_datasets`) do not fit, which the evaluation would find only after the merge.

    Raises:
        HeadMismatchError: the names or sizes disagree (and how to match by position, where that fits).
    """
    datasets = merge_plan.recipe.datasets
    for head in merge_plan.heads:
        if head.task in class_names and head.labels:
            check_head_labels(head.task, datasets[head.task], class_names[head.task], head.labels,
                              match=match_labels)


def check_planned_evaluation(merge_plan: MergePlan, class_names: Mapping[str, Sequence[str]],
                             match_labels: LabelMatch = "name") -> None:
    """Before a merge that will be evaluated, what its evaluation would refuse only after it: an output with
    no image processor, or heads whose labels their Hub datasets' ``class_names`` do not fit.

    Raises:
        ModelFilesNotFoundError: the output would have no ``preprocessor_config.json``.
        HeadMismatchError: see :func:`check_planned_labels`.
    """
    _check_planned_processor(merge_plan)
    check_planned_labels(merge_plan, class_names, match_labels)


def _check_planned_processor(merge_plan: MergePlan) -> None:
    """Refuse a merge whose output would have no image processor: it takes the base's, or the first
    input's, ``preprocessor_config.json`` (torchvision families need none)."""
    from ..vision.processors import PROCESSOR_FILE

    family = merge_plan.family
    source = merge_plan.inputs[merge_plan.files_input].weights.source
    if (family is None or family.processor == "image_processor") and PROCESSOR_FILE not in source.list_files():
        raise ModelFilesNotFoundError(
            f"{source.where(PROCESSOR_FILE)}: not found. The merged model takes its image processor from there, "
            "and its evaluation needs one: save the processor with that model (processor.save_pretrained), "
            "or merge without evaluating",
            model=source.label, path=PROCESSOR_FILE,
        )


def _tasks_for(ref: ModelRef, tasks: TaskDatasets | None, known: Sequence[str], token: str | None
               ) -> dict[str, DatasetRef]:
    """Each task's dataset: as given; for a task given without one (None, or a name in a list), the dataset
    the model's recipe names for it, else its usual one; with no tasks given, every dataset the recipe names."""
    if isinstance(tasks, str):  # one task's name: iterating it would give its letters as tasks
        tasks = [tasks]
    if tasks is not None and not isinstance(tasks, Mapping):
        if not all(isinstance(name, str) for name in tasks):
            raise RecipeError(f"tasks are a mapping of task to dataset, or a list of task names; got {tasks!r}",
                              field="task")
        tasks = dict.fromkeys(tasks)
    if tasks is None:
        recipe = _read_recipe(ref, token=token)
        if recipe is not None and known:
            recipe.check_heads(known, ref)
        stored = _recipe_datasets(ref, recipe, None, token)
        if not stored:
            names = f" with NAME one of {', '.join(known)}" if known else ""
            why = ("its hubmerge_recipe.yaml has no 'dataset' entries" if recipe is not None
                   else "it holds no hubmerge_recipe.yaml: a plain model, not a hubmerge output")
            raise RecipeError(
                f"'{ref}' names no evaluation datasets ({why}). Give them: --task NAME=DATASET[:SPLIT]{names}",
                field="task",
            )
        return dict(stored)
    if not tasks:
        raise RecipeError("name at least one task to evaluate: --task NAME=DATASET[:SPLIT]", field="task")
    if known:
        for name in tasks:
            if name not in known:
                hint = f"These are the tasks whose heads '{ref}' holds." + did_you_mean(name, known)
                raise UnknownTaskError(name, known, hint=hint)
    named: Mapping[str, DatasetRef] | None = None  # the recipe's datasets, read once if a task needs them
    refs: dict[str, DatasetRef] = {}
    for name, value in tasks.items():
        if value is not None:
            refs[name] = _as_ref(name, value)
            continue
        if named is None:
            named = _recipe_datasets(ref, _read_recipe(ref, token=token), [t for t, v in tasks.items() if v is None],
                                     token)
        refs[name] = named[name] if name in named else _usual_dataset(name)
    return refs


def _recipe_datasets(ref: ModelRef, recipe: Recipe | None, tasks: Sequence[str] | None, token: str | None
                     ) -> dict[str, DatasetRef]:
    """The datasets ``recipe``, ``ref``'s own, names (for ``tasks``, default all), with the columns its saved
    results were measured with (``_measured_columns``). A pushed recipe names a local folder ``./...``, below
    the folders of the machine that merged (``hubmerge.published``): refused for an output on the Hub, where it
    named a folder of this working directory, or none.

    Raises:
        RecipeError: a dataset asked for is such a folder; it says how to give one here.
    """
    stored = _measured_columns(ref, recipe.datasets, token=token) if recipe is not None else {}
    if ref.repo_id is None:
        return stored
    elsewhere = [task for task, dataset in stored.items() if (tasks is None or task in tasks) and dataset.is_local
                 and not Path(dataset.path).expanduser().is_absolute()]
    if elsewhere:
        folders = ", ".join(stored[task].path for task in elsewhere)
        given = " ".join(f"--task {task}=DATASET" for task in elsewhere)
        raise RecipeError(f"'{ref}' was evaluated on local folders of the machine that merged it ({folders}); give "
                          f"the datasets to evaluate on: {given}", field="task")
    return stored


def evaluate_model(
    model: str | Path,
    tasks: TaskDatasets | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    match_labels: LabelMatch = "name",
    autocast: bool = True,
    revision: str | None = None,
    token: str | None = None,
    console: Console | None = None,
    cancel: threading.Event | None = None,
    on_progress: EvalProgress | None = None,
) -> EvalReport:
    """Evaluate a merged model (or a plain classifier) on each task, with that task's head.

    Args:
        model: a merged output (directory or Hub repo id, ``org/name[@revision]``) or a plain
            image classifier (then every task is evaluated with its one head).
        tasks: task -> dataset (``DatasetRef`` or ``"DATASET[:SPLIT]"``; None: the one the model's
            recipe names for that task, else its usual one), or a list of task names (each with that
            dataset); default: the datasets named in the model's ``hubmerge_recipe.yaml``.
        batch_size, max_samples, device, num_workers, match_labels, autocast: see
            :func:`evaluate_classifier`.
        revision: the model's revision when ``model`` is a repo id.
        token: Hub token for private models and datasets.
        console: draw progress bars on it (none when None or quiet).
        cancel: set it to stop before the next model's batch or load (``CancelledError``).
        on_progress: called with ``(what, images done, images in all)`` as each pass over a task's data
            starts and after each batch, and ``(what, 0, 0)`` as each load starts (progress where no console
            draws it: the web app).

    Returns:
        An :class:`EvalReport`; ``report.to_dict()`` is FusionBench's shape.

    Raises:
        UnknownTaskError: a task is not among the merged output's tasks (they are listed).
        RecipeError: no task given and the recipe names no dataset; a bad argument.
        CancelledError: ``cancel`` was set.
        DatasetError, HeadMismatchError: see :func:`evaluate_classifier`.

    Example:
        >>> evaluate_model("out/merged", {"mnist": "ylecun/mnist"}, max_samples=1000).average
    """
    from ..vision.loading import load_classifier, load_merged, model_tasks

    check_max_samples(max_samples)
    settings = make_settings(device, batch_size, num_workers, match_labels, autocast, None, cancel)  # before any load
    ref = _model_ref(model, revision)
    where = location(ref)
    known = list(model_tasks(where, revision=ref.revision, token=token))
    refs = _tasks_for(ref, tasks, known, token)

    def loader(task: str) -> Callable[[], torch.nn.Module]:
        if known:
            return lambda: load_merged(where, task, revision=ref.revision, token=token)
        return lambda: load_classifier(where, revision=ref.revision, token=token)

    jobs = [Job("model", task, loader(task), ref) for task in refs]
    with progress_bars(console) as progress:
        settings = replace(settings, progress=progress, on_progress=on_progress)
        results = run_jobs(jobs, refs, settings=settings, max_samples=max_samples, token=token)
    return EvalReport(str(ref), {task: results["model"][task] for task in refs}, str(settings.device))


def compare_inputs(
    output: str | Path,
    tasks: TaskDatasets | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    match_labels: LabelMatch = "name",
    autocast: bool = True,
    revision: str | None = None,
    token: str | None = None,
    console: Console | None = None,
    cancel: threading.Event | None = None,
    on_progress: EvalProgress | None = None,
) -> CompareReport:
    """Evaluate a merged output next to the models it was merged from.

    The inputs are the ones pinned in ``<output>/hubmerge_recipe.yaml``. Every row is evaluated on
    every task with that task's head: the merged model; the base backbone (when the recipe has a
    base); and each fine-tuned backbone (for the task it was trained on, this is the usual
    "individual" number). Rows that share a processor share each pass over the data. An output whose
    inputs named no task has no task heads: every task is then read with its root's head, the first
    input's, and there is no "individual" row.

    Args:
        output: a merged output (directory or Hub repo id ``org/name[@revision]``).
        tasks: task -> dataset; default: the datasets named in the recipe.
        Others: see :func:`evaluate_model`.

    Returns:
        A :class:`CompareReport`.

    Raises:
        RecipeError: the output has no recipe (it was not written by ``hubmerge merge``), or no
            dataset is named.
        UnknownTaskError: a task is not among the recipe's tasks.
        DatasetError, HeadMismatchError: see :func:`evaluate_classifier`; HubError: an input is gone.
        ModelFilesNotFoundError: an input that was a local directory is not there (checked first).
        CancelledError: ``cancel`` was set.

    Example:
        >>> compare = compare_inputs("out/merged", max_samples=500)
        >>> compare.merged.average["accuracy"] - compare.individual.average["accuracy"]
    """
    from ..vision.loading import load_classifier, load_merged, model_tasks

    check_max_samples(max_samples)
    settings = make_settings(device, batch_size, num_workers, match_labels, autocast, None, cancel)  # before any load
    ref = _model_ref(output, revision)
    where = location(ref)
    recipe = _read_recipe(ref, token=token)
    if recipe is None:
        raise RecipeError(
            f"'{ref}' has no hubmerge_recipe.yaml, so its inputs are unknown; --compare-inputs works on "
            "outputs of `hubmerge merge`"
        )
    recipe.check_heads(model_tasks(where, revision=ref.revision, token=token), ref)
    task_models = {e.task: e.model for e in recipe.models if e.task is not None}
    refs = _tasks_for(ref, tasks, list(task_models), token)
    _check_local_inputs(recipe, where)

    def head_of(task: str) -> ModelRef:
        """Whose head ``task`` is read with: its own input's, or, where no input named a task, the first
        input's, which the output's root keeps."""
        return task_models[task] if task_models else recipe.models[0].model

    def classifier(backbone: ModelRef, head: ModelRef) -> Callable[[], torch.nn.Module]:
        if backbone == head:
            return lambda: load_classifier(location(backbone), revision=backbone.revision, token=token)
        return lambda: load_classifier(
            location(backbone), head_from=_head_location(head), revision=backbone.revision, token=token
        )

    def merged(task: str) -> Callable[[], torch.nn.Module]:
        chosen = task if task_models else None  # no heads/: the root, with the first input's head
        return lambda: load_merged(where, chosen, revision=ref.revision, token=token)

    jobs = [Job("merged", task, merged(task), ref) for task in refs]
    base = recipe.base_model
    if base is not None:
        jobs += [Job("base", task, classifier(base, head_of(task)), base) for task in refs]
    labels = [entry.label for entry in recipe.models]
    for label, entry in zip(labels, recipe.models):
        jobs += [
            Job(f"ft:{label}", task, classifier(entry.model, head_of(task)), entry.model) for task in refs
        ]
    with progress_bars(console) as progress:
        settings = replace(settings, progress=progress, on_progress=on_progress)
        results = run_jobs(jobs, refs, settings=settings, max_samples=max_samples, token=token)
    dev = str(settings.device)

    def report(row: str, name: str) -> EvalReport:
        return EvalReport(name, {task: results[row][task] for task in refs}, dev)

    return CompareReport(
        merged=report("merged", str(ref)),
        base=report("base", f"{base} + task heads") if base is not None else None,
        finetuned={label: report(f"ft:{label}", f"{label} backbone + task heads") for label in labels},
        tasks=tuple(refs),
    )


def _check_local_inputs(recipe: Recipe, output: str | Path) -> None:
    """Before any evaluation: every input that was a local directory is still there (an output merged on
    another machine, or from folders since moved, names paths this one lacks)."""
    inputs = [recipe.base_model] if recipe.base_model is not None else []
    missing = [str(m.path) for m in [*inputs, *(e.model for e in recipe.models)]
               if m.path is not None and not m.path.is_dir()]
    if missing:
        raise ModelFilesNotFoundError(
            f"--compare-inputs loads the inputs that {output}'s hubmerge_recipe.yaml names, and "
            f"{len(missing)} of them, local directories, are not here: {', '.join(missing)}. Run it where they "
            "are, or evaluate the output alone (without --compare-inputs).",
            model=missing[0],
        )


def _head_location(ref: ModelRef) -> str | Path:
    """``head_from`` for ``load_classifier``: a directory, or ``repo@revision`` for a pinned Hub model."""
    return ref.path if ref.path is not None else str(ref)


def evaluate_recipe_tasks(
    output: str | Path,
    recipe: Recipe,
    *,
    console: Console | None = None,
    device: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    match_labels: LabelMatch = "name",
    token: str | None = None,
) -> EvalReport:
    """After a merge: evaluate every task whose recipe entry names a dataset, and save the report.

    The report is written atomically to ``<output>/eval_results.json`` (FusionBench shape), with
    ``eval_scope.json`` next to it, and drawn as a table on ``console``. Tasks without a dataset
    are skipped; with none at all, nothing is written and the report is empty.

    Args:
        output: the merged output directory.
        recipe: the recipe it was merged from.
        console: where the progress and the table go (nothing is drawn when None).
        device: ``auto``, ``cpu``, ``cuda[:N]``; default: the recipe's device.
        batch_size, max_samples, match_labels, token: see :func:`evaluate_model`.

    Returns:
        The :class:`EvalReport` (empty when no task names a dataset).

    Raises:
        See :func:`evaluate_model`.
    """
    refs = recipe.datasets
    if not refs:
        if console is not None:
            console.print("[yellow]no task names a dataset in the recipe; nothing to evaluate[/yellow]")
        return EvalReport(str(output))
    stamp = OutputStamp.take(output)
    report = evaluate_model(
        Path(output),
        refs,
        batch_size=batch_size,
        max_samples=max_samples,
        device=device or recipe.device,
        match_labels=match_labels,
        token=token,
        console=console,
    )
    path = save_output_reports(output, report, stamp=stamp)
    if console is not None:
        render_report(report, console)
        console.print(f"[green]evaluation report[/green] written to {path}")
    return report
