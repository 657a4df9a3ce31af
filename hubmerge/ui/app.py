"""The Gradio app: pick models, plan, merge with live progress, read the results and card, try, push.

``build_app`` returns a ``gr.Blocks`` for the local app (``hubmerge app``, ``python app.py``), the
demo (``hubmerge demo --ui``) and the Hugging Face Space. The handlers live in ``AppHandlers``; they
turn form values into a Recipe (``forms``), call the same library functions as the CLI and return
plain data (``views``). Every failure reaches the page as ``gr.Error`` with the typed message, with
the token redacted; tokens are never rendered. Long work runs in the queue, one job at a time.
"""

import contextlib
import contextvars
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import gradio as gr

from ..errors import AuthenticationError, CancelledError, HubmergeError, RecipeError, redact
from ..methods import get_method, list_methods
from ..plan_summary import INPUT_COLUMNS
from ..ports import LOOPBACK_HOSTS, bind_port
from ..recipe import Recipe
from .forms import DEVICES, DTYPES, MODEL_COLUMNS, ParamField, form_values, param_fields, recipe_from_form
from .views import (
    SUMMARY_COLUMNS,
    card_body,
    plan_headline,
    plan_tables,
    results_chart,
    results_note,
    results_table,
)

if TYPE_CHECKING:
    from typing_extensions import TypeIs

__all__ = ["AppHandlers", "build_app", "launch_app", "on_spaces"]

log = logging.getLogger(__name__)

TITLE = "hubmerge"
MERGES = "hubmerge-merges"  # one merge at a time: CPU/GPU and memory are the limit
PUSHES = "hubmerge-pushes"  # one upload at a time, not queued behind merges that may take hours on a CPU Space
TABLE_HEIGHT = 2000  # px: a plan or a results table of 16 tasks shows whole
#: Seconds between a page's looks at whether its merged output is still there (``keep_outputs_s`` deletes it): one
#: stat on the server, and only while the page holds an output.
OUTPUT_CHECK_S = 60.0
#: The page's own styles (``launch(css=...)``): the card's tables scroll sideways where they are wider than the
#: page, whole words and numbers in their cells; Gradio's markdown breaks words anywhere, so on a phone
#: an accuracy of 93.6 read "93." over "6" and a task name one letter a line.
CSS = """
#card table { display: block; width: max-content; max-width: 100%; overflow-x: auto; padding: 0; border: none; }
#card th, #card td { overflow-wrap: normal; word-break: normal; }
"""


def on_spaces() -> bool:
    """True inside a Hugging Face Space (the Hub sets SPACE_ID): sign-in is OAuth, not a token field."""
    return bool(os.environ.get("SPACE_ID"))


#: Examples per task the app evaluates on a Space unless told otherwise: a CPU Space would take hours over
#: whole splits (sun397's test split alone has 19,850 images, each through every input model).
SPACE_EXAMPLES = 500
#: "Try it"'s one choice for an output of inputs that named no task: its root, with the first input's head.
ROOT_HEAD = "the root's head (no task was named)"


def _builtin_presets() -> dict[str, Callable[[], Recipe]]:
    from ..presets import known_presets, load_preset

    return {name: functools.partial(load_preset, name) for name in known_presets()}


@contextlib.contextmanager
def _user_errors(action: str, *secrets: str | None, upload: str | None = None) -> Iterator[None]:
    """Turn any failure into a gr.Error the page shows until it is closed (a merge may fail while the
    user is on another tab): the typed message, never a trace or a token. ``upload``: a file the user
    uploaded, named as they know it rather than by the path of Gradio's copy on the server."""

    def shown(text: str) -> str:
        if upload:
            for path in dict.fromkeys((upload, str(Path(upload).resolve()))):
                text = text.replace(path, Path(upload).name)
        return redact(text, *secrets)

    try:
        yield
    except gr.Error:
        raise
    except HubmergeError as exc:
        raise gr.Error(shown(f"{type(exc).__name__}: {exc}"), title=f"{action} failed",
                       duration=None, print_exception=False) from None
    except Exception as exc:
        log.error("%s failed: %s", action, redact(repr(exc), *secrets))
        raise gr.Error(shown(f"unexpected error: {type(exc).__name__}: {exc}"),
                       title=f"{action} failed", duration=None, print_exception=False) from None


@dataclass
class AppHandlers:
    """What the app does, independent of its layout (tests call these directly too).

    Attributes:
        endpoint: the Hub inputs are read from and pushed to (None: HF_ENDPOINT / huggingface.co).
        default_token: used when the user gives none (the demo's; on a Space, none). Never shown.
        presets: name -> recipe factory, shown in the preset menu.
        work_dir: where each session's merged output lives until its next merge or until its page closes.
        keep_outputs_s: how long after its merge a session's output is kept at most: a client of the app's
            API never closes a page, and each of its merges would otherwise fill the disk until the app stops.
        max_samples: evaluate at most this many examples per task (None: the whole split); the form's
            starting value, which each merge may change.
        local_paths: whether a recipe may name folders on this machine; off where the app serves others
            (a Space, a host other than loopback), who could otherwise read this machine's files through it
            (a private model in its Hugging Face cache, merged and pushed to their own repo).
    """

    endpoint: str | None = None
    default_token: str | None = None
    presets: Mapping[str, Callable[[], Recipe]] = field(default_factory=dict)
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "hubmerge-app")
    keep_outputs_s: float = 3600.0
    max_samples: int | None = None
    local_paths: bool = True
    fields: dict[str, list[ParamField]] = field(default_factory=param_fields)
    _cancels: dict[str, threading.Event] = field(default_factory=dict, repr=False)
    _models: "OrderedDict[tuple[str, str], tuple[Any, Any]]" = field(default_factory=OrderedDict, repr=False)
    # output a push is uploading -> whether its session forgot it since (then the push deletes it at its end)
    _uploads: dict[Path, bool] = field(default_factory=dict, repr=False)
    # session -> its page's pushes clicked and not answered yet (waiting in the queue or uploading): Push stays off
    _pushes: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---------------------------------------------------------------- form

    @property
    def hub_url(self) -> str:
        from huggingface_hub import constants

        return self.endpoint or constants.ENDPOINT

    @property
    def flat_fields(self) -> list[ParamField]:
        return [f for fields in self.fields.values() for f in fields]

    def token_for(self, typed: str | None, oauth: Optional[gr.OAuthToken]) -> str | None:
        """The signed-in user's token, else the typed one, else the app's default."""
        if oauth is not None and oauth.token:
            return oauth.token
        return (typed or "").strip() or self.default_token

    def recipe(self, base_model: str, models: Any, method: str, parameters: Mapping[str, Any] | None, dtype: str,
               device: str) -> Recipe:
        if isinstance(models, Mapping):  # {"headers": [...], "data": [[...]]}, as the API describes the table
            rows = list(models.get("data") or [])
        elif hasattr(models, "to_numpy"):  # the table as Gradio hands it over: a pandas DataFrame
            rows = models.to_numpy().tolist()
        else:
            rows = list(models or [])
        recipe = recipe_from_form(base_model=base_model, models=rows, method=method, parameters=parameters or {},
                                  dtype=dtype, device=device)
        self._check_hub_only(recipe)
        return recipe

    def _check_hub_only(self, recipe: Recipe) -> None:
        """Where the app serves others, refuse a recipe naming a folder of this machine (see ``local_paths``)."""
        if not self.local_paths and recipe.local_paths:
            path, what = next(iter(recipe.local_paths.items()))
            raise RecipeError(
                f"{what} is a local path ('{path}'): this app is served to others, so it reads models and "
                "datasets from the Hub only; name a Hub repo (org/name)"
            )

    def load_preset(self, name: str) -> tuple[Any, ...]:
        """Field values for a preset: base, models, method, the method's parameters, dtype, device."""
        if name not in self.presets:
            raise gr.Error(f"unknown preset '{name}'; choose one of: {', '.join(self.presets)}")
        with _user_errors("Loading the preset"):
            return self._fill(self.presets[name]())

    def load_recipe_file(self, path: str | None) -> tuple[Any, ...]:
        """Field values from an uploaded recipe YAML (hubmerge or FusionBench style)."""
        from ..recipe import load_recipe

        if not path:
            raise gr.Error("no file was uploaded")
        with _user_errors("Loading the recipe", upload=path):
            recipe = load_recipe(path)
            self._check_hub_only(recipe)
            _check_uploaded_paths(recipe, Path(path).absolute().parent)
            return self._fill(recipe)

    def _fill(self, recipe: Recipe) -> tuple[Any, ...]:
        """The form's fields for ``recipe``; the other methods' parameter fields keep their values."""
        values = form_values(recipe)
        params = [values.parameters.get(f.spec_name, f.default) if f.method == values.method else gr.update()
                  for f in self.flat_fields]
        return (values.base_model, values.models, values.method, values.parameters, values.dtype, values.device,
                *params)

    def show_method(self, method: str) -> tuple[Any, ...]:
        """Show the chosen method's parameter group and its description; hide the others."""
        spec = get_method(method)
        about = f"**{spec.pretty_name}**" + (f": {spec.description}" if spec.description else "")
        if spec.paper:
            about += f" ({spec.paper})"
        return (about, *(gr.update(visible=name == method) for name in self.fields))

    def collect_parameters(self, method: str, *values: Any) -> dict[str, Any]:
        """The chosen method's parameter values from every parameter field (others are ignored)."""
        return {f.spec_name: v for f, v in zip(self.flat_fields, values) if f.method == method}

    # ---------------------------------------------------------------- plan / merge

    def plan(self, base_model: str, models: Any, method: str, parameters: dict[str, Any] | None, dtype: str,
             device: str, token: str | None = None, oauth_token: Optional[gr.OAuthToken] = None,
             ) -> tuple[str, Any, Any]:
        """Headers only: the compatibility table, the plan and the memory estimate."""
        from .. import engine

        secret = self.token_for(token, oauth_token)
        with _user_errors("Plan", secret):
            recipe = self.recipe(base_model, models, method, parameters, dtype, device)
            merge_plan = engine.plan(recipe, token=secret, endpoint=self.endpoint)
            try:
                inputs, summary = plan_tables(merge_plan)
                return plan_headline(merge_plan), inputs, summary
            finally:
                engine.close_plan(merge_plan)

    @staticmethod
    def has_output(output: str | None) -> "TypeIs[str]":
        """Whether the page's merged output is there to try or push: none before a merge, during one (it clears
        the page's), after a failed or cancelled one, or once deleted (``keep_outputs_s``)."""
        return bool(output and Path(output).is_dir())

    def _session_dir(self, session: str) -> Path:
        return self.work_dir / (session or "default")

    @property
    def _kept(self) -> str:
        return f" (one is kept for {self.keep_outputs_s / 60:g} minutes after its merge)"

    @property
    def output_gone(self) -> str:
        """What every action needing the session's output, and the page, say once it was deleted."""
        return (f"this session's merged model was deleted: the app keeps one for {self.keep_outputs_s / 60:g} "
                "minutes after its merge, until the session's next merge; merge again to try or push it")

    def _merged(self, output: str | None, what: str) -> Path:
        """The session's merged output, or a RecipeError saying why there is none to ``what``."""
        if not output:
            raise RecipeError(f"merge first: there is no merged model in this session{what}{self._kept}")
        if not self.has_output(output):
            raise RecipeError(self.output_gone)
        return Path(output)

    def _forget_outputs(self, folder: Path) -> None:
        """Delete a session's output and the models "Try it" keeps loaded from it; an output a push is
        uploading is left to that push to delete when it ends (a new merge may start during a long upload), with
        the links to its files the push reads beside it (``.<output>.hubmerge-tmp-...``)."""
        with self._lock:
            for key in [key for key in self._models if Path(key[0]).parent == folder]:
                del self._models[key]
            uploading = {path for path in self._uploads if path.parent == folder}
            self._uploads.update(dict.fromkeys(uploading, True))
        if not uploading:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for path in folder.iterdir() if folder.is_dir() else ():
            if not any(path == kept or path.name.startswith(f".{kept.name}.") for kept in uploading):
                shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _uploading(self, output: Path) -> Iterator[None]:
        """Keep ``output`` while a push reads it; delete it after, if its session forgot it meanwhile."""
        with self._lock:  # a push of the same output running already (an API caller's) would commit it again
            if output in self._uploads:
                raise RecipeError("this merged model is being pushed already: its push's answer comes when it "
                                  "ends; push again after that if need be")
            self._uploads[output] = False
        try:
            yield
        finally:
            with self._lock:
                orphan = self._uploads.pop(output)
            if orphan:
                shutil.rmtree(output, ignore_errors=True)
                with contextlib.suppress(OSError):
                    output.parent.rmdir()  # the session's folder, when the page closed meanwhile

    def _forget_stale_outputs(self) -> None:
        """Delete the outputs of other sessions merged longer than ``keep_outputs_s`` ago, but for running ones."""
        stale = time.time() - self.keep_outputs_s
        for folder in self.work_dir.iterdir() if self.work_dir.is_dir() else ():
            with contextlib.suppress(OSError):
                if folder.name not in self._cancels and folder.stat().st_mtime < stale:
                    self._forget_outputs(folder)

    def merge(self, base_model: str, models: Any, method: str, parameters: dict[str, Any] | None, dtype: str,
              device: str, token: str | None = None, examples: float | None = None, match_labels: str = "name",
              request: gr.Request = None,  # type: ignore[assignment]
              oauth_token: Optional[gr.OAuthToken] = None, progress: gr.Progress = gr.Progress(),
              ) -> tuple[Any, ...]:
        """Merge, evaluate against the inputs, write the card; returns what the results tab shows.

        ``examples``: evaluate at most this many examples per task, 0 for the whole split (None: the app's
        ``max_samples``). ``match_labels``: how each dataset's classes meet its head (``name``, ``position``).
        """
        from ..publish import build

        secret = self.token_for(token, oauth_token)
        max_samples = self.max_samples if examples is None else (int(examples) or None)
        session = _session(request)
        cancel = self._cancels[session] = threading.Event()
        self._forget_stale_outputs()
        folder = self._session_dir(session)
        self._forget_outputs(folder)  # one output per session: the previous one goes
        output = folder / f"merged-{uuid.uuid4().hex[:8]}"
        progress(0, desc="Planning from headers")
        # gr.Progress finds its event through context variables, which the engine's reader threads lack
        context = contextvars.copy_context()

        def on_progress(done: int, total: int) -> None:
            what = "Merging" if done < total else "Merged: evaluating and writing the card"
            context.copy().run(progress, (done, total), desc=what, unit="bytes")

        passes: dict[str, float] = {}  # each pass's start, for its time left

        def on_eval_progress(what: str, done: int, total: int) -> None:  # each task's pass, images done of all
            if not total:  # a load (a dataset, a model, maybe a download): what the next pass waits on, at 0
                context.copy().run(progress, 0, desc=_sentence(what))  # gradio shows no desc for None
                return
            now = time.monotonic()
            started = passes[what] = now if done == 0 else passes.get(what, now)
            context.copy().run(progress, (done, total), desc=evaluation_step(what, done, total, now - started),
                               unit="images")

        try:
            with _user_errors("Merge", secret):
                recipe = self.recipe(base_model, models, method, parameters, dtype, device)
                built = build(recipe, output, token=secret, endpoint=self.endpoint, max_samples=max_samples,
                              match_labels=match_labels,  # type: ignore[arg-type]
                              on_progress=on_progress, cancel=cancel,  # evaluates the tasks that name a dataset
                              on_eval_progress=on_eval_progress)
                if cancel.is_set():  # pressed after the evaluation's last look (its last batch, the card):
                    raise CancelledError("the merge")  # the page already said so and shows no result
        except gr.Error:  # a merge started since in this session keeps its own output
            shutil.rmtree(output, ignore_errors=True)
            raise
        finally:
            if self._cancels.get(session) is cancel:  # not a newer merge's, which Cancel must still reach
                del self._cancels[session]
        return self._results(built.output, built.comparison or built.report, built.merge.seconds)

    def end_session(self, request: gr.Request = None) -> None:  # type: ignore[assignment]
        """The page was closed: stop its merge and delete its output, so a Space's disk holds live sessions only."""
        session = _session(request)
        event = self._cancels.get(session)
        if event is not None:
            event.set()  # the merge stops at its next tensor group and removes what it wrote
        with self._lock:
            self._pushes.pop(session, None)
        self._forget_outputs(self._session_dir(session))

    def _results(self, output: Path, report: Any, seconds: float) -> tuple[Any, ...]:
        from ..vision.loading import model_tasks

        tasks = model_tasks(output)
        heads = (f"{len(tasks)} task head(s)" if tasks
                 else "no task heads (no input named a task): its root keeps the first input's head")
        status = f"Merged in {seconds:.1f} s into a model with {heads}."
        if report is None:
            status += " No task names a dataset, so nothing was evaluated."
            table = chart = None
        else:
            table, bars = results_table(report), results_chart(report)
            chart = gr.BarPlot(value=bars, sort=list(bars["bar"]))  # grouped per task, in task order
            status = " ".join(filter(None, (status, results_note(report))))
        return (
            status, table, chart, card_body(output / "README.md", self.hub_url), str(output / "hubmerge_recipe.yaml"),
            str(output), gr.update(choices=tasks or [ROOT_HEAD], value=tasks[0] if tasks else ROOT_HEAD),
        )

    def cancel(self, request: gr.Request = None) -> str:  # type: ignore[assignment]
        """Stop this session's merge: the engine stops at the next tensor group and writes nothing.

        A merge still waiting in the queue never reaches here: the button's ``cancels`` takes it off the queue,
        so "nothing to cancel" would be wrong then."""
        event = self._cancels.get(_session(request))
        if event is None:
            return "No merge is running in this page; one waiting in the queue, if any, will not start."
        event.set()
        return "Cancelled: nothing was written."

    # ---------------------------------------------------------------- push / try

    def push(self, output: str | None, repo_id: str, private: bool, overwrite: bool, token: str | None = None,
             oauth_token: Optional[gr.OAuthToken] = None, request: gr.Request = None,  # type: ignore[assignment]
             progress: gr.Progress = gr.Progress()) -> str:
        """Publish the session's merged output in one commit; returns a link to the repo."""
        from ..hub.push import check_repo_id
        from ..publish import publish_output

        secret = self.token_for(token, oauth_token)
        with _user_errors("Push", secret):
            repo_id = (repo_id or "").strip()
            check_repo_id(repo_id)
            if not output and _session(request) in self._cancels:
                raise RecipeError("this page's merge is still running: push once it has ended (the Results tab "
                                  "shows its progress), or cancel it")
            merged = self._merged(output, " to push")
            if not secret:
                raise AuthenticationError(
                    "no token: sign in with Hugging Face" if on_spaces() else
                    "no token: paste a token with write access in the token field")
            with self._uploading(merged):
                pushed = publish_output(merged, repo_id, token=secret, private=private, overwrite=overwrite,
                                        endpoint=self.endpoint, on_step=lambda done, what: progress(done, desc=what))
        return f"Pushed {len(pushed.files)} files in one commit ({pushed.commit_sha[:12]}): [{repo_id}]({pushed.url})"

    def push_clicked(self, request: gr.Request = None) -> tuple[None, gr.Button]:  # type: ignore[assignment]
        """The click's first, unqueued step: clear the last answer, turn Push off and count the page's push until it
        answers (``push_answered``). Pushes share one queue slot, so one may wait behind another page's; a merge
        ending meanwhile, or an older push answering, turned Push on and a second click pushed the model twice."""
        session = _session(request)
        with self._lock:
            self._pushes[session] = self._pushes.get(session, 0) + 1
        return None, gr.Button(interactive=False)

    def push_answered(self, request: gr.Request = None) -> None:  # type: ignore[assignment]
        """A push of the page answered, done or refused: it no longer keeps Push off."""
        session = _session(request)
        with self._lock:
            left = self._pushes.pop(session, 0) - 1
            if left > 0:
                self._pushes[session] = left

    def pushing(self, request: gr.Request = None) -> bool:  # type: ignore[assignment]
        """Whether a push the page clicked has not answered yet."""
        with self._lock:
            return _session(request) in self._pushes

    def try_it(self, output: str | None, task: str | None, image: Any) -> dict[str, float]:
        """The top-5 labels of the merged model with ``task``'s head for one image."""
        import torch

        from ..vision.loading import load_merged, model_labels
        from ..vision.processors import load_processor

        with _user_errors("Try it"):
            output = str(self._merged(output, ""))
            if image is None:
                raise RecipeError("upload an image first")
            if not task:
                raise RecipeError("pick a task")
            key = (output, task)
            with self._lock:
                if key not in self._models:
                    self._models[key] = (load_merged(output, None if task == ROOT_HEAD else task),
                                         load_processor(output))
                    while len(self._models) > 2:
                        self._models.popitem(last=False)
                model, processor = self._models[key]
            with torch.inference_mode():
                out = model(processor([image]))
            logits = out.logits if hasattr(out, "logits") else out
            probs = logits.softmax(-1)[0]
            labels = model_labels(model)
            top = probs.topk(min(5, probs.numel()))
            return {labels.get(int(i), str(int(i))): float(p) for p, i in zip(top.values, top.indices)}


def _session(request: gr.Request | None) -> str:
    """The page's session (``default`` for a direct call, as the tests make)."""
    return getattr(request, "session_hash", None) or "default"


def evaluation_step(what: str, done: int, total: int, elapsed: float) -> str:
    """The page's line for a pass of the evaluation: what it evaluates and, once a batch is done, the time left
    at its rate so far (gradio's bar shows images done of all, and no time left of its own)."""
    line = _sentence(what)
    if done <= 0 or done >= total or elapsed <= 0:
        return line
    left = elapsed * (total - done) / done
    return f"{line}: about {_duration(left)} left"


def _sentence(what: str) -> str:
    """``what`` the evaluation does (``loading ...``, ``evaluating ...``) as the page's line begins it."""
    return what[:1].upper() + what[1:]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _in_page(fn: Callable[..., Any], outputs: Any, inputs: Any = None) -> dict[str, Any]:
    """Event arguments for a step that only changes the page, at once: no API endpoint, queue or spinner."""
    return dict(fn=fn, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden", queue=False)


def _cleared(*components: gr.components.Component) -> dict[str, Any]:
    """Event arguments that empty ``components`` before an action fills them again, so that a failed
    action never leaves the previous answer on screen as if it were this one's (a stale "Pushed", the
    results and recipe link of a merge whose folder the new merge already deleted)."""
    blank = [gr.update(value=None, choices=[]) if isinstance(c, gr.Dropdown) else None for c in components]
    return _in_page(lambda: blank if len(blank) > 1 else blank[0], list(components))


def _running(start: gr.Button, stop: gr.Button, running: bool) -> dict[str, Any]:
    """Event arguments that turn ``start`` off and ``stop`` on while what they start and stop runs, or back
    after it, at once, in the page."""
    return _in_page(lambda: (gr.Button(interactive=not running), gr.Button(interactive=running)), [start, stop])


def _following(handlers: AppHandlers, output: gr.State, image: gr.Image, push: gr.Button, classify: gr.Button,
               checks: gr.Timer, *, push_answered: bool = False) -> dict[str, Any]:
    """Event arguments that set what needs the page's merged output by whether it has one, at once, in the page:
    Push (while no push of the page is waiting or uploading), Classify (with an image given too) and the look at
    whether it is still there. The output is read on the server, where the session's state and output live (also
    on a Space); the image as sent, not decoded. ``push_answered``: the step after a push, which ends its count."""

    def follow(value: str | None, picture: Any,
               request: gr.Request = None) -> tuple[Any, ...]:  # type: ignore[assignment]
        if push_answered:
            handlers.push_answered(request)
        there = AppHandlers.has_output(value)
        return (gr.Button(interactive=there and not handlers.pushing(request)), _classify_button(value, picture),
                gr.Timer(active=there))

    return {**_in_page(follow, [push, classify, checks], [output, image]), "preprocess": False}


def _classifying(output: gr.State, image: gr.Image, classify: gr.Button) -> dict[str, Any]:
    """Event arguments that set Classify alone as ``_following`` does: a step that set Push too turned it on
    during its push."""
    return {**_in_page(_classify_button, classify, [output, image]), "preprocess": False}


def _classify_button(output: str | None, picture: Any) -> gr.Button:
    """Classify, on with a merged output and an image given (as sent, not decoded)."""
    return gr.Button(interactive=AppHandlers.has_output(output) and picture is not None)


def _noticing_gone(handlers: AppHandlers, output: gr.State, notice: gr.Markdown, buttons: list[gr.Button],
                   checks: gr.Timer) -> dict[str, Any]:
    """Event arguments that, once the page's output was deleted (``keep_outputs_s``), say so in the page, forget it
    and turn off what needs it; else change nothing (a push running keeps Push off)."""

    def look(value: str | None) -> Any:
        if not value or handlers.has_output(value):
            return gr.skip()  # every output as it is
        return [None, f"**{_sentence(handlers.output_gone)}.**", *(gr.Button(interactive=False) for _ in buttons),
                gr.Timer(active=False)]

    return _in_page(look, [output, notice, *buttons, checks], output)


def _check_uploaded_paths(recipe: Recipe, upload_folder: Path) -> None:
    """A recipe's relative paths are read from its own folder, which an uploaded copy does not keep: say so
    now, not as a missing model at the merge."""
    for path, what in recipe.local_paths.items():
        if not path.exists() and upload_folder in path.parents:
            raise RecipeError(
                f"the recipe names {what} by the relative path '{path.relative_to(upload_folder)}', which an "
                "uploaded recipe cannot follow (the upload keeps no folder): write its absolute path, or a Hub "
                "repo id, in the recipe"
            )


def _param_component(f: ParamField) -> gr.components.Component:
    common = dict(label=f.label, info=f.info or None, value=f.default)
    if f.kind == "checkbox":
        return gr.Checkbox(**common)
    if f.kind == "choice":
        return gr.Dropdown(choices=list(f.choices or ()), **common)
    if f.kind == "integer":
        return gr.Number(precision=0, **common)
    if f.kind == "number" and f.minimum is not None and f.maximum is not None:
        return gr.Slider(minimum=f.minimum, maximum=f.maximum, step=0.01, **common)
    if f.kind == "number":
        return gr.Number(minimum=f.minimum, maximum=f.maximum, **common)
    return gr.Textbox(**common)


def build_app(
    *,
    endpoint: str | None = None,
    token: str | None = None,
    presets: Mapping[str, Callable[[], Recipe]] | None = None,
    default_preset: str | None = None,
    work_dir: str | Path | None = None,
    max_samples: int | None = None,
    local_paths: bool | None = None,
) -> gr.Blocks:
    """The app as a ``gr.Blocks`` (queue configured); ``launch_app`` serves it.

    Args:
        endpoint: the Hub to read from and push to (default: HF_ENDPOINT or huggingface.co).
        token: the app's own token, used when the user gives none (never shown).
        presets: extra presets (name -> recipe factory) before the built-in ones, e.g. the demo's.
        default_preset: the preset selected when the page opens.
        work_dir: where merged outputs live (default: hubmerge-app in the temp directory).
        max_samples: evaluate at most this many examples per task, to start with (default: the whole
            split; on a Space, ``SPACE_EXAMPLES``); the form lets each merge change it.
        local_paths: whether recipes may name folders on this machine (default: not on a Space); see
            ``AppHandlers``.
    """
    spaces = on_spaces()
    if max_samples is None and spaces:
        max_samples = SPACE_EXAMPLES
    handlers = AppHandlers(endpoint=endpoint, default_token=token, presets={**(presets or {}), **_builtin_presets()},
                           max_samples=max_samples, local_paths=not spaces if local_paths is None else local_paths)
    if work_dir is not None:
        handlers.work_dir = Path(work_dir)
    methods = [m.name for m in list_methods()]
    chosen = default_preset or next(iter(handlers.presets))
    start = form_values(handlers.presets[chosen]())

    # Gradio copies every file it serves or receives (recipes, images) into its cache: sweep the copies
    # older than a day every hour, and all of them when the app stops, so a long-lived Space's disk stays flat.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(
            "# hubmerge\nMerge fine-tuned image classifiers from the Hub without downloading them whole: "
            "plan from headers, stream the merge, keep every task's head, evaluate, publish."
        )
        notice = gr.Markdown(elem_id="notice")  # what the page learns later: its merged model was deleted
        output_state = gr.State(None)
        output_checks = gr.Timer(OUTPUT_CHECK_S, active=False)  # on while the page holds a merged output
        params_state = gr.JSON(value=start.parameters, visible=False)
        with gr.Tab("Merge"):
            with gr.Row():
                preset = gr.Dropdown(list(handlers.presets), value=chosen, label="Preset", scale=3,
                                     elem_id="preset")
                upload = gr.UploadButton("Load recipe YAML", file_types=[".yaml", ".yml"], scale=1)
            base = gr.Textbox(start.base_model, label="Base model (repo id[@revision] or path)", elem_id="base")
            models = gr.Dataframe(
                start.models, headers=list(MODEL_COLUMNS), datatype=["str"] * len(MODEL_COLUMNS),
                label="Models: repo id[@revision], task name, evaluation dataset[:config][:split], weight (used by "
                      f"{', '.join(m.name for m in list_methods() if m.uses_weights)}), and the dataset's label and "
                      "image columns where the evaluation would not find them (blank: its first ClassLabel and "
                      "Image() columns, else the usual names)",
                interactive=True, elem_id="models",
            )
            with gr.Row():
                method = gr.Dropdown(methods, value=start.method, label="Method", elem_id="method")
                dtype = gr.Dropdown(list(DTYPES), value=start.dtype, label="Output dtype")
                device = gr.Dropdown(list(DEVICES), value=start.device, label="Device", allow_custom_value=True,
                                     info="auto, cpu, cuda or cuda:N")
            about = gr.Markdown(handlers.show_method(start.method)[0])
            groups, param_inputs = [], []
            for name, fields in handlers.fields.items():
                with gr.Group(visible=name == start.method) as group:
                    if not fields:
                        gr.Markdown(f"{name} has no parameters.")
                    for f in fields:
                        component = _param_component(f)
                        if f.method == start.method:
                            component.value = start.parameters.get(f.spec_name, f.default)
                        param_inputs.append(component)
                groups.append(group)
            if spaces:
                gr.LoginButton()
                token_box = gr.Textbox(visible=False)
            else:
                token_box = gr.Textbox(label="Hub token (for private models and pushing; never shown or stored)",
                                       type="password", elem_id="token")
            with gr.Row():
                examples = gr.Number(max_samples or 0, label="Examples per task to evaluate (0: the whole split)",
                                     precision=0, minimum=0, elem_id="examples",
                                     info="a fixed random subset (seed 0); the card says how many were used")
                match_labels = gr.Radio(["name", "position"], value="name", elem_id="match-labels",
                                        label="Match each dataset's classes to its head by",
                                        info="name: as id2label names them; position: class i is output i")
            with gr.Row():
                plan_button = gr.Button("Plan", elem_id="plan")
                merge_button = gr.Button("Merge", variant="primary", elem_id="merge")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel", interactive=False)
            plan_headline_md = gr.Markdown(label="Verdict", elem_id="plan-headline")  # labels name API outputs
            # Every row in sight (Gradio scrolls a table past 500 px, and the plan's costs come last); before a
            # plan, the tables' own column names, not Gradio's placeholder 1, 2, 3.
            plan_inputs = gr.Dataframe(label="Compatibility (headers only)", interactive=False, elem_id="plan-inputs",
                                       headers=list(INPUT_COLUMNS), max_height=TABLE_HEIGHT)
            plan_summary = gr.Dataframe(label="Plan", interactive=False, elem_id="plan-summary",
                                        headers=list(SUMMARY_COLUMNS), max_height=TABLE_HEIGHT)

        with gr.Tab("Results"):
            status = gr.Markdown("No merge yet: press **Merge** on the Merge tab, and its accuracy table, chart, "
                                 "recipe and model card appear here.", label="Status", elem_id="status")
            results = gr.Dataframe(label="Accuracy (%) per task: merged vs its inputs", interactive=False,
                                   elem_id="results", headers=["model", "average"], max_height=TABLE_HEIGHT)
            chart = gr.BarPlot(x="bar", y="accuracy", color="model", sort=None, x_title="task · model",
                               y_title="accuracy (%)", label="Merged vs base vs each task's fine-tune",
                               x_label_angle=-30, elem_id="chart")
            recipe_file = gr.File(label="Recipe to reproduce (hubmerge merge RECIPE)", elem_id="recipe")
            card = gr.Markdown(label="Model card", elem_id="card")

        with gr.Tab("Try it"):
            with gr.Row():
                # one box size, whatever the image
                image = gr.Image(type="pil", label="Image", height=320, elem_id="image")
                with gr.Column():
                    task = gr.Dropdown([], label="Task", elem_id="task")
                    try_button = gr.Button("Classify", elem_id="classify", interactive=False)
                    top5 = gr.Label(num_top_classes=5, label="Top-5 labels", elem_id="top5")

        with gr.Tab("Push"):
            with gr.Row():
                repo_id = gr.Textbox(label="Repo id (namespace/name)", placeholder="you/merged-model", elem_id="repo-id")
                # a column as wide as the longer label: Gradio lets checkboxes in a row shrink to nothing, so on a
                # phone the row cut "Overwrite a non-empty repo" to "Overwri" rather than wrapping it to a line
                with gr.Column(min_width=240):
                    private = gr.Checkbox(label="Private", elem_id="private")
                    overwrite = gr.Checkbox(label="Overwrite a non-empty repo", elem_id="overwrite")
            push_button = gr.Button("Push", variant="primary", elem_id="push", interactive=False)
            pushed = gr.Markdown(label="Push", elem_id="pushed")

        form = [base, models, method, params_state, dtype, device]
        # .select, not .change: the preset in sight, picked again after an edit or an upload, loads again
        preset.select(handlers.load_preset, preset, [base, models, method, params_state, dtype, device, *param_inputs],
                      api_visibility="private")
        upload.upload(handlers.load_recipe_file, upload,
                      [base, models, method, params_state, dtype, device, *param_inputs], api_visibility="private")
        method.change(handlers.show_method, method, [about, *groups], api_visibility="private")
        collect = dict(fn=handlers.collect_parameters, inputs=[method, *param_inputs], outputs=params_state,
                       api_visibility="private", show_progress="hidden")
        planned = [plan_headline_md, plan_inputs, plan_summary]
        plan_button.click(**collect).then(**_cleared(*planned)).then(
            handlers.plan, [*form, token_box], planned, api_name="plan"
        )
        merged = [status, results, chart, card, recipe_file, output_state, task]
        # Push and Classify are on only while the page has a merged output (Classify, once given an image too):
        # pressed before a merge, during one or after a failed or cancelled one, they could only answer "merge
        # first". The handlers still check (the API calls them directly), and a refusal turns them off if the output
        # went meanwhile; a gentle timer says so sooner (keep_outputs_s).
        follow_output = _following(handlers, output_state, image, push_button, try_button, output_checks)
        noticing_gone = _noticing_gone(handlers, output_state, notice, [push_button, try_button], output_checks)
        output_checks.tick(**noticing_gone)
        # Merge is off while its merge runs or waits: pressed again, Gradio dropped the second merge without a word
        # (the first one's results then stood for a form changed since); Cancel first, then merge again. Cancel is
        # on only then: pressed with no merge, it could only say there was nothing to cancel.
        merging = merge_button.click(**_running(merge_button, cancel_button, True)).then(**collect).then(
            **_cleared(*merged, pushed, top5, notice)
        ).then(**follow_output).then(
            handlers.merge, [*form, token_box, examples, match_labels], merged,
            api_name="merge", concurrency_limit=1, concurrency_id=MERGES,
        )
        merging.then(**_running(merge_button, cancel_button, False))  # after a merge that ended or was cancelled
        merging.then(**follow_output)  # on after a merge with its output; a failed one leaves them off from its start
        merging.failure(**_running(merge_button, cancel_button, False))  # Gradio's .then does not follow a failure
        cancel_button.click(handlers.cancel, None, status, cancels=[merging], api_name="cancel", queue=False)
        # Push is off from its click (the first step, which Gradio does not start again while it runs) until no push
        # of the page waits or uploads: clicked again meanwhile, it pushed a model twice
        pushing = push_button.click(**_in_page(handlers.push_clicked, [pushed, push_button])).then(
            handlers.push, [output_state, repo_id, private, overwrite, token_box], pushed,
            api_name="push", concurrency_limit=1, concurrency_id=PUSHES,
        )
        answered = _following(handlers, output_state, image, push_button, try_button, output_checks,
                              push_answered=True)
        pushing.then(**answered)
        pushing.failure(**answered)
        # a refused try changes Push only where the output went: a push may be running
        trying = try_button.click(handlers.try_it, [output_state, task, image], top5, api_name="try_it")
        trying.failure(**noticing_gone)
        for picked in (task, image):  # the labels in sight are always of the image, task and model in sight
            picked.change(**_cleared(top5))
        image.change(**_classifying(output_state, image, try_button))  # else only "upload an image first"
        app.unload(handlers.end_session)
    app.queue(default_concurrency_limit=2, max_size=32)
    return app


def launch_app(
    *,
    endpoint: str | None = None,
    token: str | None = None,
    host: str | None = None,
    port: int | None = None,
    presets: Mapping[str, Callable[[], Recipe]] | None = None,
    default_preset: str | None = None,
    max_samples: int | None = None,
    local_paths: bool | None = None,
) -> None:
    """Build and serve the app until Ctrl+C (see ``build_app``); the merged outputs go with it.

    Served to others (a Space, a host other than loopback, a Gradio share link), the app reads no local
    folder (unless ``local_paths``) and uses no token but each visitor's own: neither ``token`` nor the
    machine's login or ``HF_TOKEN``, which would let any visitor read the owner's private repos.

    Each run keeps its outputs, and Gradio's cache unless GRADIO_TEMP_DIR names one, in a folder of
    its own, so a stopped app leaves nothing in the temp directory and two apps never share one.
    """
    if port is not None:  # Gradio's own error speaks of GRADIO_SERVER_PORT and launch()
        bind_port(host or "127.0.0.1", port).close()
    with (tempfile.TemporaryDirectory(prefix="hubmerge-app-") as work_dir,
          _gradio_cache_in(Path(work_dir) / "gradio")):
        from huggingface_hub import constants

        shared = _served_to_others(host)
        if shared and token is not None:
            log.warning("the app is served to others: each visitor signs in or gives a token; yours is not used")
        app = build_app(endpoint=endpoint, token=None if shared else token, presets=presets,
                        default_preset=default_preset, work_dir=work_dir, max_samples=max_samples,
                        local_paths=not shared if local_paths is None else local_paths)
        implicit = constants.HF_HUB_DISABLE_IMPLICIT_TOKEN
        constants.HF_HUB_DISABLE_IMPLICIT_TOKEN = implicit or shared
        try:
            app.launch(server_name=host, server_port=port, show_error=True, allowed_paths=[work_dir],
                       footer_links=["api"], css=CSS)
        finally:
            constants.HF_HUB_DISABLE_IMPLICIT_TOKEN = implicit


def _served_to_others(host: str | None) -> bool:
    """Whether people other than this machine's user reach the app: on a Space, listening beyond loopback,
    or through a Gradio share link (GRADIO_SHARE, or a hosted notebook, where Gradio makes one)."""
    from gradio import utils

    served_on = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    share = os.environ.get("GRADIO_SHARE", "").lower() == "true" or utils.colab_check() or utils.is_hosted_notebook()
    return on_spaces() or share or served_on not in LOOPBACK_HOSTS


@contextlib.contextmanager
def _gradio_cache_in(folder: Path) -> Iterator[None]:
    """Point Gradio's cache at ``folder`` while the app runs, unless GRADIO_TEMP_DIR already names one.

    Gradio deletes the files it cached when it stops, but not the folder it made for each of them,
    so a shared cache (``/tmp/gradio``) fills with empty folders; the run's own folder goes whole.
    """
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield
    finally:
        del os.environ["GRADIO_TEMP_DIR"]
