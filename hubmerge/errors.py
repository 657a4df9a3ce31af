"""Every error hubmerge raises, in one place.

Each error names the object at fault (model, file, tensor, task), says what to do about it, and
inherits from a builtin that fits, so callers can catch broadly (``except OSError``) or precisely
(``except HeaderParseError``). Messages are scrubbed of anything that looks like a Hugging Face
token before they are shown.

    HubmergeError
    ├── RecipeError (ValueError)               the recipe / CLI input is wrong
    │   ├── UnknownMethodError                 method name not in the registry
    │   ├── MethodParameterError               a method parameter has a bad name, type or value
    │   ├── UnknownPresetError                 preset name not known
    │   └── UnknownTaskError                   task name not in the class-name registry
    ├── PlanError (ValueError)                 the models cannot be merged as asked
    │   ├── MissingTensorError                 a merged tensor is absent from some model
    │   ├── ShapeMismatchError                 merged tensors disagree in shape
    │   ├── DtypeMismatchError                 merged tensors disagree in kind (float vs int)
    │   ├── UnsupportedDtypeError              a dtype hubmerge cannot do math on
    │   └── UnsupportedArchitectureError       the model family is not one hubmerge knows
    ├── WeightsError (OSError)                 reading weights failed
    │   ├── ModelFilesNotFoundError (FileNotFoundError)   no safetensors / missing file
    │   ├── HeaderParseError                   a safetensors header is corrupt or truncated
    │   ├── ShardIndexError                    model.safetensors.index.json is corrupt or unsafe
    │   └── RangeReadError                     a byte range could not be read (local or HTTP)
    ├── NonFiniteTensorError (ValueError)      NaN / Inf met in the inputs
    ├── OutputExistsError (FileExistsError)    the output exists and --overwrite was not given
    │   └── OutputNotOursError                 the output is a folder (or file) hubmerge did not write
    ├── OutputHoldsInputError (FileExistsError)  the output is or holds an input, the recipe, home or cwd
    ├── CardEditedError (FileExistsError)      the card was edited by hand and --overwrite was not given
    ├── OutputSpaceError (OSError)             the output's disk cannot hold it
    ├── OutputNotWritableError (OSError)       the output's disk filled up or cannot be written
    ├── OutputReplacedError (OSError)          another command replaced the output while this one worked on it
    ├── ListenError (OSError)                  a server cannot listen on --host / --port
    │   └── PortInUseError                     something listens there already
    ├── LocalHubRootError (OSError)            the local Hub's --root cannot be served (in use, bad tokens.json)
    ├── DatasetError (ValueError)              a dataset cannot be used for evaluation
    ├── HeadMismatchError (ValueError)         a head disagrees with its task's labels
    ├── HubError (OSError)                     talking to the Hub failed
    │   ├── AuthenticationError (PermissionError)  no token / bad token
    │   ├── RepoNotFoundError (FileNotFoundError)
    │   └── PushError                          publishing failed; the repo was left as it was
    └── CancelledError                          the user cancelled a long job
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "AuthenticationError",
    "CancelledError",
    "CardEditedError",
    "DatasetError",
    "DtypeMismatchError",
    "HeadMismatchError",
    "HeaderParseError",
    "HubError",
    "HubmergeError",
    "ListenError",
    "LocalHubRootError",
    "MethodParameterError",
    "MissingTensorError",
    "ModelFilesNotFoundError",
    "NonFiniteTensorError",
    "OutputExistsError",
    "OutputHoldsInputError",
    "OutputNotOursError",
    "OutputNotWritableError",
    "OutputReplacedError",
    "OutputSpaceError",
    "PlanError",
    "PortInUseError",
    "PushError",
    "RangeReadError",
    "RecipeError",
    "RepoNotFoundError",
    "ShapeMismatchError",
    "ShardIndexError",
    "UnknownMethodError",
    "UnknownPresetError",
    "UnknownTaskError",
    "UnsupportedArchitectureError",
    "UnsupportedDtypeError",
    "WeightsError",
    "did_you_mean",
    "redact",
]

# Hugging Face user / org tokens ("hf_" + 30+ chars) and bearer headers, wherever they appear.
_TOKEN_PATTERNS = (
    re.compile(r"hf_[A-Za-z0-9]{10,}"),
    re.compile(r"(?i)(authorization:?\s*bearer\s+)\S+"),
    re.compile(r"(?i)(token=)[^&\s]+"),
)


def redact(text: str, *secrets: str | None) -> str:
    """Remove tokens from ``text``: the given secrets verbatim, and anything shaped like one.

    Why: errors, logs, cards and the UI must never show a token, even one that a lower library
    (an HTTP client, a URL) put into a message we are about to re-raise.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_PATTERNS[0].sub("hf_***", text)
    for pattern in _TOKEN_PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


PER_MODEL_WEIGHTS = "Weights are per model: give each entry under 'models' a 'weight'."


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """" Did you mean 'X'?" for the closest of ``options`` to a misspelt ``word``, or "" if none is close."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def listed(items: Iterable[str], limit: int = 20) -> str:
    """``"a, b, c (and 4 more)"``: the first ``limit`` of ``items``, for a message that stays one line."""
    items = list(items)
    shown = ", ".join(items[:limit])
    more = len(items) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


class HubmergeError(Exception):
    """Root of every error hubmerge raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def append_to_message(self, hint: str) -> None:
        """Add context (e.g. which model or step) while the error travels up."""
        self.args = (redact(f"{self.message}\n{hint}"),) + tuple(self.args[1:])

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------- recipe / input


class RecipeError(HubmergeError, ValueError):
    """The recipe (YAML, CLI flags or UI form) is wrong; the message says which field and how to fix it."""

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None) -> None:
        where = ""
        if source:
            where += f"{source}: "
        if field:
            where += f"'{field}': "
        super().__init__(where + message)
        self.problem = redact(message)  # without the field and source, for a place that names them itself
        self.field = field
        self.source = source


class UnknownMethodError(RecipeError):
    def __init__(self, name: str, known: Sequence[str], *, translation: str | None = None) -> None:
        super().__init__(
            f"unknown merge method '{name}'. Known methods: {listed(sorted(known), 50)}."
            + (f" {translation}" if translation else did_you_mean(name, known)),
            field="method",
        )
        self.name = name
        self.known = tuple(known)


class MethodParameterError(RecipeError):
    def __init__(self, method: str, parameter: str, problem: str) -> None:
        super().__init__(f"method '{method}': {problem}", field=f"parameters.{parameter}")
        self.method = method
        self.parameter = parameter


class UnknownPresetError(RecipeError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(
            f"unknown preset '{name}'. Known presets: {listed(sorted(known), 50)}." + did_you_mean(name, known),
            field="preset",
        )
        self.name = name
        self.known = tuple(known)


class UnknownTaskError(RecipeError):
    def __init__(self, name: str, known: Sequence[str], *, hint: str = "") -> None:
        """With no ``known`` tasks at all, the ``hint`` (why there are none) is the whole message."""
        if known or not hint:
            msg = f"unknown task '{name}'. Known tasks: {listed(sorted(known), 60)}." + (f" {hint}" if hint else "")
        else:
            msg = hint
        super().__init__(msg, field="task")
        self.name = name
        self.known = tuple(known)


# ---------------------------------------------------------------- plan


class PlanError(HubmergeError, ValueError):
    """The inputs cannot be merged as asked. Raised by ``plan`` before any weight byte is read."""


class MissingTensorError(PlanError):
    def __init__(self, missing: dict[str, list[str]]) -> None:
        """``missing`` maps tensor name -> models that lack it."""
        lines = [f"  {name}: missing in {', '.join(models)}" for name, models in sorted(missing.items())]
        shown = lines[:30] + ([f"  ... and {len(lines) - 30} more"] if len(lines) > 30 else [])
        super().__init__(
            f"{len(missing)} tensor(s) to merge are missing in some models:\n"
            + "\n".join(shown)
            + "\nAre these fine-tunes of the same base model? Narrow `target_modules` to the shared backbone."
        )
        self.missing = missing


class ShapeMismatchError(PlanError):
    def __init__(self, mismatches: dict[str, dict[str, tuple[int, ...]]], *, suggestion: Sequence[str] = ()) -> None:
        """``mismatches`` maps tensor name -> {model: shape} for every tensor whose shapes disagree;
        ``suggestion`` the ``target_modules`` that would leave them out."""
        lines = []
        for name, shapes in sorted(mismatches.items()):
            detail = ", ".join(f"{model}={list(shape)}" for model, shape in shapes.items())
            lines.append(f"  {name}: {detail}")
        shown = lines[:30] + ([f"  ... and {len(lines) - 30} more"] if len(lines) > 30 else [])
        super().__init__(
            f"{len(mismatches)} tensor(s) to merge have different shapes across models:\n"
            + "\n".join(shown)
            + "\nOnly tensors of equal shape can be merged. Keep heads out of the merge with "
            + (f"`target_modules: [{', '.join(suggestion)}]`" if suggestion else "`target_modules` (e.g. [convnext])")
            + " so that each task keeps its own."
        )
        self.mismatches = mismatches
        self.tensors = tuple(sorted(mismatches))


class DtypeMismatchError(PlanError):
    def __init__(self, mismatches: dict[str, dict[str, str]]) -> None:
        lines = [
            f"  {name}: " + ", ".join(f"{m}={d}" for m, d in kinds.items())
            for name, kinds in sorted(mismatches.items())
        ]
        super().__init__(
            f"{len(mismatches)} tensor(s) mix floating point and integer dtypes across models:\n"
            + "\n".join(lines[:30])
        )
        self.mismatches = mismatches


class UnsupportedDtypeError(PlanError):
    def __init__(self, tensor: str, dtype: str, where: str) -> None:
        super().__init__(
            f"{where}: tensor '{tensor}' has dtype {dtype}, which hubmerge cannot load into torch. "
            "Convert the model to F32/F16/BF16 first."
        )
        self.tensor = tensor
        self.dtype = dtype


class UnsupportedArchitectureError(PlanError):
    def __init__(self, what: str, supported: Sequence[str], *, wrapper: str | None = None) -> None:
        """``wrapper``: the prefix (``module.``) before names that would otherwise be a supported family's."""
        super().__init__(f"{what} is not a supported architecture. Supported: {listed(supported, 50)}.")
        self.supported = tuple(supported)
        self.wrapper = wrapper


# ---------------------------------------------------------------- weights IO


class WeightsError(HubmergeError, OSError):
    """Reading model weights failed."""


class ModelFilesNotFoundError(WeightsError, FileNotFoundError):
    def __init__(self, message: str, *, model: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.path = path


class HeaderParseError(WeightsError):
    """A safetensors file is corrupt, truncated or not a safetensors file at all."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(
            f"{where}: not a valid safetensors file: {problem}. "
            "The file is corrupt or truncated; download it again or re-save the model."
        )
        self.where = where
        self.problem = problem


class ShardIndexError(WeightsError):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: invalid model.safetensors.index.json: {problem}")
        self.where = where
        self.problem = problem


class RangeReadError(WeightsError):
    def __init__(self, where: str, problem: str, *, offset: int | None = None, length: int | None = None) -> None:
        span = f" (bytes {offset}-{offset + length - 1})" if offset is not None and length else ""
        super().__init__(f"{where}{span}: {problem}")
        self.where = where
        self.offset = offset
        self.length = length


class NonFiniteTensorError(HubmergeError, ValueError):
    """NaN/Inf in an input's tensor; or, given ``overflowed`` (the output dtype), values past its range."""

    def __init__(self, tensor: str, models: Sequence[str], *, overflowed: str | None = None) -> None:
        advice = (f"{overflowed} cannot hold its values: write the output in float32 (the recipe's "
                  "`dtype: float32`, or --dtype float32)." if overflowed is not None else
                  "Merging would spread them into the output; fix or drop that model.")
        super().__init__(
            f"tensor '{tensor}' holds NaN or Inf values in {', '.join(models)}. {advice} Nothing was written."
        )
        self.tensor = tensor
        self.models = tuple(models)


class OutputExistsError(HubmergeError, FileExistsError):
    def __init__(self, path: str, *, is_file: bool = False) -> None:
        what = "is a file, not a directory" if is_file else "already exists and is not empty"
        super().__init__(f"output '{path}' {what}. Pass --overwrite (from Python: overwrite=True) to replace it.")
        self.path = path


class OutputNotOursError(OutputExistsError):
    """--overwrite replaces an earlier output whole: a folder of other files it would delete is refused."""

    def __init__(self, path: str, mark: str, *, is_file: bool = False) -> None:
        what, lost = ("is a file, not an earlier output", "it") if is_file else (
            f"is no earlier output (it holds no {mark})", "the files it holds")
        HubmergeError.__init__(
            self,
            f"output '{path}' {what}: replacing it would delete {lost}, so hubmerge does not, even with "
            "--overwrite. Choose another output directory, or delete that one yourself if it is not needed.",
        )
        self.path = path


class OutputHoldsInputError(HubmergeError, FileExistsError):
    def __init__(self, path: str, held: str, what: str) -> None:
        where = "is" if path == held else f"holds {held},"
        super().__init__(
            f"output '{path}' {where} {what}: writing the merge there would delete it, even with --overwrite. "
            "Choose another output directory."
        )
        self.path = path
        self.held = held


class CardEditedError(HubmergeError, FileExistsError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"'{path}' was edited by hand (or not written by hubmerge); pass --overwrite to replace it with a new "
            "card, losing the edits"
        )
        self.path = path


class OutputSpaceError(HubmergeError, OSError):
    def __init__(self, path: str, needed: str, free: str) -> None:
        super().__init__(
            f"output '{path}' needs {needed} but its disk has {free} free; "
            "free some space, or write it to another disk"
        )
        self.path = path


class OutputNotWritableError(HubmergeError, OSError):
    """The output could not be put in place (its disk full, read-only or not the user's; other merges kept taking
    its place); nothing partial was left."""

    def __init__(self, path: str, problem: str, remedy: str) -> None:
        super().__init__(f"output '{path}' could not be written: {problem}; nothing partial was left. {remedy}")
        self.path = path


class OutputReplacedError(HubmergeError, OSError):
    """The output folder was replaced or removed (another command's merge) while this command worked on it."""

    def __init__(self, path: str, what: str, *, removed: bool = False) -> None:
        happened = "was removed" if removed else "was replaced by another output (another command merged into it)"
        super().__init__(
            f"output '{path}' {happened} while this command worked on it; hubmerge did not write {what} into it, "
            "as they were made from the folder that was there before. Run the command again once the other has ended."
        )
        self.path = path


# ---------------------------------------------------------------- vision / evaluation


class DatasetError(HubmergeError, ValueError):
    def __init__(self, dataset: str, problem: str) -> None:
        super().__init__(f"dataset '{dataset}': {problem}")
        self.dataset = dataset


class HeadMismatchError(HubmergeError, ValueError):
    """A head and its labels (or a dataset's) do not fit; ``task`` is None for a model with one head."""

    def __init__(self, task: str | None, problem: str) -> None:
        super().__init__(problem if task is None else f"task '{task}': {problem}")
        self.task = task


# ---------------------------------------------------------------- hub


class HubError(HubmergeError, OSError):
    """Talking to the Hub (or a Hub-compatible server) failed."""


class AuthenticationError(HubError, PermissionError):
    pass


class RepoNotFoundError(HubError, FileNotFoundError):
    def __init__(self, repo_id: str, *, revision: str | None = None, hint: str = "") -> None:
        rev = f" at revision '{revision}'" if revision else ""
        msg = f"repository '{repo_id}'{rev} was not found (or it is private and no valid token was given)."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)
        self.repo_id = repo_id
        self.revision = revision


class PushError(HubError):
    def __init__(self, repo_id: str, problem: str, *, outcome: str = "The repository was left as it was.") -> None:
        super().__init__(f"push to '{repo_id}' failed: {problem.rstrip('.')}. {outcome}")
        self.repo_id = repo_id


class LocalHubRootError(HubmergeError, OSError):
    """The local Hub's storage folder cannot be served: another server uses it, or a file in it is wrong."""

    def __init__(self, root: str, problem: str) -> None:
        super().__init__(f"local Hub root '{root}': {problem}")
        self.root = root


class ListenError(HubmergeError, OSError):
    def __init__(self, host: str, port: int, problem: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {problem}")
        self.host, self.port = host, port


class PortInUseError(ListenError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, "it is already in use (another hubmerge app or local Hub?); choose another "
                         "with --port")


class CancelledError(HubmergeError):
    def __init__(self, what: str = "the job") -> None:
        super().__init__(f"{what} was cancelled; nothing was written.")
