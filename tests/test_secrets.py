"""No command ever shows or stores the Hub token.

A sentinel token is registered on the local Hub as alice's (her input repos are private, so every
read needs it) and given to each CLI command by --token, --token-file and HF_TOKEN; an unregistered
sentinel provokes the auth errors. The sentinel must appear in no stdout/stderr, no log record, no
error message, no output file (card, recipe, eval json, configs), no file of the pushed repo, and no
file the local Hub or the client cache stored (except the Hub's own token store, ``tokens.json``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download

from hubmerge.cli import main
from hubmerge.errors import HubmergeError
from hubmerge.evaluation import EVAL_RESULTS_FILE
from hubmerge.recipe import Recipe

from ._models import make_family, upload_family

SENTINEL = "hf_SENTINELsecret1234567890abcdefXYZ"  # registered on the local Hub as alice's
BAD_SENTINEL = "hf_SENTINELinvalid0987654321zyxwvuQ"  # unknown to the Hub
MARKERS = (SENTINEL.encode(), BAD_SENTINEL.encode(), b"SENTINEL")  # "SENTINEL": no fragment either


def leaks(data: str | bytes) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [m.decode() for m in MARKERS if m in raw]


def leaking_files(root: Path, *, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name not in skip and leaks(path.read_bytes()):
            found.append(str(path))
    return found


@pytest.fixture(scope="module")
def sentinel_hub(local_hub):
    """The session Hub with the sentinel as one of alice's tokens (in memory only)."""
    tokens = local_hub.server.app.state.hub.tokens
    tokens[SENTINEL] = "alice"
    yield local_hub
    tokens.pop(SENTINEL, None)


@pytest.fixture(scope="module")
def setup(sentinel_hub, tmp_path_factory):
    """alice's private input repos, a tiny labelled dataset for task alpha, and the recipe."""
    import datasets
    import numpy as np

    root = tmp_path_factory.mktemp("secrets")
    family = make_family(root / "family", "resnet")
    repos = upload_family(family, sentinel_hub.endpoint, sentinel_hub.alice_token, prefix="secret-", private=True)
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["class_0", "class_1", "class_2"])})
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(12)]
    split = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(12)]}, features=features)
    dataset = root / "alpha-data"
    datasets.DatasetDict({"test": split}).save_to_disk(str(dataset))
    recipe = Recipe.from_dict({
        "method": "task_arithmetic",
        "base_model": repos["base"],
        "models": [
            {"model": repos["alpha"], "task": "alpha", "dataset": str(dataset)},
            {"model": repos["beta"], "task": "beta"},
        ],
        "target_modules": ["resnet"],
        "device": "cpu",
    })
    recipe_file = root / "recipe.yaml"
    recipe_file.write_text(recipe.to_yaml())
    token_file = root / "token.txt"
    token_file.write_text(SENTINEL + "\n")
    bad_token_file = root / "bad-token.txt"
    bad_token_file.write_text(BAD_SENTINEL)
    return {"root": root, "recipe": recipe_file, "dataset": dataset, "repos": repos, "token_file": token_file,
            "bad_token_file": bad_token_file}


class Runner:
    """Runs ``hubmerge`` in-process and collects everything it showed: stdout, stderr, log records."""

    def __init__(self, capsys, caplog) -> None:
        self.capsys, self.caplog = capsys, caplog
        self.shown: list[tuple[str, str]] = []

    def __call__(self, *args: str) -> int:
        code = main(list(args))
        out = self.capsys.readouterr()
        logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in self.caplog.records)
        self.caplog.clear()
        self.shown.append((" ".join(args[:1]), out.out + out.err + logs))
        return code

    def assert_clean(self) -> None:
        bad = [(cmd, leaks(text)) for cmd, text in self.shown if leaks(text)]
        assert not bad, f"the token was shown by: {bad}"


@pytest.fixture
def run(capsys, caplog, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    caplog.set_level(logging.DEBUG)
    runner = Runner(capsys, caplog)
    yield runner
    runner.assert_clean()


def token_args(mode: str, setup: dict, monkeypatch, *, bad: bool = False) -> list[str]:
    if mode == "flag":
        return ["--token", BAD_SENTINEL if bad else SENTINEL]
    if mode == "file":
        return ["--token-file", str(setup["bad_token_file"] if bad else setup["token_file"])]
    monkeypatch.setenv("HF_TOKEN", BAD_SENTINEL if bad else SENTINEL)
    return []


def pushed_files_leak(repo_id: str, local_hub, where: Path) -> list[str]:
    folder = snapshot_download(repo_id, token=local_hub.alice_token, local_dir=where, endpoint=local_hub.endpoint)
    files = [p for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts]
    assert any(p.name == "README.md" for p in files) and any(p.name == "hubmerge_recipe.yaml" for p in files)
    return leaking_files(Path(folder))


@pytest.mark.parametrize("mode", ["flag", "file", "env"])
def test_every_command_with_a_valid_token_never_shows_or_stores_it(mode, setup, sentinel_hub, run, tmp_path,
                                                                    monkeypatch):
    args = token_args(mode, setup, monkeypatch)
    recipe = str(setup["recipe"])
    out = tmp_path / "merged"
    assert run("plan", recipe, *args) == 0
    assert run("plan", recipe, "--json", *args) == 0
    assert run("merge", recipe, "-o", str(out), "--evaluate", *args) == 0
    assert (out / EVAL_RESULTS_FILE).is_file()  # merge --evaluate ran, with the token, on task alpha
    repo_id = f"alice/secret-out-{mode}-{uuid.uuid4().hex[:6]}"
    assert run("card", str(out), "--repo-id", repo_id, *args) == 0
    report = tmp_path / "report.json"
    assert run("evaluate", str(out), "--task", f"alpha={setup['dataset']}", "--json", str(report),
               "--device", "cpu", *args) == 0
    json.loads(report.read_text())
    assert run("push", recipe, "--repo-id", repo_id, "--max-samples", "6", *args) == 0
    assert run("evaluate", repo_id, "--task", f"alpha={setup['dataset']}", "--device", "cpu", *args) == 0
    as_it_is = f"{repo_id}-as-it-is"
    assert run("push", str(out), "--repo-id", as_it_is, *args) == 0

    assert leaking_files(tmp_path, skip=("token.txt",)) == []
    assert pushed_files_leak(repo_id, sentinel_hub, tmp_path / "pushed") == []
    assert pushed_files_leak(as_it_is, sentinel_hub, tmp_path / "pushed-as-it-is") == []
    assert leaking_files(Path(os.environ["HF_HOME"])) == []
    assert leaking_files(sentinel_hub.root, skip=("tokens.json",)) == []


@pytest.mark.parametrize("mode", ["flag", "file", "env"])
def test_auth_errors_with_an_invalid_token_never_show_it(mode, setup, sentinel_hub, run, tmp_path, monkeypatch):
    args = token_args(mode, setup, monkeypatch, bad=True)
    recipe = str(setup["recipe"])
    assert run("plan", recipe, *args) == 1
    assert run("merge", recipe, "-o", str(tmp_path / "out"), *args) == 1
    assert run("push", recipe, "--repo-id", f"alice/never-{uuid.uuid4().hex[:6]}", "--no-evaluate", *args) == 1
    output = tmp_path / "output"
    output.mkdir()
    (output / "hubmerge_recipe.yaml").write_text(Path(setup["recipe"]).read_text())  # refused at the target check
    assert run("push", str(output), "--repo-id", f"alice/never-{uuid.uuid4().hex[:6]}", *args) == 1
    assert run("evaluate", setup["repos"]["alpha"], "--task", f"alpha={setup['dataset']}", "--device", "cpu",
               *args) != 0
    shown = "\n".join(text for _, text in run.shown)
    assert "Error" in shown  # the failures were reported ...
    assert not (tmp_path / "out").exists()
    assert leaking_files(tmp_path) == []
    assert leaking_files(sentinel_hub.root, skip=("tokens.json",)) == []


def test_typed_errors_and_their_tracebacks_never_hold_the_token(setup, sentinel_hub, monkeypatch):
    monkeypatch.setenv("HUBMERGE_DEBUG", "1")  # the exception itself comes out, traceback and all
    for command in (["plan", str(setup["recipe"])], ["push", str(setup["recipe"]), "--repo-id", "alice/x-never"]):
        with pytest.raises(HubmergeError) as info:
            main([*command, "--token", BAD_SENTINEL])
        text = "".join(traceback.format_exception(info.value))  # its source lines name BAD_SENTINEL: whole tokens only
        assert BAD_SENTINEL not in text and BAD_SENTINEL.removeprefix("hf_") not in text
        assert leaks(repr(info.value.args)) == [] and leaks(str(info.value)) == []


def test_the_token_is_taken_trimmed_from_the_first_source_that_gives_one(tmp_path, monkeypatch):
    """--token, then --token-file, then HF_TOKEN: a token pasted with a newline is trimmed; an empty --token
    (an unset shell variable) is no token, so the file is read; an empty file is refused in its own words,
    not replaced by HF_TOKEN, and a blank --token is an empty one: no token to push with."""
    from hubmerge.errors import AuthenticationError
    from hubmerge.hub.auth import require_token, resolve_token

    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    token_file = tmp_path / "token.txt"
    token_file.write_text("hf_from_the_file\n")
    assert resolve_token(" hf_typed\n", token_file=token_file) == "hf_typed"
    assert resolve_token("", token_file=token_file) == "hf_from_the_file"
    assert resolve_token("  \n", token_file=token_file) == "hf_from_the_file"  # blank as empty: it was "" sent
    assert resolve_token("") == "hf_from_the_environment"
    monkeypatch.setenv("HOME", str(tmp_path))  # --token-file=~/token.txt: no shell expands a ~ after "="
    assert resolve_token(None, token_file="~/token.txt") == "hf_from_the_file"
    token_file.write_text("\n")
    with pytest.raises(AuthenticationError, match="is empty"):
        resolve_token(None, token_file=token_file)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(AuthenticationError, match="push needs a Hub token"):
        require_token("  \n", action="push")


def _served_at(proc: subprocess.Popen[bytes], *, timeout: float = 60) -> tuple[str, bytes]:
    """Where ``hub serve --port 0`` listens, from the line that announces it (stderr), and what it said so far.
    A port chosen here and closed before the server binds it could be taken meanwhile by another pytest process."""
    assert proc.stderr is not None
    said = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and selector.select(timeout=left):
            line = proc.stderr.readline()
            said += line
            if not line:  # it ended
                break
            if found := re.search(rb"local hub on (http://\S+?),", line):
                return found.group(1).decode(), said
    pytest.fail(f"hub serve did not say where it listens: {said[-2000:]!r}")


def test_hub_serve_with_a_token_never_shows_it(tmp_path):
    root = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubmerge.cli", "hub", "serve", "--root", str(root), "--port", "0",
         "--token", f"{SENTINEL}:alice"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    announced = b""
    try:
        endpoint, announced = _served_at(proc)
        api = HfApi(endpoint=endpoint, token=SENTINEL)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert api.whoami()["name"] == "alice"
                break
            except Exception:
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "hub serve did not start"
                time.sleep(0.2)
        api.create_repo("alice/served")
        api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="alice/served")
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; its text is checked below
            HfApi(endpoint=endpoint, token=BAD_SENTINEL).create_repo("alice/refused")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert leaks(out) == [] and leaks(announced + err) == []
    store = root / "tokens.json"
    assert SENTINEL in json.loads(store.read_text())  # the server's own token store, readable by its owner only
    assert store.stat().st_mode & 0o077 == 0
    assert leaking_files(root, skip=("tokens.json",)) == []


@pytest.mark.slow
def test_app_never_shows_token(sentinel_hub, tmp_path, caplog):
    """The web app with the sentinel as its own token and as the user's: pages, answers, errors, logs, pushes."""
    import httpx
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from hubmerge.ui.forms import MODEL_COLUMNS, form_values

    from ._ui_helpers import publish_fixtures, running_app

    os.environ.pop("HF_HUB_OFFLINE", None)
    models = publish_fixtures(sentinel_hub.endpoint, sentinel_hub.alice_token)
    values = form_values(models.recipe("simple_average"))
    form = [values.base_model, {"headers": list(MODEL_COLUMNS), "data": values.models},
            values.method, values.parameters, values.dtype, values.device]
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with running_app(sentinel_hub.endpoint, models, tmp_path / "app", token=SENTINEL) as url:
        seen += [httpx.get(url).text, httpx.get(url + "config").text]
        client = Client(url, verbose=False)
        seen += map(str, client.predict(*form, "", api_name="/plan"))
        seen += map(str, client.predict(*form, SENTINEL, api_name="/merge"))
        seen.append(client.predict("alice/app-secret-push", False, False, SENTINEL, api_name="/push"))
        for repo_id, token in (("not a repo", SENTINEL), ("alice/app-secret-push", BAD_SENTINEL),
                               ("alice/app-secret-push", SENTINEL)):  # bad id, bad token, existing repo
            with pytest.raises(AppError) as caught:
                client.predict(repo_id, False, False, token, api_name="/push")
            seen.append(str(caught.value))
        with pytest.raises(AppError) as caught:
            client.predict("alice/nope", {"headers": ["model", "task", "dataset", "weight"],
                                          "data": [["alice/missing-model", "t", "", ""]]},
                           "simple_average", {}, "as inputs", "cpu", BAD_SENTINEL, api_name="/plan")
        seen.append(str(caught.value))
    assert all(not leaks(text) for text in seen), [text[:200] for text in seen if leaks(text)]
    assert not leaks("\n".join(record.getMessage() for record in caplog.records))
    pushed = Path(snapshot_download("alice/app-secret-push", token=sentinel_hub.alice_token,
                                    cache_dir=tmp_path / "pushed", endpoint=sentinel_hub.endpoint))
    assert leaking_files(pushed) == [] and leaking_files(tmp_path / "app") == []
