"""Publish a finished output directory to a Hub repo in exactly one commit.

Everything is decided before anything is sent: the target is checked first (an existing non-empty
repo is refused unless ``overwrite``), then the complete list of operations is built (every file of
the folder, plus deletions of files the repo holds that the new output does not), then one
``create_commit`` carries all of it, pinned to the parent commit that was checked. The commit
applies whole or not at all; a repo that this push created is deleted again if the commit fails,
so a failed push leaves the Hub as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import HubError, PushError
from ..output_stamp import OutputStamp
from ..weights.writer import temporary_sibling
from .source import hub_errors

if TYPE_CHECKING:
    from huggingface_hub import HfApi, ModelInfo

__all__ = ["PushResult", "TargetState", "check_repo_id", "check_target", "push_folder", "repo_id_problem"]

log = logging.getLogger(__name__)

# Files a new repo may already hold without counting as "not empty".
_SCAFFOLDING = {".gitattributes"}


@dataclass(frozen=True)
class TargetState:
    """What the target repo holds before the push."""

    repo_id: str
    exists: bool
    sha: str | None
    files: tuple[str, ...]
    branch_missing: bool = False

    @property
    def empty(self) -> bool:
        return not [f for f in self.files if f not in _SCAFFOLDING]


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str
    commit_sha: str
    commit_url: str
    pull_request_url: str | None
    files: tuple[str, ...]


def hub_api(token: str, endpoint: str | None):  # type: ignore[no-untyped-def]
    """The client every write uses: this token, this Hub, requests tagged as hubmerge's."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="hubmerge")


def repo_id_problem(repo_id: str) -> str | None:
    """What is wrong with ``repo_id`` as the Hub sees it (characters, length, ``namespace/name``), or None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return f"'{repo_id}' is not a valid repo id: {str(exc).rstrip('.')}"
    return None


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but ``namespace/name`` with the Hub's allowed characters, before any work.

    Raises:
        PushError: naming what is wrong with the id.
    """
    # no repository such an id could name was looked at: "left as it was" would say there was one
    if problem := repo_id_problem(repo_id):
        raise PushError(repo_id, problem, outcome="Nothing was pushed.")
    if repo_id.count("/") != 1:
        raise PushError(repo_id, f"'{repo_id}' is not a valid repo id: write it as namespace/name, e.g. you/merged-model",
                        outcome="Nothing was pushed.")


def check_target(
    repo_id: str,
    *,
    token: str,
    branch: str | None = None,
    overwrite: bool = False,
    create_pr: bool = False,
    private: bool = False,
    endpoint: str | None = None,
) -> TargetState:
    """Look at the target before any work: refuse a non-empty repo unless ``overwrite``, or unless the push
    opens a pull request (``create_pr``), which leaves the branch as it is; refuse ``private`` for a repo
    that exists and is public, since the push would publish there.

    Raises:
        PushError: the repo holds files and neither ``overwrite`` nor ``create_pr`` is set; or ``private``
            was asked for and the repo is public.
        AuthenticationError / HubError: the Hub refused or could not be reached.
    """
    from huggingface_hub import errors as hf

    check_repo_id(repo_id)
    api = hub_api(token, endpoint)
    with hub_errors(repo_id, revision=branch, publishing=True):
        try:
            info = api.model_info(repo_id, revision=branch)
        except hf.RepositoryNotFoundError:
            return TargetState(repo_id, False, None, (), branch_missing=branch is not None)
        except hf.RevisionNotFoundError:
            # The branch will be made from the default branch, so it starts with that branch's files: the
            # push deletes those its output lacks, and the default branch keeps them.
            main = api.model_info(repo_id)
            _check_private(main, private)
            return TargetState(repo_id, True, main.sha, _names(main), branch_missing=True)
    _check_private(info, private)
    files = _names(info)
    state = TargetState(repo_id, True, info.sha, files)
    if not state.empty and not (overwrite or create_pr):
        where = f"branch '{branch}' of " if branch else ""
        raise PushError(
            repo_id,
            f"{where}the repository already holds {len(files)} file(s) (e.g. {files[0]}); "
            "to replace its content in one commit, pass --overwrite (from Python: overwrite=True; in the web app: "
            "tick 'Overwrite a non-empty repo'), or choose another repo id",
        )
    return state


def _check_private(info: ModelInfo, private: bool) -> None:
    if private and info.private is False:
        raise PushError(
            info.id,
            "it is public, and 'private' applies only to a repository the push creates; make it private on the "
            "Hub first, or push to another repo id",
        )


def _names(info: ModelInfo) -> tuple[str, ...]:
    return tuple(sorted(sibling.rfilename for sibling in info.siblings or []))


@contextmanager
def _made_meanwhile(repo_id: str, what: str) -> Iterator[None]:
    """A 409 creating ``what`` the check found missing: another push (or a user) made it since, so this one
    lost the race; the Hub's own words ('You already created this model repo') blamed the user."""
    from huggingface_hub import errors as hf

    try:
        yield
    except hf.HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code != 409:
            raise
        raise HubError(f"'{repo_id}' changed meanwhile: {what} was created after hubmerge looked at it (by another "
                       "push?); see what it holds now, then push again") from None


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    token: str,
    target: TargetState,
    private: bool = False,
    branch: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload merged model with hubmerge",
    commit_description: str = "",
    endpoint: str | None = None,
    contents: Mapping[str, bytes] | None = None,
    stamp: OutputStamp | None = None,
) -> PushResult:
    """Upload every file under ``folder`` to ``repo_id`` in one commit (see the module docstring).

    Args:
        folder: the complete output (model, heads, recipe, results, card).
        repo_id: ``namespace/name``.
        token: a token with write access (never logged).
        target: ``check_target``'s answer; the commit is pinned to its sha.
        private: create the repo private (only when it does not exist yet).
        branch: commit to this branch (created from the default branch if missing, also in a repo this
            push creates).
        create_pr: open a pull request instead of committing to the branch.
        contents: files the commit takes from here, not from ``folder`` (the card written for this push,
            which another push of the same output may rewrite meanwhile).
        stamp: ``folder`` as it was when ``contents`` were made from it: another output put there since
            (another command's merge --overwrite) is refused, not pushed under the card of the one before.

    Returns:
        ``PushResult`` with the commit sha and URLs.

    Raises:
        PushError: the commit was refused; the repo is unchanged (and removed if this push made it).
    """
    if links := sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink()):
        raise PushError(repo_id, f"'{folder / links[0]}' is a link: a push publishes the files an output holds, "
                                 "never what a link leads to (a file anywhere on this machine); put the file itself "
                                 "there, or remove the link")
    api = hub_api(token, endpoint)
    if stamp is None and folder.is_dir():
        stamp = OutputStamp.take(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    if not files or stamp is None:  # a folder deleted since it was checked: an empty commit, or an emptied repo
        raise PushError(repo_id, f"'{folder}' holds no files (was it deleted?): there is nothing to push")
    with _frozen(folder, files, stamp, repo_id) as source:
        return _push_files(source, files, repo_id, api=api, target=target, private=private, branch=branch,
                           create_pr=create_pr, commit_message=commit_message,
                           commit_description=commit_description, contents=contents or {})


@contextmanager
def _frozen(folder: Path, files: list[str], stamp: OutputStamp, repo_id: str) -> Iterator[Path]:
    """``files`` of ``folder`` as they are now, as hard links in a folder beside it, for the commit to read.

    Another command's ``merge --overwrite`` replaces an output by renames, and a card or report is replaced
    by a new file, never written in place: a link keeps the file the push listed. Read from the folder
    itself, the commit mixed the old output's files with the new one's (the old recipe with the new
    weights). Where links cannot be made (a read-only parent folder, a filesystem without them), the folder
    itself is read.

    Raises:
        PushError: ``folder`` was replaced while its files were linked.
    """
    snapshot: Path | None = temporary_sibling(folder)
    try:
        for name in files:
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(folder / name, snapshot / name)
    except OSError:
        shutil.rmtree(snapshot, ignore_errors=True)
        snapshot = None
    try:
        try:
            stamp.check("its files")
        except OSError:
            raise PushError(repo_id, f"'{folder}' was replaced by another output (another command merged into "
                                     "it) while the push read it; push again once that command has ended") from None
        yield snapshot or folder
    finally:
        if snapshot is not None:
            shutil.rmtree(snapshot, ignore_errors=True)


def _push_files(
    folder: Path,
    files: list[str],
    repo_id: str,
    *,
    api: HfApi,
    target: TargetState,
    private: bool,
    branch: str | None,
    create_pr: bool,
    commit_message: str,
    commit_description: str,
    contents: Mapping[str, bytes],
) -> PushResult:
    """``push_folder``'s commit of ``files`` read from ``folder``, or from ``contents``."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub import errors as hf

    files = sorted({*files, *contents})
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=contents.get(name, str(folder / name)))
        for name in files
    ]
    stale = [f for f in target.files if f not in files and f not in _SCAFFOLDING]
    operations += [CommitOperationDelete(path_in_repo=name) for name in stale]

    created = branched = False
    parent = target.sha  # the commit looked at: one landing after it fails this push, not mixes with it
    try:
        with hub_errors(repo_id, revision=branch, publishing=True):
            if not target.exists:
                with _made_meanwhile(repo_id, "the repository"):
                    api.create_repo(repo_id, private=private, exist_ok=False)
                created = True
                parent = api.list_repo_commits(repo_id)[-1].commit_id  # the repo's first commit
            if branch and target.branch_missing:  # made since it was checked: another push's, never undone here
                with _made_meanwhile(repo_id, f"branch '{branch}'"):
                    api.create_branch(repo_id, branch=branch, revision=parent, exist_ok=False)
                branched = True
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=commit_message,
                commit_description=commit_description,
                revision=branch,
                create_pr=create_pr,
                parent_commit=parent if not create_pr else None,
            )
    except (HubError, hf.HfHubHTTPError, OSError, ValueError) as exc:
        try:  # undo what this push made, unless another's commit landed there since; the failure is reported
            if created and api.model_info(repo_id).sha == parent:
                api.delete_repo(repo_id, missing_ok=True)
            elif branched and branch and api.model_info(repo_id, revision=branch).sha == parent:
                api.delete_branch(repo_id, branch=branch)
        except Exception:
            log.warning("could not undo the repo/branch made by the failed push to %s", repo_id)
        raise PushError(repo_id, str(exc)) from None
    url = str(info.repo_url)
    if branch and not create_pr:  # the repo's page shows its default branch, where this commit is not
        url += f"/tree/{quote(branch, safe='')}"
    return PushResult(
        repo_id=repo_id,
        url=url,
        commit_sha=info.oid,
        commit_url=info.commit_url,
        pull_request_url=info.pr_url,
        files=tuple(files),
    )
