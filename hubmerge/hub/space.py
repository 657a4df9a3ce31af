"""``hubmerge space deploy``: publish the web app as a Hugging Face Space, in one commit.

A Space needs ``README.md`` (front matter: Gradio SDK at the version the app is built for, OAuth with
the ``manage-repos`` scope so visitors push to their own account: ``write-repos`` only writes to repos that
exist, ``manage-repos`` also creates the one a push names and removes it if its commit fails),
``requirements.txt``, ``app.py`` and the package itself. ``space_files`` generates the first three (the
repository's ``space/`` and ``app.py`` are these same files, checked by a test) and ``deploy_space`` uploads
them with every file of the ``hubmerge`` package, deleting the files an earlier deploy's package had and
this one lacks.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HubmergeError, PushError
from .push import check_repo_id, hub_api
from .source import hub_errors

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["GRADIO_VERSION", "SpaceDeployment", "deploy_space", "package_files", "space_files"]

log = logging.getLogger(__name__)

GRADIO_VERSION = "6.31.0"  # the Space's sdk_version; pyproject pins the same
TITLE = "hubmerge"
_PACKAGE = Path(__file__).resolve().parent.parent
_PACKAGE_SUFFIXES = {".py", ".yaml", ".md", ".typed"}
# Only needed for the fixtures' training (tests and the demo), not by the app.
_NOT_ON_SPACES = {"scikit-learn"}

@dataclass(frozen=True)
class SpaceDeployment:
    repo_id: str
    url: str
    commit_sha: str
    files: tuple[str, ...]


def _requirements() -> str:
    """The package's runtime dependencies as pip lines; gradio[oauth] at the SDK's version, for sign-in."""
    lines = []
    for requirement in metadata.requires("hubmerge") or []:
        if ";" in requirement:  # extras (test, bench) and markers
            continue
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]
        if name.lower() not in _NOT_ON_SPACES:
            lines.append(requirement.replace(" ", ""))
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def space_files() -> dict[str, str]:
    """``README.md``, ``requirements.txt`` and ``app.py`` of the Space, as text."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from .. import __version__

    env = Environment(loader=FileSystemLoader(_PACKAGE / "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    readme = env.get_template("space_README.md").render(title=TITLE, gradio_version=GRADIO_VERSION,
                                                         version=__version__)
    app = (_PACKAGE / "templates" / "space_app.py").read_text(encoding="utf-8")  # the repo's app.py links here
    return {"README.md": readme, "requirements.txt": _requirements(), "app.py": app}


def package_files() -> dict[str, Path]:
    """Every file of the installed ``hubmerge`` package a Space needs, by its path in the Space."""
    files = {}
    for path in sorted(_PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in _PACKAGE_SUFFIXES:
            files[f"hubmerge/{path.relative_to(_PACKAGE).as_posix()}"] = path
    return files


def deploy_space(
    repo_id: str, *, token: str, endpoint: str | None = None, private: bool = False, hardware: str | None = None
) -> SpaceDeployment:
    """Create (or update) the Space ``repo_id`` with the app, in one commit.

    Args:
        repo_id: ``namespace/name`` of the Space.
        token: a token that may write to ``namespace`` (never logged).
        endpoint: the Hub (default HF_ENDPOINT / huggingface.co).
        private: create the Space private (only when it does not exist yet).
        hardware: e.g. ``t4-small``, requested when the Space is created.

    A Space deployed before keeps its ``hubmerge/`` in step with this package: the same commit deletes the
    files it no longer has (a preset or module since removed stayed in the Space, and presets are found by
    listing their folder, so the app still offered it). Files outside ``hubmerge/`` are left as they are.

    Returns:
        ``SpaceDeployment`` with the commit and URL.

    Raises:
        AuthenticationError / HubError: the Hub refused the Space or its commit, or could not be reached.
        PushError: the upload failed otherwise (a package file that cannot be read).
        Either way a Space this call created is removed again.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub import errors as hf

    check_repo_id(repo_id)
    api = hub_api(token, endpoint)
    operations: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(name, text.encode()) for name, text in space_files().items()]
    operations += [CommitOperationAdd(name, str(path)) for name, path in package_files().items()]
    created = False
    try:
        with hub_errors(repo_id, publishing=True):
            if not api.repo_exists(repo_id, repo_type="space"):
                api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private,
                                space_hardware=hardware)
                created = True
            else:
                operations += [CommitOperationDelete(path) for path in _stale_package_files(api, repo_id)]
            info = api.create_commit(repo_id, operations, repo_type="space",
                                     commit_message="Deploy the hubmerge app",
                                     commit_description="app.py, the hubmerge package, requirements and README.")
    except Exception as exc:
        if created:
            try:
                api.delete_repo(repo_id, repo_type="space", missing_ok=True)
            except Exception:
                log.warning("could not remove the Space %s made by the failed deploy", repo_id)
        if not isinstance(exc, HubmergeError) and isinstance(exc, (hf.HfHubHTTPError, OSError, ValueError)):
            raise PushError(repo_id, str(exc)) from None
        raise
    return SpaceDeployment(repo_id, str(info.repo_url), info.oid,
                           tuple(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)))


def _stale_package_files(api: HfApi, repo_id: str) -> list[str]:
    """The Space's files under ``hubmerge/`` that this package does not have (an earlier deploy's)."""
    current = set(package_files())
    return sorted(path for path in api.list_repo_files(repo_id, repo_type="space")
                  if path.startswith("hubmerge/") and path not in current)
