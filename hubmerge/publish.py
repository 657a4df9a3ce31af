"""The whole job: plan -> merge -> evaluate -> card -> push, behind ``hubmerge push``, the demo and the app.

``build`` makes a complete output directory (merged model, heads, recipe, evaluation reports, card).
``publish`` checks the target repo first, builds in a temporary directory, and pushes everything in
one commit; a failure at any step leaves the Hub as it was and the temporary files are removed.
``publish_output`` pushes an output that is already built (``hubmerge merge``, then perhaps
``hubmerge evaluate --save``) as it is, in one commit, so what was inspected is what is published.
Either way the commit names local inputs without this machine's paths (``hubmerge.published``); the output
keeps its own files, which its later commands read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import engine
from .atomic_file import write_atomically
from .card import CARD_FILE, write_card, written_card
from .errors import CancelledError, CardEditedError, OutputReplacedError
from .hub.auth import require_token
from .hub.push import PushResult, check_repo_id, check_target, push_folder
from .methods import get_method
from .output_stamp import OutputStamp
from .published import published_files
from .recipe import Recipe

if TYPE_CHECKING:
    from rich.console import Console

    from .evaluation import CompareReport, EvalReport
    from .evaluation.data import LabelMatch
    from .evaluation.loop import EvalProgress

__all__ = ["BuildResult", "PublishResult", "build", "publish", "publish_output"]

# Build directories are named after their process, so that a run can tell which ones a killed run left.
_WORK_PREFIX = "hubmerge-push-"
_COMMIT_DESCRIPTION = "Merged model, per-task heads, recipe, evaluation and card, made with hubmerge."


@dataclass(frozen=True)
class BuildResult:
    """A finished output directory and what went into it."""

    output: Path
    merge: engine.MergeResult
    report: EvalReport | None
    comparison: CompareReport | None
    card: Path


@dataclass(frozen=True)
class PublishResult:
    build: BuildResult
    push: PushResult


def _clean_stale_work_dirs(parent: Path) -> None:
    """Remove the build directories that killed pushes left in ``parent`` (their process is gone)."""
    from .weights.writer import pid_alive

    if not parent.is_dir():
        return
    for entry in parent.glob(f"{_WORK_PREFIX}*"):
        pid = entry.name[len(_WORK_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and entry.is_dir() and not entry.is_symlink() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def build(
    recipe: Recipe,
    output: str | Path,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    device: str | None = None,
    overwrite: bool = False,
    evaluate: bool = True,
    compare_inputs: bool = True,
    max_samples: int | None = None,
    match_labels: LabelMatch = "name",
    max_shard_size: str | int = "5GB",
    repo_id: str | None = None,
    revision: str | None = None,
    on_progress: engine.ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    console: Console | None = None,
    on_eval_progress: EvalProgress | None = None,
) -> BuildResult:
    """Merge ``recipe`` into ``output``, evaluate the tasks that name a dataset, and write the card.

    Args:
        recipe: the validated recipe.
        output: the directory to create (atomically; ``overwrite`` to replace one).
        token: Hub token for private inputs and datasets. ``endpoint``: the Hub to read from.
        device: ``auto``, ``cpu``, ``cuda[:N]`` (default: the recipe's).
        evaluate: evaluate tasks with datasets; ``compare_inputs``: also the base and each
            fine-tune with every task's head, for the card's merged-vs-inputs table.
        max_samples: evaluate at most this many examples per task.
        match_labels: ``"name"`` matches each dataset's class names onto its head's ``id2label``;
            ``"position"`` trusts that class i is output i (names that differ, same order).
        max_shard_size: split the merged weights into shards of at most this size (``"5GB"``, bytes).
        repo_id: where the output will be published (named in the card's code samples).
        revision: the branch of ``repo_id`` it goes to (committed, or by a pull request against it), when not the
            default one (the samples load it).
        on_progress: ``(bytes read, total)`` during the merge. ``cancel``: set to stop the merge or its
            evaluation (``CancelledError``; an output already merged is then left without reports or card).
        console: where progress and tables are drawn (None: nothing is drawn).
        on_eval_progress: ``(what, images done, images in all)`` during the evaluation, pass by pass, and
            ``(what, 0, 0)`` as each load starts (the web app's progress, where no console draws it).

    Returns:
        ``BuildResult``.

    Raises:
        Everything ``engine.plan``/``engine.execute`` and the evaluation raise; the output is then
        left as it was (the merge) or without reports (a failed evaluation).
    """
    output = Path(output)
    engine.check_merge_output(output.absolute(), overwrite=overwrite, keep=recipe.local_paths)
    datasets = recipe.datasets if evaluate else {}
    class_names: dict[str, tuple[str, ...]] = {}
    if datasets:  # what the evaluation will refuse is refused before the merge
        from .evaluation import check_recipe_datasets
        from .evaluation.loop import check_match_labels

        check_match_labels(match_labels)
        class_names = check_recipe_datasets(recipe, token=token)
    merge_plan = engine.plan(recipe, token=token, endpoint=endpoint,
                             match_labels=match_labels if datasets else "name")
    if datasets:
        from .evaluation import check_planned_evaluation

        check_planned_evaluation(merge_plan, class_names, match_labels)
    merged = engine.execute(merge_plan, output, device=device, overwrite=overwrite, max_shard_size=max_shard_size,
                            on_progress=on_progress, cancel=cancel)
    report: EvalReport | None = None
    comparison: CompareReport | None = None
    if cancel is not None and cancel.is_set():
        raise CancelledError("the merge (before its evaluation)")
    if datasets:
        from . import evaluation

        options = dict(device=device or recipe.device, max_samples=max_samples, match_labels=match_labels,
                       token=token, console=console, cancel=cancel, on_progress=on_eval_progress)
        stamp = OutputStamp.take(output)
        if compare_inputs:
            comparison = evaluation.compare_inputs(output, datasets, **options)  # type: ignore[arg-type]
            if repo_id is not None:  # name the merged row by where it goes, not by a temporary path
                comparison = replace(comparison, merged=replace(comparison.merged, model=repo_id))
            report = comparison.merged
        else:
            report = evaluation.evaluate_model(output, datasets, **options)  # type: ignore[arg-type]
        evaluation.save_output_reports(output, comparison or report, stamp=stamp)
        if console is not None:
            evaluation.render_report(comparison or report, console)
    card = write_card(output, repo_id=repo_id, revision=revision, token=token, endpoint=endpoint)
    return BuildResult(output, merged, report, comparison, card)


def publish(
    recipe: Recipe,
    repo_id: str,
    *,
    token: str | None = None,
    token_file: str | Path | None = None,
    endpoint: str | None = None,
    private: bool = False,
    branch: str | None = None,
    create_pr: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    evaluate: bool = True,
    compare_inputs: bool = True,
    max_samples: int | None = None,
    match_labels: LabelMatch = "name",
    max_shard_size: str | int = "5GB",
    work_dir: str | Path | None = None,
    on_progress: engine.ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    console: Console | None = None,
) -> PublishResult:
    """Build the output and push it to ``repo_id`` in one commit.

    The token comes from ``token``, ``token_file``, HF_TOKEN or the login cache, and is never
    printed. The target is checked before any work: an existing non-empty repo is refused unless
    ``overwrite`` (or ``create_pr``, which leaves the branch alone).

    Args:
        recipe, device, evaluate, compare_inputs, max_samples, match_labels, max_shard_size, on_progress, cancel,
            console: see ``build``.
        repo_id: ``namespace/name`` to publish to.
        private: create the repo private. ``branch``: commit there. ``create_pr``: open a PR instead.
        endpoint: the Hub to read inputs from and push to (default ``HF_ENDPOINT``/huggingface.co).
        work_dir: where the temporary output is built (default: the system temp dir).

    Returns:
        ``PublishResult`` with the build and the commit.

    Raises:
        AuthenticationError: no token. PushError: the repo exists (without ``overwrite``) or the
        commit failed; the repo is then unchanged. Plus everything ``build`` raises.
    """
    secret = require_token(token, token_file=token_file, action="push")
    target = check_target(repo_id, token=secret, branch=branch, overwrite=overwrite, create_pr=create_pr,
                          private=private, endpoint=endpoint)
    _clean_stale_work_dirs(Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=f"{_WORK_PREFIX}{os.getpid()}-", dir=work_dir) as tmp:
        built = build(
            recipe, Path(tmp) / "output", token=secret, endpoint=endpoint, device=device, evaluate=evaluate,
            compare_inputs=compare_inputs, max_samples=max_samples, match_labels=match_labels,
            max_shard_size=max_shard_size, repo_id=repo_id, revision=branch,
            on_progress=on_progress, cancel=cancel, console=console,
        )
        pushed = push_folder(
            built.output, repo_id, token=secret, target=target, private=private, branch=branch, create_pr=create_pr,
            commit_message=_commit_title(recipe), commit_description=_COMMIT_DESCRIPTION, endpoint=endpoint,
            contents=published_files(built.output, engine.read_output_recipe(built.output)),
        )
    return PublishResult(built, pushed)


def publish_output(
    output: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    token_file: str | Path | None = None,
    endpoint: str | None = None,
    private: bool = False,
    branch: str | None = None,
    create_pr: bool = False,
    overwrite: bool = False,
    on_step: Callable[[float, str], None] | None = None,
) -> PushResult:
    """Push a merged output directory as it is, in one commit; nothing is merged or evaluated again.

    The card (``README.md``) is written again first, so that its code samples name ``repo_id``, unless
    it was edited by hand: then it is pushed as it is.

    Args:
        output: a directory written by ``hubmerge merge`` (or ``build``).
        repo_id, token, token_file, endpoint, private, branch, create_pr, overwrite: see ``publish``.
        on_step: called with the share of the work done and what comes next ("Uploading in one commit").

    Returns:
        ``PushResult`` with the commit.

    Raises:
        RecipeError: ``output`` is no merged output. AuthenticationError: no token. PushError: the repo
        exists (without ``overwrite``) or the commit failed; the repo is then unchanged.
    """
    step = on_step or (lambda done, what: None)
    recipe = engine.read_output_recipe(output)
    check_repo_id(repo_id)  # said as it is, not as a finding of "Checking the target repo"
    secret = require_token(token, token_file=token_file, action="push")
    step(0.0, "Checking the target repo")
    target = check_target(
        repo_id, token=secret, branch=branch, overwrite=overwrite, create_pr=create_pr, private=private,
        endpoint=endpoint,
    )
    stamp = OutputStamp.take(output)  # the output the card is for: another one put there is not pushed
    card = Path(output) / CARD_FILE
    card_before = card.read_bytes() if card.is_file() else None
    contents = published_files(Path(output), recipe)  # its local inputs named without this machine's paths
    try:  # the card committed is the one written here, whatever the file says by then
        contents[CARD_FILE] = written_card(  # a pull request is merged into ``branch``: the samples load that
            output, repo_id=repo_id, revision=branch, token=secret, endpoint=endpoint)[1].encode()  # branch too
    except CardEditedError:
        step(0.25, f"{CARD_FILE} is not the card hubmerge wrote (edited by hand?): pushing it as it is")
    step(0.5, "Uploading in one commit")
    try:
        return push_folder(
            Path(output), repo_id, token=secret, target=target, private=private, branch=branch,
            create_pr=create_pr, commit_message=_commit_title(recipe), commit_description=_COMMIT_DESCRIPTION,
            endpoint=endpoint, contents=contents, stamp=stamp,
        )
    except BaseException:  # nothing was published: the card goes back to what it said, not this repo's name
        with contextlib.suppress(OutputReplacedError):  # not into another output put there, with its card
            stamp.check(CARD_FILE)
            _put_back(card, card_before)
        raise


def _put_back(path: Path, content: bytes | None) -> None:
    """``path`` as it was: ``content``, or no file when it had none."""
    if content is None:
        path.unlink(missing_ok=True)
    else:
        write_atomically(path, content)


def _commit_title(recipe: Recipe) -> str:
    return f"hubmerge: {get_method(recipe.method).pretty_name} of {recipe.inputs_in_words}"
