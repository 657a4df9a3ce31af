"""The model card: facts gathered from a merged output, then rendered from ``templates/model_card.md``.

Gathering (``collect_card``) reads the output directory — the pinned recipe, the heads, the
evaluation reports — and, for the license, the inputs' own cards; rendering (``render_card``) is a
pure function of that data with no network. ``ModelCardData`` carries the metadata the Hub reads:
every input as ``base_model``, ``base_model_relation: merge``, datasets, the license when the inputs
agree on one, and a ``model-index`` with each task's accuracy.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .atomic_file import write_atomically
from .engine import HEADS_DIR, read_output_recipe
from .errors import CardEditedError
from .evaluation.report import AVERAGE, EVAL_COMPARISON_FILE, EVAL_RESULTS_FILE, EVAL_SCOPE_FILE
from .output_stamp import OutputStamp
from .published import (
    LOCAL_FOLDERS,
    has_local_folders,
    published_comparison,
    published_names,
    published_scope,
    read_output_json,
    scope_datasets,
)
from .recipe import DatasetRef, ModelRef, Recipe
from .vision.heads import HEADS_INDEX
from .vision.processors import describe_processor

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

__all__ = ["CARD_FILE", "CardFacts", "License", "Measurement", "TaskFacts", "card_is_edited", "collect_card", "render_card", "write_card", "written_card"]

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
# The last line of a card hubmerge wrote: a digest of everything above it, so an edit by hand shows.
_SIGNATURE = re.compile(r"\n<!-- hubmerge card ([0-9a-f]{16}) -->\s*\Z")


@dataclass(frozen=True)
class TaskFacts:
    name: str
    num_labels: int
    head: str  # how the head was obtained, e.g. "fine-tuned (kept)" or "re-initialized: ..."
    reinitialized: bool
    dataset: str | None  # the one the recipe names for it, and its named columns (DatasetRef.described)


@dataclass(frozen=True)
class Measurement:
    """Where one task's accuracy in the results was measured (``eval_scope.json``): not always the recipe's
    dataset (``evaluate --task NAME=DATASET --save``), nor always a task of the recipe (an output of inputs
    that name none)."""

    task: str
    dataset: DatasetRef | None
    samples: int = 0  # examples its accuracy was measured on (0: unknown, an older output)
    split_size: int = 0  # examples in its evaluation split (0: unknown)
    non_finite: int = 0  # of those, examples where the merged model's outputs were NaN or infinite
    by_position: bool = False  # the dataset names its classes otherwise than the head: matched by position

    @property
    def subset(self) -> bool:
        """Measured on a part of the split only (``--max-samples``)."""
        return 0 < self.samples < self.split_size

    @property
    def examples(self) -> str:
        """What its accuracy rests on, in words: "100 of 360 examples, a random subset", "all 360 examples"."""
        if self.subset:
            return f"{self.samples:,} of {self.split_size:,} examples, a random subset"
        if self.samples:
            return f"all {self.samples:,} examples" if self.samples == self.split_size else f"{self.samples:,} examples"
        return ""


@dataclass(frozen=True)
class License:
    """A license as a card declares it: ``other`` is many licenses, told apart by ``license_name``."""

    id: str
    name: str | None = None  # license_name: which ``other`` license
    link: str | None = None  # license_link: where its text is

    def __str__(self) -> str:
        return self.spelled()

    def spelled(self, *, link: bool = False) -> str:
        """``other (llama2)``; with ``link``, where its text is too (two cards naming one license may link
        two texts, and would otherwise read alike in a note saying that they differ)."""
        said = [part for part in (self.name, self.link if link else None) if part]
        return f"{self.id} ({', '.join(said)})" if said else self.id


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, gathered before rendering; local inputs by their published names
    (``published_names``), never by this machine's paths."""

    recipe: Recipe
    tasks: tuple[TaskFacts, ...]
    default_task: str | None
    model_type: str | None
    results: dict[str, dict[str, float]] | None = None
    comparison: dict[str, Any] | None = None
    licenses: dict[str, License | None] = field(default_factory=dict)
    repo_id: str | None = None
    revision: str | None = None  # the branch it is published to, when not the default one
    hub_url: str = "https://huggingface.co"  # "" for links from the root of the Hub that serves the card
    processor: str = ""
    backbone: tuple[str, ...] = ()
    made_with: str | None = None  # the hubmerge version that merged it (None: an output from before it was recorded)
    averaged_statistics: int = 0  # BatchNorm statistics that are the fine-tunes' mean, not the method's result
    measured: tuple[Measurement, ...] = ()  # one per task in the results


# ---------------------------------------------------------------------------- gathering


def _head_facts(output: Path, recipe: Recipe) -> list[TaskFacts]:
    datasets = recipe.datasets
    facts = []
    for task in recipe.tasks:
        config = read_output_json(output / HEADS_DIR / task / "config.json") or {}
        report = config.get("hubmerge_head") or {}
        reinitialized = bool(report.get("reinitialized"))
        how = f"re-initialized ({report.get('reason', 'head did not fit the task')})" if reinitialized else "fine-tuned (kept)"
        labels = config.get("id2label") or {}
        dataset = datasets.get(task)
        facts.append(TaskFacts(task, len(labels), how, reinitialized, dataset.described if dataset else None))
    return facts


def _measurements(recipe: Recipe, results: dict[str, Any] | None, scope: dict[str, Any]) -> list[Measurement]:
    """One per evaluated task: on the dataset ``eval_scope.json`` records, else (older outputs) the recipe's."""
    named = recipe.datasets
    recorded = scope_datasets(scope, named)
    measured = []
    for task in results or {}:
        if task == AVERAGE:
            continue
        where = scope.get(task) or {}
        measured.append(Measurement(task, recorded.get(task, named.get(task)), int(where.get("samples") or 0),
                                    int(where.get("split_size") or 0), int(where.get("non_finite") or 0),
                                    where.get("labels") == "position"))
    return measured


def _input_license(ref: ModelRef, token: str | None, endpoint: str | None) -> License | None:
    """The ``license`` (with its ``license_name`` and ``license_link``) of an input's own card, at the commit
    merged, or None when it has no card, declares none, or the Hub cannot be reached (an unknown license is
    left out, not guessed)."""
    import httpx2
    from huggingface_hub import ModelCard, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        if ref.path is not None:
            readme = ref.path / CARD_FILE
        else:  # ModelCard.load takes no revision: it would read the card of the repo's main branch
            readme = Path(hf_hub_download(str(ref.repo_id), CARD_FILE, revision=ref.revision, token=token,
                                          endpoint=endpoint))
        card = ModelCard.load(readme) if readme.exists() else None
    except (OSError, ValueError, HfHubHTTPError, httpx2.TransportError) as exc:
        log.info("no card for %s (%s)", ref, type(exc).__name__)
        return None
    if card is None or not card.data.get("license"):
        return None
    name, link = card.data.get("license_name"), card.data.get("license_link")
    return License(str(card.data.get("license")), str(name) if name else None, str(link) if link else None)


def collect_card(
    output: str | Path,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> CardFacts:
    """Gather the card's facts from a merged output directory.

    Args:
        output: a directory written by ``hubmerge merge`` (it holds ``hubmerge_recipe.yaml``).
        repo_id: where it is (or will be) published; used in the code samples.
        revision: the branch of ``repo_id`` it goes to, when not the default branch (the code samples
            load from it).
        token: to read the inputs' cards (licenses) from private repos.
        endpoint: the Hub the links point to (default: the one huggingface_hub talks to).

    Raises:
        RecipeError: the directory has no hubmerge recipe.
    """
    output = Path(output)
    recipe = read_output_recipe(output)
    config = read_output_json(output / "config.json") or {}
    heads = read_output_json(output / HEADS_INDEX) or {}
    results = read_output_json(output / EVAL_RESULTS_FILE)
    scope = read_output_json(output / EVAL_SCOPE_FILE) or {}
    published = published_names(recipe, scope)
    comparison = read_output_json(output / EVAL_COMPARISON_FILE)
    return CardFacts(
        recipe=published.recipe,
        tasks=tuple(_head_facts(output, published.recipe)),
        default_task=recipe.resolved_default_task,
        measured=tuple(_measurements(published.recipe, results, published_scope(scope, published.folders))),
        model_type=config.get("model_type") or config.get("hubmerge_family"),
        results=results,
        comparison=published_comparison(comparison, published.refs) if comparison is not None else None,
        licenses={published.refs[str(ref)]: _input_license(ref, token, endpoint) for ref in recipe.inputs},
        repo_id=repo_id,
        revision=revision,
        hub_url=_link_base(endpoint or _default_endpoint()),
        processor=describe_processor(output),
        made_with=heads.get("hubmerge_version"),
        averaged_statistics=len(heads.get("averaged_statistics") or ()),
        backbone=recipe.target_modules or _family_backbone(config),
    )


def _family_backbone(config: dict[str, Any]) -> tuple[str, ...]:
    from .errors import UnsupportedArchitectureError
    from .vision.families import detect_family

    try:
        return detect_family(config, []).backbone
    except UnsupportedArchitectureError:
        return ()


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _link_base(endpoint: str) -> str:
    """What the card's links to Hub repos start with: the Hub's address; nothing (links from the root of the
    Hub serving the card) for a Hub on this machine, whose port changes when it is served again."""
    from urllib.parse import urlsplit

    from .ports import LOOPBACK_HOSTS

    return "" if urlsplit(endpoint).hostname in LOOPBACK_HOSTS else endpoint.rstrip("/")


# ---------------------------------------------------------------------------- rendering


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _results_table(facts: CardFacts) -> str:
    rows: list[tuple[str, dict[str, dict[str, float]]]] = []
    if facts.comparison:
        rows.append(("**merged**", facts.comparison["merged"]))
        if "base" in facts.comparison:
            rows.append(("base + task heads", facts.comparison["base"]))
        if facts.comparison.get("individual"):  # none where no input named a task
            rows.append(("individual fine-tunes", facts.comparison["individual"]))
        rows += [(f"{name} backbone + task heads", r) for name, r in facts.comparison.get("finetuned", {}).items()]
    elif facts.results:
        rows.append(("**merged**", facts.results))
    if not rows:
        return ""
    tasks = [t for t in rows[0][1] if t != "average"]
    lines = ["| model | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for name, report in rows:
        cells = [_pct(report.get(t, {}).get("accuracy")) for t in [*tasks, "average"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _link(ref: ModelRef, hub_url: str) -> str:
    if ref.hub_copy:
        repo_id, _ = ref.hub_copy
        return f"[{repo_id}]({hub_url}/{repo_id}) (local copy from the Hugging Face cache)"
    if ref.path is not None:
        return f"`{ref.path.name}` (local)"
    return f"[{ref.repo_id}]({hub_url}/{ref.repo_id})"


def _hub_repo(ref: ModelRef) -> str | None:
    """The Hub repo ``ref`` is, or is a cached copy of (the card's ``base_model`` lists these)."""
    return ref.hub_copy[0] if ref.hub_copy else ref.repo_id


def _commit(ref: ModelRef) -> str | None:
    return ref.hub_copy[1] if ref.hub_copy else ref.revision


def render_card(facts: CardFacts) -> ModelCard:
    """Render the card (metadata + body) from gathered facts; no network."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .methods import get_method

    recipe = facts.recipe
    method = get_method(recipe.method)
    refs = ([("base", recipe.base_model, None)] if recipe.base_model else []) + [
        ("fine-tune", e.model, e.task) for e in recipe.models
    ]
    hub_inputs = list(dict.fromkeys(repo for _, ref, _ in refs if (repo := _hub_repo(ref))))
    datasets = sorted({e.dataset.path for e in recipe.models if e.dataset and not e.dataset.is_local})
    licenses = set(facts.licenses.values())
    license_ = licenses.pop() if len(licenses) == 1 and None not in licenses else None
    name = facts.repo_id.split("/")[-1] if facts.repo_id else (recipe.name or "merged-model")
    eval_results = []
    for measured in facts.measured:
        value = (facts.results or {}).get(measured.task, {}).get("accuracy")
        if value is None:
            continue
        dataset = measured.dataset
        if dataset is None:
            dataset_type = measured.task
        else:  # a local folder by its name: a path of the machine that evaluated means nothing on the Hub
            dataset_type = Path(dataset.path).name if dataset.is_local else dataset.path
        eval_results.append(EvalResult(
            task_type="image-classification", task_name="Image Classification",
            dataset_type=dataset_type, dataset_name=measured.task,
            dataset_config=dataset.name if dataset else None, dataset_split=dataset.split if dataset else None,
            metric_type="accuracy", metric_name="Accuracy", metric_value=round(float(value), 6),
        ))
    library = "pytorch" if facts.model_type == "torchvision-resnet" else "transformers"
    card_data = ModelCardData(
        base_model=hub_inputs or None,
        library_name=library,
        pipeline_tag="image-classification",
        tags=["hubmerge", "merge", recipe.method, *([facts.model_type] if facts.model_type else [])],
        datasets=datasets or None,
        license=license_.id if license_ else None,
        # which `other` license it is, and where its text is; without them the Hub shows "other" and nothing more
        license_name=license_.name if license_ else None,
        license_link=license_.link if license_ else None,
        # it only names the model-index: without results huggingface_hub would leave it as a key of its own
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
        base_model_relation="merge",
    )
    limitations = [
        f"The head of **{t.name}** was {t.head}: it was not trained with this backbone, so its accuracy is "
        "not meaningful until it is fine-tuned." for t in facts.tasks if t.reinitialized
    ]
    missing = [t for t in facts.tasks if not (facts.results or {}).get(t.name)]
    if unevaluated := [t.name for t in missing if t.dataset]:
        limitations.append(f"No evaluation was run for: {', '.join(unevaluated)} (the recipe names a dataset "
                           "for them; `hubmerge evaluate OUTPUT --save` evaluates them, then `hubmerge card OUTPUT`).")
    if no_dataset := [t.name for t in missing if not t.dataset]:
        limitations.append(f"No evaluation was run for: {', '.join(no_dataset)} (the recipe names no dataset "
                           "for them).")
    if broken := [f"{m.task} ({m.non_finite:,} of {m.samples:,} examples)" for m in facts.measured if m.non_finite]:
        limitations.append(
            "The merged model's outputs were NaN or infinite on some examples, counted as wrong: "
            f"{', '.join(broken)}. Its accuracy there says the merge is broken, not how well it classifies."
        )
    if matched := [m.task for m in facts.measured if m.by_position]:
        limitations.append(
            f"The classes of {', '.join(matched)} were matched by position: the evaluation dataset names them "
            "otherwise than the head's labels, so those accuracies hold only if both list the classes in the same order."
        )
    if any(m.subset for m in facts.measured):
        limitations.append(
            "The accuracies come from a fixed random subset of each evaluation split (seed 0; see Results), "
            "not from the whole split, so on the full splits they will differ somewhat."
        )
    if len(declared := set(facts.licenses.values())) > 1:
        link = len({str(v) for v in declared}) < len(declared)  # some differ only in their license_link
        spelled = ", ".join(f"{k}: {v.spelled(link=link) if v else 'none declared'}"
                            for k, v in facts.licenses.items())
        limitations.append(f"The inputs declare different licenses ({spelled}); check them before you use this model.")
    if has_local_folders(recipe):
        limitations.append(LOCAL_FOLDERS)
    if any(ref.hub_copy for _, ref, _ in refs):
        limitations.append("Some inputs were read from a Hugging Face cache, and the recipe names them by their paths "
                           "there; on a machine without those folders, hubmerge reads the same commits from the Hub.")
    limitations.append(
        "Merging trades some per-task accuracy for one shared backbone; "
        + ("compare the merged row with the individual fine-tunes above" if facts.comparison else
           "`hubmerge evaluate MODEL --compare-inputs` puts it next to the individual fine-tunes")
        + " for the tasks you care about."
    )
    template_vars = dict(
        title=name,
        merged_inputs=recipe.inputs_in_words,
        repo_id=facts.repo_id,
        # the code samples load the branch the card is on (`hubmerge push --branch`), not the default one
        revision=facts.revision if facts.repo_id else None,
        revision_kw=f', revision="{facts.revision}"' if facts.repo_id and facts.revision else "",
        method=recipe.method,
        method_name=method.pretty_name,
        method_paper=method.paper,
        parameters=dict(recipe.parameters),
        family=facts.model_type,
        backbone=list(facts.backbone),
        target_modules=list(facts.backbone),
        default_task=facts.default_task,
        # no task named: the root keeps the first fine-tune's head, the only head there is
        root_head=None if facts.tasks else _link(recipe.models[0].model, facts.hub_url),
        processor=facts.processor,
        library=library,
        tasks=[asdict(t) for t in facts.tasks],
        measured_on=[f"{m.task} on {m.dataset.described if m.dataset else 'its dataset'} ({m.examples})"
                     for m in facts.measured if m.examples],
        inputs=[{"role": role, "link": _link(ref, facts.hub_url), "task": task, "revision": _commit(ref)} for role, ref, task in refs],
        results_table=_results_table(facts),
        comparison=facts.comparison is not None,
        recipe_yaml=yaml.safe_dump(recipe.to_dict(), sort_keys=False),
        made_with=facts.made_with,
        averaged_statistics=facts.averaged_statistics,
        limitations=limitations,
    )
    return ModelCard.from_template(card_data, template_path=str(TEMPLATE), **template_vars)


def write_card(
    output: str | Path,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Gather, render and write ``<output>/README.md``; returns its path. ``hubmerge card`` calls this.

    Raises:
        CardEditedError: ``README.md`` was edited by hand (or not written by hubmerge) and ``overwrite``
            is false: rewriting it would lose the edits.
        OutputReplacedError: another command replaced ``output`` while the card was gathered.
    """
    return written_card(output, repo_id=repo_id, revision=revision, token=token, endpoint=endpoint,
                        overwrite=overwrite)[0]


def written_card(
    output: str | Path,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, str]:
    """``write_card``, returning the text written too: a push commits that text, not what the file holds by
    then (another push of the output may have rewritten it to name its own repo)."""
    output = Path(output)
    path = output / CARD_FILE
    # what the card is gathered from is what it is written into (no folder: collect_card says so)
    stamp = OutputStamp.take(output) if output.is_dir() else None
    if not overwrite and card_is_edited(output):
        raise CardEditedError(str(path))
    card = render_card(collect_card(output, repo_id=repo_id, revision=revision, token=token, endpoint=endpoint))
    body = str(card).rstrip("\n") + "\n"
    if stamp is not None:
        stamp.check("the card")
    text = f"{body}\n<!-- hubmerge card {_digest(body)} -->\n"
    return write_atomically(path, text), text


def card_is_edited(output: str | Path) -> bool:
    """Whether ``<output>/README.md`` exists and is not, word for word, a card hubmerge wrote."""
    path = Path(output) / CARD_FILE
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    signed = _SIGNATURE.search(text)
    return signed is None or _digest(text[: signed.start()]) != signed.group(1)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
