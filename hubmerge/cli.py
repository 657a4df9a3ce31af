"""The ``hubmerge`` command line: thin typer commands over the library.

Each command builds or loads a Recipe, calls one library function and renders the result. Errors
raised on purpose (``HubmergeError``) are printed as one message and exit 1; set
``HUBMERGE_DEBUG=1`` for the traceback. Heavy imports (torch, transformers, gradio) happen inside
the commands, so ``hubmerge --help`` and argument errors stay fast.
"""

from __future__ import annotations

import _thread
import atexit
import errno
import gc
import io
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .errors import HubmergeError, RecipeError, redact

if TYPE_CHECKING:
    from rich.console import Console

    from .engine import MergePlan
    from .hub.push import PushResult
    from .recipe import DatasetRef, Recipe

app = typer.Typer(
    name="hubmerge",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's wrapped lines read as one paragraph, `code` as code
)
hub_app = typer.Typer(help="The local Hub-compatible server.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
space_app = typer.Typer(help="The web app as a Hugging Face Space.", no_args_is_help=True)
app.add_typer(space_app, name="space")

# The libraries whose versions decide what a merge does; `hubmerge --version` names them for bug reports.
REPORTED_LIBRARIES = ("torch", "transformers", "safetensors", "huggingface_hub", "gradio")


def version_text() -> str:
    """hubmerge's version, then Python's and the reported libraries', read from metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in REPORTED_LIBRARIES)
    return f"hubmerge {__version__}\nPython {sys.version.split()[0]}, {libraries}"


def _show_version(requested: bool) -> None:
    if requested:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Show the version of hubmerge and of its main libraries.")] = False,
) -> None:
    """Merge fine-tuned models from the Hugging Face Hub without downloading them whole."""


# Shared option types (one definition, every command).
RecipeArg = Annotated[Optional[Path], typer.Argument(help="Recipe YAML (hubmerge or FusionBench style).")]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", help="A built-in recipe instead of a file.")]
TokenOpt = Annotated[
    Optional[str], typer.Option("--token", help="Hub token (default: HF_TOKEN or the login cache).", show_default=False)
]
TokenFileOpt = Annotated[Optional[Path], typer.Option("--token-file", help="Read the Hub token from this file.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N (default: the recipe's).")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16 (default: the recipe's).")]


def _for_libraries(**environment: str) -> None:
    """Settings that huggingface_hub, transformers and datasets read from the environment once, when
    imported. The CLI imports them later, so setting them now reaches them all; a process that imported
    them already (a test calling ``main``) keeps its own."""
    if "huggingface_hub" not in sys.modules:
        os.environ.update(environment)


def _quiet_libraries(value: bool) -> bool:
    """--quiet for the libraries' own bars too (downloads, uploads, dataset preparation)."""
    if value:
        _for_libraries(HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    return value


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars; print only the result.", callback=_quiet_libraries)
]


def _as_usage_error(value: str, check: Callable[[str], object]) -> str:
    """``value`` if ``check`` takes it; its refusal as a usage error (exit 2), before any work."""
    try:
        check(value)
    except RecipeError as exc:  # the usage error names the option; the recipe field's name would mislead
        raise typer.BadParameter(exc.problem) from None
    except HubmergeError as exc:
        raise typer.BadParameter(exc.message) from None
    return value


def _check_size(value: str) -> str:
    """Refuse a bad --max-shard-size before any work, not after the merge has planned."""
    from .weights.writer import parse_size

    return _as_usage_error(value, parse_size)


MaxShardSizeOpt = Annotated[str, typer.Option("--max-shard-size", help="e.g. 5GB, 500MB.", callback=_check_size)]
MaxSamplesOpt = Annotated[
    Optional[int], typer.Option("--max-samples", min=1, help="Evaluate a fixed random subset (seed 0) of each split.")
]


def _check_match_labels(value: str) -> str:
    """Refuse a bad --match-labels before the merge, not at the evaluation after it (the default needs no
    check, and a merge without evaluation no import of the evaluation)."""
    if value == "name":
        return value
    from .evaluation.loop import check_match_labels

    return _as_usage_error(value, check_match_labels)


def _check_report_path(value: Path | None) -> Path | None:
    """Refuse a --json path that cannot take the report before the evaluation, not after it; ``-`` is stdout."""
    if value is None or str(value) == "-":
        return value
    if value.is_dir():
        raise typer.BadParameter(f"'{value}' is a directory; name a file in it, e.g. {value / 'report.json'}")
    if not value.parent.is_dir():
        raise typer.BadParameter(f"its folder '{value.parent}' does not exist")
    if value.is_file() and not _replaceable_report(value):
        raise typer.BadParameter(f"'{value}' exists and is no JSON report, so it would be lost; name another file")
    return value


def _replaceable_report(path: Path) -> bool:
    """Whether --json may write over ``path``: an earlier report (JSON, and small), or an empty file as `mktemp`
    makes for a script."""
    from .json_files import parse_json

    try:
        size = path.stat().st_size
        return size == 0 or (size < 2**24 and parse_json(path.read_bytes(), ValueError) is not None)
    except (ValueError, OSError):
        return False


def _check_folder(value: Path | None) -> Path | None:
    """A folder to work in: refused at once when a file is in the way (it was an unexpected NotADirectoryError)."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"'{value}' is a file, not a folder")
    return value


MatchLabelsOpt = Annotated[
    str,
    typer.Option("--match-labels", callback=_check_match_labels,
                 help="name: match each dataset's classes to its head's id2label by name; position: by index "
                      "(for names that differ in the same order)."),
]


def _check_column(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("name a column of the datasets, e.g. coarse_label")
    return value


def _column_option(name: str, what: str) -> Any:
    return typer.Option(name, callback=_check_column,
                        help=f"The column of {what} in each dataset given with --task NAME=DATASET, where it is not "
                        "found by its type or usual names (a recipe names it in its dataset's mapping).")


def _with_columns(pairs: list[tuple[str, DatasetRef | None]], *, label_column: str | None, image_column: str | None
                  ) -> list[tuple[str, DatasetRef | None]]:
    """--label-column / --image-column on each dataset --task gives; refused where it gives none (a recipe's
    datasets name their columns in the recipe), as an option that changes nothing."""
    columns = {key: value for key, value in (("label_column", label_column), ("image_column", image_column))
               if value is not None}
    if columns and all(ref is None for _, ref in pairs):
        raise typer.BadParameter(
            "applies to the datasets given with --task NAME=DATASET, and no --task gives one; a recipe names its "
            "dataset's columns itself: `dataset: {path: ..., split: ..., label_column: ...}`",
            param_hint="--label-column" if label_column is not None else "--image-column",
        )
    return [(name, replace(ref, **columns) if ref is not None else None) for name, ref in pairs]


def _use_endpoint(value: str | None) -> str | None:
    """--endpoint for every library the command uses, not only for the merge and the push, which take it
    as an argument: the evaluation loads models and datasets through the libraries, which read HF_ENDPOINT."""
    if value is not None:
        if not value.startswith(("http://", "https://")):
            raise typer.BadParameter(f"'{value}' is no Hub URL; give one like https://huggingface.co or "
                                     "http://127.0.0.1:8080")
        _for_libraries(HF_ENDPOINT=value.rstrip("/"))
    return value


EndpointOpt = Annotated[
    Optional[str],
    typer.Option("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co).", callback=_use_endpoint),
]


def _console(quiet: bool = False, *, stdout: bool = False) -> Console:
    """Where the CLI prints: stderr (progress, notes, errors) unless ``stdout``. Emoji codes are off, or a
    dataset spelled ``org/name:a:b`` would print as ``org/name🅰b``. Printed to a file or a pipe, a line
    is not folded at 80 columns, which would split paths and messages for grep and copy-paste (tables
    keep their width)."""
    from rich.console import Console

    console = Console(stderr=not stdout, quiet=quiet, emoji=False)
    console.soft_wrap = not console.is_terminal
    return console


def _token(token: str | None, token_file: Path | None) -> str | None:
    from .hub.auth import resolve_token

    return resolve_token(token, token_file=token_file)


def _load(recipe_path: Path | None, preset: str | None) -> Recipe:
    from .recipe import load_recipe

    if preset is not None:
        from .presets import load_preset

        if recipe_path is not None:
            raise typer.BadParameter("give a recipe file or --preset, not both")
        return load_preset(preset)
    if recipe_path is None:
        raise typer.BadParameter("give a recipe file (or --preset NAME)")
    return load_recipe(recipe_path)


def _with_overrides(recipe: Recipe, *, dtype: str | None, device: str | None) -> Recipe:
    """The recipe with the command line's --dtype and --device in place of its own, validated again."""
    if dtype is None and device is None:
        return recipe
    return replace(recipe, dtype=dtype or recipe.dtype, device=device or recipe.device)


def _check_device(recipe: Recipe) -> None:
    """Refuse a GPU this machine lacks before the Hub is asked for anything (torch is needed anyway)."""
    if recipe.device.startswith(("cuda", "mps")):
        from .engine import resolve_device

        resolve_device(recipe.device)


def render_plan(merge_plan: MergePlan, console: Console) -> None:
    """Print the plan as tables: the inputs, then what happens to the tensors, then the costs."""
    from rich.markup import escape
    from rich.table import Table

    from .plan_summary import INPUT_COLUMNS, input_rows, summary_rows
    from .tables import print_table

    inputs = Table(title=f"Inputs — {merge_plan.method.pretty_name}", title_justify="left")
    for column in INPUT_COLUMNS:
        numeric = column in ("files", "tensors", "size")
        inputs.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for row in input_rows(merge_plan):
        inputs.add_row(*map(escape, row))
    print_table(console, inputs)

    summary = Table(show_header=False, title="Plan", title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    for what, value in summary_rows(merge_plan):
        value = escape(value)
        summary.add_row(what, f"[yellow]{value}[/yellow]" if value.startswith("re-initialized") else value)
    print_table(console, summary)


@app.command()
def plan(
    recipe: RecipeArg = None,
    preset: PresetOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON on stdout.")] = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Check from safetensors headers alone whether the models can be merged, and what it will cost."""
    import json

    from . import engine

    loaded = _load(recipe, preset)
    merge_plan = engine.plan(loaded, token=_token(token, token_file), endpoint=endpoint)
    try:
        if json_out:
            typer.echo(json.dumps(merge_plan.to_dict(), indent=2))
        else:
            render_plan(merge_plan, _console())
    finally:
        engine.close_plan(merge_plan)


@app.command()
def merge(
    recipe: RecipeArg = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (created atomically).")] = Path(
        "merged"
    ),
    preset: PresetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_shard_size: MaxShardSizeOpt = "5GB",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Evaluate every task that names a dataset.")] = False,
    max_samples: MaxSamplesOpt = None,
    match_labels: MatchLabelsOpt = "name",
    quiet: QuietOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Merge the models of RECIPE tensor by tensor into OUTPUT."""
    from rich.markup import escape

    from . import engine
    from .plan_summary import human_bytes
    from .progress import byte_progress

    if not evaluate:
        _evaluation_options_unused(max_samples, match_labels, "without --evaluate none runs")
    loaded = _with_overrides(_load(recipe, preset), dtype=dtype, device=device)
    keep = {**loaded.local_paths, **({recipe: "the recipe file"} if recipe is not None else {})}
    engine.check_merge_output(output.absolute(), overwrite=overwrite, keep=keep)  # before planning reads a header
    _check_device(loaded)
    console = _console(quiet)
    # Local models and no evaluation: no token to look for (and huggingface_hub is never imported).
    needs_token = loaded.on_hub or evaluate or token is not None or token_file is not None
    secret = _token(token, token_file) if needs_token else None
    class_names: dict[str, tuple[str, ...]] = {}
    if evaluate:
        from .evaluation import check_recipe_datasets

        class_names = check_recipe_datasets(loaded, token=secret)  # a missing dataset before the merge, not after it
    merge_plan = engine.plan(loaded, token=secret, endpoint=endpoint,
                             match_labels=match_labels)  # type: ignore[arg-type]
    if evaluate and loaded.datasets:
        from .evaluation import check_planned_evaluation

        check_planned_evaluation(merge_plan, class_names, match_labels)  # type: ignore[arg-type]
    if not quiet:
        render_plan(merge_plan, console)
    with byte_progress(console, "merging", disable=quiet) as on_progress:
        result = engine.execute(
            merge_plan, output, overwrite=overwrite, max_shard_size=max_shard_size, on_progress=on_progress
        )
    console.print(
        f"[green]merged[/green] {loaded.inputs_in_words} into {result.output} "
        f"({human_bytes(result.bytes_written)}, {result.seconds:.1f} s on {result.device})",
        soft_wrap=True,
    )
    if evaluate:
        from .evaluation import evaluate_recipe_tasks

        try:
            evaluate_recipe_tasks(result.output, loaded, console=console, device=device, max_samples=max_samples,
                                  match_labels=match_labels, token=secret)  # type: ignore[arg-type]
        except (HubmergeError, KeyboardInterrupt):  # the merge is done and kept: say so next to the error or Ctrl+C
            _console().print(f"[yellow]the merged model is kept in {escape(str(result.output))}[/yellow]; once its "
                             f"evaluation can run, `hubmerge evaluate {escape(_word(result.output))} --save` adds the "
                             "results", soft_wrap=True)
            raise
    print(result.output)


@app.command()
def evaluate(
    model: Annotated[
        str,
        typer.Argument(help="A merged output (directory, or repo id with optional @revision) or a model."),
    ],
    task: Annotated[
        Optional[list[str]],
        typer.Option(
            "--task",
            "-t",
            help="NAME=DATASET[:SPLIT] or NAME=DATASET:CONFIG:SPLIT (repeatable); DATASET is a save_to_disk "
            "directory or a Hub dataset id; a bare NAME takes the dataset MODEL's recipe names for it. "
            "Default: the datasets named in MODEL's hubmerge_recipe.yaml (with the columns its saved results "
            "read them with, in eval_scope.json).",
        ),
    ] = None,
    compare_inputs: Annotated[
        bool,
        typer.Option(
            "--compare-inputs",
            help="Also evaluate the base backbone and every fine-tuned backbone with each task's head "
            "(inputs pinned in MODEL's recipe), in one table.",
        ),
    ] = False,
    max_samples: MaxSamplesOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    match_labels: MatchLabelsOpt = "name",
    label_column: Annotated[Optional[str], _column_option("--label-column", "class labels (integers)")] = None,
    image_column: Annotated[Optional[str], _column_option("--image-column", "images")] = None,
    json_out: Annotated[
        Optional[Path],
        typer.Option("--json", callback=_check_report_path, help="Write the JSON report to this file (- for stdout, "
                     "the table then goes to stderr)."),
    ] = None,
    save: Annotated[
        bool,
        typer.Option("--save", help="Write the reports into MODEL, a merged output directory, for its card "
                     "(then `hubmerge card MODEL`)."),
    ] = False,
    quiet: QuietOpt = False,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    endpoint: EndpointOpt = None,  # its callback points every model and dataset load at it
) -> None:
    """Evaluate MODEL on each task with that task's head (accuracy, loss), optionally next to its inputs."""
    from rich.markup import escape

    from . import evaluation
    from .output_stamp import OutputStamp
    from .recipe import RECIPE_FILE

    if save and not Path(model).is_dir():  # refused before any work, as below
        raise typer.BadParameter(f"'{model}' is no folder here: --save writes the reports into a merged output "
                                 "folder (for a Hub repo: download it, evaluate that copy, push it again)",
                                 param_hint="--save")
    if save and not (Path(model) / RECIPE_FILE).is_file():
        raise typer.BadParameter(f"'{model}' is no merged output directory (it holds no {RECIPE_FILE})",
                                 param_hint="--save")
    pairs = _with_columns([evaluation.parse_task(spec) for spec in task or []], label_column=label_column,
                          image_column=image_column)
    names = [name for name, _ in pairs]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise typer.BadParameter(f"each task once: {', '.join(repeated)} is given more than once", param_hint="--task")
    tasks = dict(pairs) if pairs else None
    console = _console(quiet)
    options = dict(
        batch_size=batch_size,
        max_samples=max_samples,
        device=device,
        match_labels=match_labels,
        token=_token(token, token_file),
        console=console,
    )
    run = evaluation.compare_inputs if compare_inputs else evaluation.evaluate_model
    stamp = OutputStamp.take(model) if save else None
    report = run(model, tasks, **options)  # type: ignore[arg-type]
    to_stdout = json_out is not None and str(json_out) == "-"
    evaluation.render_report(report, _console(stdout=not to_stdout))  # the result: stdout, unless the JSON takes it
    if to_stdout:
        typer.echo(report.to_json(), nl=False)
    elif json_out is not None:
        evaluation.save_report(report, json_out)
        console.print(f"[green]report[/green] written to {json_out}", soft_wrap=True)
    if save:
        dropped = evaluation.dropped_by_saving(model, report)
        evaluation.save_output_reports(model, report, stamp=stamp)
        for note in dropped:
            console.print(f"[yellow]note[/yellow]: {escape(note)}", soft_wrap=True)
        word = escape(_word(model))
        console.print(f"[green]reports[/green] written into {escape(model)}; `hubmerge card {word}` puts them in its "
                      f"card, `hubmerge push {word} --repo-id NAME` publishes it with them", soft_wrap=True)


@app.command()
def push(
    recipe: Annotated[
        Optional[Path],
        typer.Argument(help="Recipe YAML (hubmerge or FusionBench style), or a merged output directory to "
                       "publish as it is."),
    ] = None,
    repo_id: Annotated[str, typer.Option("--repo-id", help="namespace/name to publish to.")] = ...,  # type: ignore[assignment]
    preset: PresetOpt = None,
    endpoint: EndpointOpt = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private (a public repo that exists is refused).")] = False,
    branch: Annotated[Optional[str], typer.Option("--branch", help="Commit to this branch.")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the content of a non-empty repo.")] = False,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate tasks that name a dataset.")] = True,
    max_samples: MaxSamplesOpt = None,
    match_labels: MatchLabelsOpt = "name",
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    max_shard_size: MaxShardSizeOpt = "5GB",
    quiet: QuietOpt = False,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Publish to REPO_ID in one commit: a recipe, merged, evaluated and with its card; or an output as it is.

    A merged output directory (made by `hubmerge merge`, perhaps with `hubmerge evaluate OUTPUT --save`
    after it) is pushed as it is: nothing is merged or evaluated again. Local input folders are published as
    ./PATH below their common parent, never by this machine's absolute paths.
    """
    from . import publish as publishing
    from .hub.auth import require_token
    from .progress import byte_progress

    if recipe is not None and recipe.is_dir():
        remedies = {
            "--preset": (preset, "give the recipe or the output, not both"),
            "--device": (device, "merge again to change how it is made"),
            "--dtype": (dtype, "merge again with --dtype"),
            "--max-samples": (max_samples, f"first run `hubmerge evaluate {_word(recipe)} --max-samples N --save`"),
            "--match-labels": (None if match_labels == "name" else match_labels,
                               f"first run `hubmerge evaluate {_word(recipe)} --match-labels {match_labels} --save`"),
        }
        for option, (value, remedy) in remedies.items():
            if value is not None:
                raise typer.BadParameter(f"an output directory is pushed as it is; {remedy}", param_hint=option)
        console = _console(quiet)
        pushed = publishing.publish_output(
            recipe, repo_id, token=token, token_file=token_file, endpoint=endpoint, private=private, branch=branch,
            create_pr=create_pr, overwrite=overwrite,
            on_step=lambda done, what: console.print(f"{what}...", soft_wrap=True),
        )
        _print_pushed(pushed, console)
        return
    if not evaluate:
        _evaluation_options_unused(max_samples, match_labels, "--no-evaluate turns it off")
    loaded = _with_overrides(_load(recipe, preset), dtype=dtype, device=device)
    _check_device(loaded)
    secret = require_token(token, token_file=token_file, action="push")
    console = _console(quiet)
    with byte_progress(console, "merging", disable=quiet) as on_progress:
        result = publishing.publish(
            loaded, repo_id, token=secret, endpoint=endpoint, private=private, branch=branch,
            create_pr=create_pr, overwrite=overwrite, evaluate=evaluate, max_samples=max_samples,
            match_labels=match_labels, max_shard_size=max_shard_size,  # type: ignore[arg-type]
            on_progress=on_progress, console=console,  # a quiet one keeps the libraries' bars off too
        )
    _print_pushed(result.push, console)


def _evaluation_options_unused(max_samples: int | None, match_labels: str, why: str) -> None:
    """Refuse --max-samples or --match-labels where no evaluation runs: they were ignored without a word."""
    for option, given in (("--max-samples", max_samples is not None), ("--match-labels", match_labels != "name")):
        if given:
            raise typer.BadParameter(f"it only shapes an evaluation, and {why}", param_hint=option)


def _print_pushed(pushed: PushResult, console: Console) -> None:
    console.print(f"[green]pushed[/green] {len(pushed.files)} files in commit {pushed.commit_sha[:12]}",
                  soft_wrap=True)
    print(pushed.pull_request_url or pushed.url)


@app.command()
def card(
    output: Annotated[Path, typer.Argument(help="A merged output directory.")],
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="Name the repo in the code samples.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a card that was edited by hand.")] = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """(Re)generate OUTPUT/README.md, the model card, from the output's recipe, heads and results."""
    from .card import write_card

    if repo_id is not None:
        from .hub.push import repo_id_problem

        if problem := repo_id_problem(repo_id):
            raise typer.BadParameter(problem, param_hint="--repo-id")
    secret = _token(token, token_file)
    print(write_card(output, repo_id=repo_id, token=secret, endpoint=endpoint, overwrite=overwrite))


@app.command("export-resnet")
def export_resnet(
    architecture: Annotated[
        str, typer.Argument(help="resnet18, resnet34, resnet50, resnet101 or resnet152.", metavar="architecture")
    ],
    output: Annotated[Path, typer.Argument(help="The model folder to write.", metavar="output")],
    checkpoint: Annotated[
        Optional[Path],
        typer.Option("--checkpoint", help="A fine-tune's state dict saved with torch.save (as FusionBench's "
                     "torchvision pools save them); its head sets the class count."),
    ] = None,
    labels: Annotated[
        Optional[str], typer.Option("--labels", help="The head's class names in class order, comma-separated.")
    ] = None,
    num_classes: Annotated[
        Optional[int], typer.Option("--num-classes", min=1, help="The head size, when neither of the above says it.")
    ] = None,
    imagenet: Annotated[
        bool, typer.Option("--imagenet", help="Start from torchvision's ImageNet weights (downloads them).")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False,
) -> None:
    """Write a torchvision ResNet as a model folder hubmerge merges: a fine-tune from its checkpoint, or a
    base from torchvision's weights."""
    from .vision.export import export_torchvision_resnet
    from .weights.writer import atomic_output_dir, check_output

    keep = {checkpoint: "the checkpoint"} if checkpoint else None
    check_output(output.absolute(), overwrite=overwrite, keep=keep, mark="config.json")  # model folders only
    names = [name.strip() for name in labels.split(",")] if labels else []
    if not all(names):
        raise typer.BadParameter(f"give one name per class, comma-separated; got {labels!r}", param_hint="--labels")
    id2label = dict(enumerate(names)) if names else None
    with atomic_output_dir(output, overwrite=overwrite) as folder:  # all of it, or the old folder as it was
        export_torchvision_resnet(architecture, folder, weights="DEFAULT" if imagenet else None,
                                  checkpoint=checkpoint, num_classes=num_classes, id2label=id2label)
    print(output)


def _known_method(value: str | None) -> str | None:
    """Refuse an unknown method name as the usage error it is (exit 2), naming the known ones."""
    from .methods import get_method

    return value if value is None else _as_usage_error(value, get_method)


@app.command()
def methods(
    name: Annotated[
        Optional[str],
        typer.Argument(help="A method to describe in full.", show_default=False, metavar="name",
                       callback=_known_method),
    ] = None,
) -> None:
    """List the merge methods, or describe one: its parameters, their defaults and allowed values, and a
    recipe to start from."""
    from .method_help import print_methods

    print_methods(_console(stdout=True), name)


@app.command()
def demo(
    ui: Annotated[bool, typer.Option("--ui", help="Then open the web app on the demo's local Hub.")] = False,
    workdir: Annotated[
        Optional[Path],
        typer.Option("--workdir", callback=_check_folder, help="Keep the demo's Hub and files here."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole pipeline offline: local Hub, tiny trained models, merge over HTTP, evaluation, card, push.

    Without --workdir the Hub lives in a temporary folder that goes when the demo ends, so runs
    leave nothing behind; with it, the pushed repos stay there for `hubmerge hub serve`.
    """
    import tempfile
    from contextlib import ExitStack

    from rich.markup import escape

    from .demo import run_demo

    console = _console(quiet)
    with ExitStack() as cleanup:
        root = workdir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="hubmerge-demo-")))
        hub, result = run_demo(root, console=console)
        cleanup.callback(hub.hub.stop)  # type: ignore[attr-defined]  # before its folder goes
        print(result.push.url)
        if ui:
            from .demo import demo_presets
            from .ui import launch_app

            console.print("opening the web app on the demo's local Hub (Ctrl+C to stop)...")
            _serving()
            launch_app(endpoint=hub.endpoint, token=hub.token, presets=demo_presets(hub))
    if workdir is None:
        console.print("[dim]the demo's local Hub has stopped and its temporary folder is gone; "
                      "keep them with --workdir DIR[/dim]", soft_wrap=True)
    else:
        console.print(f"the demo's Hub is kept in {escape(str(workdir / 'hub'))}; serve it again with "
                      f"`hubmerge hub serve --root {escape(_word(workdir / 'hub'))}`", soft_wrap=True, highlight=False)


@app.command("app")
def web_app(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 7860,
    max_samples: Annotated[
        Optional[int], typer.Option("--max-samples", min=1, help="Evaluate at most N examples per task.")
    ] = None,
    local_paths: Annotated[
        Optional[bool],
        typer.Option("--local-paths/--hub-only", show_default=False,
                     help="Whether recipes may name folders on this machine. Default: only when the app listens "
                          "on this machine alone (--host 127.0.0.1), as whoever reaches it could read them."),
    ] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Serve the web app: plan, merge with progress, results, card, try, push (also the Space's app)."""
    from .ui import launch_app

    _serving()
    launch_app(endpoint=endpoint, token=_token(token, token_file), host=host, port=port, max_samples=max_samples,
               local_paths=local_paths)


@space_app.command("deploy")
def space_deploy(
    repo_id: Annotated[str, typer.Option("--repo-id", help="namespace/name of the Space.")] = ...,  # type: ignore[assignment]
    private: Annotated[bool, typer.Option("--private", help="Create the Space private (when created).")] = False,
    hardware: Annotated[Optional[str], typer.Option("--hardware", help="e.g. t4-small (when created).")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Upload the web app (app.py, the package, requirements, README) to a Space in one commit."""
    from .hub.auth import require_token
    from .hub.space import deploy_space

    secret = require_token(token, token_file=token_file, action="deploy a Space")
    deployed = deploy_space(repo_id, token=secret, endpoint=endpoint, private=private, hardware=hardware)
    _console().print(f"[green]deployed[/green] {len(deployed.files)} files in commit {deployed.commit_sha[:12]}")
    print(deployed.url)


@hub_app.command("serve")
def hub_serve(
    root: Annotated[
        Path, typer.Option("--root", callback=_check_folder, help="Directory that stores the repos.")
    ] = Path("localhub"),
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8080,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    token: Annotated[
        Optional[list[str]], typer.Option("--token", help="TOKEN:USER pair allowed to write (repeatable).")
    ] = None,
    lfs: Annotated[
        bool,
        typer.Option("--lfs", help="Take weights, data files (.safetensors, .parquet, ...) and files of 10 MiB or "
                     "more by LFS, as huggingface.co does (datasets' push_to_hub needs it). Clients then need "
                     "HF_HUB_DISABLE_XET=1: this server speaks LFS, not Xet."),
    ] = False,
) -> None:
    """Serve a local Hugging Face Hub-compatible server (point HF_ENDPOINT at it).

    A repo's URL, http://HOST:PORT/ORG/NAME, opens a page with its card and files in a browser.
    """
    from .hub.localhub import serve
    from .hub.localhub.storage import LFS_MIN_SIZE

    tokens = {}
    for pair in token or []:
        secret, sep, user = pair.rpartition(":")
        if not sep or not secret or not user:
            raise typer.BadParameter("write --token TOKEN:USER", param_hint="--token")
        tokens[secret] = user
    _serving()
    serve(root, host=host, port=port, tokens=tokens or None, lfs_threshold=LFS_MIN_SIZE if lfs else None)


def _word(value: object) -> str:
    """``value`` (a path) as one word of a command the user is told to run: quoted where the shell would split
    it, so that a folder named with a space can be copied and pasted."""
    text = str(value)
    if os.name == "nt":  # imported here: the CLI's start-up imports only what every command needs
        import subprocess

        return subprocess.list2cmdline([text])
    import shlex

    return shlex.quote(text)


INTERRUPTED = 130  # the exit code of a command stopped by Ctrl+C (128 + SIGINT); SIGTERM's 143, SIGHUP's 129
# OSErrors that are the machine's answer, not a bug: said as they are, without "please report it".
_MACHINE_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn HubmergeError into one readable line and exit code 1.

    Usage errors are click's (exit 2); Ctrl+C exits 130 with one line saying nothing partial was left (or,
    for a command that serves until stopped, that it stopped);
    anything unexpected is one line too, unless HUBMERGE_DEBUG.
    """
    from rich.markup import escape

    global _served
    _served = False
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == INTERRUPTED and _served:  # how a server ends: no work was cut short
            _console().print("[yellow]stopped[/yellow]", soft_wrap=True)
        elif code == INTERRUPTED:  # typer's exit for Ctrl+C, which it leaves unexplained
            _console().print("[yellow]interrupted[/yellow]: outputs and commits are made only when complete, "
                             "so nothing partial was left", soft_wrap=True)
        return code
    except HubmergeError as exc:
        if os.environ.get("HUBMERGE_DEBUG"):
            raise
        _console().print(f"[bold red]error:[/bold red] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        _console().print("[dim](set HUBMERGE_DEBUG=1 for the traceback)[/dim]")
        return 1
    except Exception as exc:
        if os.environ.get("HUBMERGE_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.errno in _MACHINE_REFUSALS:  # a full disk, no permission: no bug
            what = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc.strerror)
            _console().print(f"[bold red]error:[/bold red] {escape(redact(what))}", highlight=False)
            return 1
        _console().print(f"[bold red]unexpected error:[/bold red] {escape(redact(repr(exc)))}", highlight=False)
        _console().print("[dim](set HUBMERGE_DEBUG=1 for the traceback; please report it)[/dim]")
        return 1
    return 0


# Cyclic garbage collection every 50,000 net allocations instead of CPython's 700 (see ``run``).
GC_THRESHOLD = (50_000, 20, 20)
# The interpreter's own pace, read before ``run`` changes it: what the commands that serve until stopped keep.
SERVING_GC_THRESHOLD = gc.get_threshold()


def _serving() -> None:
    """Give a command that serves until stopped (``app``, ``hub serve``, ``demo --ui``) the interpreter's
    collector pace back. A request makes few objects, so at ``GC_THRESHOLD``'s pace a collection came every
    hundred-odd requests, and what a dropped download left in reference cycles (its 4 MiB read) stayed until
    then: ``hub serve`` grew by 4 MiB per dropped download, to 680 MB after 150 of them."""
    global _served
    _served = True
    gc.set_threshold(*SERVING_GC_THRESHOLD)


_served = False  # the command serves until stopped (``_serving``): Ctrl+C is how it ends, not work cut short


_terminated = 0  # the signal that stopped the command, when not Ctrl+C


def _stop_as_if_interrupted(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, ``timeout``, a stopping container or service) and SIGHUP (a closed terminal or SSH
    session) unwind as Ctrl+C does, so the temporary output, the push's build folder, the web app's merged
    outputs and the demo's Hub are removed; by default the process ended at once and left them behind."""
    global _terminated
    _terminated = signum
    raise KeyboardInterrupt


REDELIVERY_S = 0.02  # how long after a finalizer swallowed a Ctrl+C it is delivered again


def _interrupt_again(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook``: a Ctrl+C (or a SIGTERM / SIGHUP raised as one) that landed in a finalizer (a
    ``__del__``, a weakref callback) is delivered again, to the code that runs once the finalizer is done;
    Python swallows an exception raised there, printing its traceback, and the command went on (a push
    published). Anything else is reported as Python reports it."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # A moment later, from another thread: raised in this hook or the finalizer, it would be swallowed
        # again (and one that lands in the next finalizer comes back here, for another try).
        timer = threading.Timer(REDELIVERY_S, _thread.interrupt_main)
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def _escape_unencodable(stream: object) -> None:
    """A character stdout's encoding lacks (PYTHONIOENCODING=ascii, cp1252 in a Windows redirect: a method's
    lambda, a table title's dash) printed escaped, as Python prints it on stderr; it raised UnicodeEncodeError,
    after the work, and the result never reached the script that waited for it."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        stream.reconfigure(errors="backslashreplace")


def run() -> None:
    """The ``hubmerge`` executable: ``main`` with a slower collector pace, then exit without teardown.

    Why the pace: a command's imports (torch alone, ~10^6 objects) are long-lived and tensors are
    freed by reference counting, so at the default pace the cyclic collector spent 0.3 s of a 2 s
    merge (500 collections) finding nothing; at this one it runs ~6 times. The commands that serve until
    stopped (``app``, ``hub serve``) go back to the interpreter's pace (``_serving``).

    Why no teardown: once torch is imported, the interpreter's own teardown (clearing every module,
    a last collection over ~10^6 objects) takes 0.15-0.45 s. The output is written and closed by
    then; atexit handlers still run, and streams are flushed.
    """
    gc.set_threshold(*GC_THRESHOLD)
    _escape_unencodable(sys.stdout)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _stop_as_if_interrupted)
    sys.unraisablehook = _interrupt_again
    code = main()
    if code == INTERRUPTED and _terminated:
        code = 128 + _terminated
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed (`>&-`): Python gives None, print skips it
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    atexit._run_exitfuncs()  # logging, temporary files, thread pools: what a normal exit would run
    os._exit(code)


if __name__ == "__main__":
    run()
