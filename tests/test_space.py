"""The Hugging Face Space: its files match what `hubmerge space deploy` uploads, the deploy is one
commit to a space repo on the local Hub, and the uploaded Space builds its app on its own."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import gradio
import httpx
import pytest
from huggingface_hub import HfApi, SpaceCard, snapshot_download

from hubmerge.cli import main
from hubmerge.hub.space import GRADIO_VERSION, package_files, space_files

from ._ui_helpers import on_free_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which the package supports: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_committed_space_files_are_the_generated_ones():
    generated = space_files()
    assert (ROOT / "space" / "README.md").read_text() == generated["README.md"]
    assert (ROOT / "space" / "requirements.txt").read_text() == generated["requirements.txt"]
    assert (ROOT / "app.py").read_text() == generated["app.py"]


def test_no_folder_at_the_root_shadows_the_spaces_package_gradio_imports():
    # On a Space gradio imports `spaces` (ZeroGPU) whenever one can be found; run from the repository's
    # root (`python app.py`, or PYTHONPATH pointing there), a folder named `spaces` was taken for it as a
    # namespace package and building the app failed: "module 'spaces' has no attribute 'gradio_auto_wrap'".
    probe = "import importlib.util as u; s = u.find_spec('spaces'); print(list(s.submodule_search_locations or []) if s else [])"
    found = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert str(ROOT) not in found.stdout


def test_space_front_matter_pins_gradio_and_asks_for_manage_repos():
    card = SpaceCard(space_files()["README.md"])
    data = card.data.to_dict()
    assert data["sdk"] == "gradio" and data["app_file"] == "app.py"
    assert data["sdk_version"] == GRADIO_VERSION == gradio.__version__
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"gradio[oauth]=={GRADIO_VERSION}" in pins
    # a push creates the repo it names (and removes it if its commit fails): on the Hub only manage-repos
    # grants that (write-repos writes to existing repos), so a signed-in visitor's push was refused
    assert data["hf_oauth"] is True and data["hf_oauth_scopes"] == ["manage-repos"]
    assert {"title", "emoji", "colorFrom", "colorTo", "license"} <= set(data)
    assert 0 < len(data["short_description"]) <= 60
    requirements = space_files()["requirements.txt"].split()
    assert any(r.startswith("torch") for r in requirements) and f"gradio[oauth]=={GRADIO_VERSION}" in requirements


def test_the_oldest_huggingface_hub_allowed_speaks_httpx2():
    """hubmerge imports httpx2 and catches its errors: huggingface_hub's HTTP client from 2.0 on (1.x ran on
    httpx). A Space whose image already had a huggingface_hub 1.x kept it, as `>=1.0` allowed and `pip check`
    found fine, and its first plan failed with "No module named 'httpx2'"."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    sources = "\n".join(p.read_text(encoding="utf-8") for p in package_files().values() if p.suffix == ".py")
    assert "import httpx2" in sources
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    committed = (ROOT / "space" / "requirements.txt").read_text().split()
    for requirements in (pins, committed):
        hub = next(Requirement(r) for r in requirements if Requirement(r).name == "huggingface_hub")
        assert not hub.specifier.contains(Version("1.33.0")) and hub.specifier.contains(Version("2.0.0"))


def test_deploy_uploads_a_working_space_in_one_commit(local_hub, tmp_path, capsys):
    os.environ.pop("HF_HUB_OFFLINE", None)
    repo_id = "alice/hubmerge-space"
    code = main(["space", "deploy", "--repo-id", repo_id, "--endpoint", local_hub.endpoint,
                 "--token", local_hub.alice_token])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip().endswith(repo_id) and local_hub.alice_token not in out + err
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    files = set(api.list_repo_files(repo_id, repo_type="space"))
    assert {"app.py", "README.md", "requirements.txt", "hubmerge/ui/app.py", "hubmerge/hub/localhub/app.py",
            "hubmerge/templates/model_card.md", "hubmerge/presets/convnext-base-224-8tasks.yaml"} <= files
    assert set(package_files()) <= files
    assert len(api.list_repo_commits(repo_id, repo_type="space")) == 2  # created, then one commit

    space = Path(snapshot_download(repo_id, repo_type="space", cache_dir=tmp_path / "cache",
                                   endpoint=local_hub.endpoint, token=local_hub.alice_token))
    script = ("import hubmerge, app; from hubmerge.ui import build_app; blocks = build_app().blocks.values(); "
              "assert any(type(b).__name__ == 'LoginButton' for b in blocks); "
              "assert not any(getattr(b, 'type', None) == 'password' for b in blocks); "
              "print('SPACE-OK', hubmerge.__file__)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           # what a Space with hf_oauth sets (the values are placeholders)
           "SYSTEM": "spaces", "SPACE_ID": repo_id, "SPACE_HOST": "alice-hubmerge-space.hf.space",
           "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "secret",
           "OAUTH_SCOPES": "openid profile manage-repos",
           "OPENID_PROVIDER_URL": local_hub.endpoint}
    done = subprocess.run([sys.executable, "-c", script], cwd=space, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert "SPACE-OK" in done.stdout, done.stderr[-3000:]
    assert done.stdout.split("SPACE-OK", 1)[1].strip().startswith(str(space))  # the uploaded package, not ours


def test_a_redeploy_deletes_the_package_files_an_earlier_one_left(local_hub):
    """A preset or module since removed stayed in the Space, and the app, listing its presets' folder, still
    offered it; the owner's own files outside hubmerge/ stay, and it is still one commit."""
    from hubmerge.hub.space import deploy_space

    os.environ.pop("HF_HUB_OFFLINE", None)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    repo_id = f"alice/redeployed-space-{uuid.uuid4().hex[:8]}"
    deploy_space(repo_id, token=local_hub.alice_token, endpoint=local_hub.endpoint)
    for left in ("hubmerge/presets/renamed-since.yaml", "hubmerge/old_module.py", "notes/owner.md"):
        api.upload_file(path_or_fileobj=b"x", path_in_repo=left, repo_id=repo_id, repo_type="space")
    commits = len(api.list_repo_commits(repo_id, repo_type="space"))
    deployed = deploy_space(repo_id, token=local_hub.alice_token, endpoint=local_hub.endpoint)
    files = set(api.list_repo_files(repo_id, repo_type="space"))
    assert "notes/owner.md" in files and set(package_files()) <= files
    assert {f for f in files if f.startswith("hubmerge/")} == set(package_files()) == set(deployed.files) - {
        "README.md", "requirements.txt", "app.py"}
    assert len(api.list_repo_commits(repo_id, repo_type="space")) == commits + 1


def test_deploy_without_a_token_is_refused(local_hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(Path(os.environ["HF_HOME"]) / "nobody"))
    code = main(["space", "deploy", "--repo-id", "alice/no-token-space", "--endpoint", local_hub.endpoint])
    assert code == 1 and "AuthenticationError" in capsys.readouterr().err


def test_only_the_packages_sources_and_data_go_up(tmp_path, monkeypatch):
    """Bytecode and stray files beside the package (a local build, notes) are no part of the Space."""
    from hubmerge.hub import space

    for name in ("__init__.py", "py.typed", "sub/mod.py", "presets/p.yaml", "templates/card.md",
                 "__pycache__/__init__.cpython-311.pyc", "sub/__pycache__/mod.cpython-311.pyc", "notes.txt",
                 "_native.so"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    monkeypatch.setattr(space, "_PACKAGE", tmp_path)
    assert set(package_files()) == {"hubmerge/__init__.py", "hubmerge/py.typed", "hubmerge/sub/mod.py",
                                    "hubmerge/presets/p.yaml", "hubmerge/templates/card.md"}


def test_a_private_deploy_asks_for_a_private_space_on_the_hardware_given(local_hub, monkeypatch):
    from hubmerge.hub.space import deploy_space

    os.environ.pop("HF_HUB_OFFLINE", None)
    asked: list[dict] = []
    create_repo = HfApi.create_repo
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: asked.append(k) or create_repo(self, *a, **k))
    repo_id = f"alice/private-space-{uuid.uuid4().hex[:8]}"
    deploy_space(repo_id, token=local_hub.alice_token, endpoint=local_hub.endpoint, private=True,
                 hardware="t4-small")
    assert [(k["private"], k["space_hardware"], k["repo_type"]) for k in asked] == [(True, "t4-small", "space")]
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    assert api.space_info(repo_id).private


def test_a_refused_deploy_removes_the_space_it_made_and_never_one_that_was_there(local_hub, hub_faults):
    from hubmerge.errors import HubmergeError
    from hubmerge.hub.space import deploy_space

    os.environ.pop("HF_HUB_OFFLINE", None)
    api = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token)
    new, existing = (f"alice/{what}-space-{uuid.uuid4().hex[:8]}" for what in ("new", "existing"))
    api.create_repo(existing, repo_type="space", space_sdk="gradio")
    api.upload_file(path_or_fileobj=b"the user's app", path_in_repo="app.py", repo_id=existing, repo_type="space")
    sha = api.space_info(existing).sha
    for repo_id in (new, existing):
        hub_faults.path_pattern = r"/commit/"
        hub_faults.status, hub_faults.status_times = 422, 1
        with pytest.raises(HubmergeError, match="422"):
            deploy_space(repo_id, token=local_hub.alice_token, endpoint=local_hub.endpoint)
    assert not api.repo_exists(new, repo_type="space")
    assert api.repo_exists(existing, repo_type="space") and api.space_info(existing).sha == sha


def _app_answering(port: int, endpoint: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], httpx.Response]:
    """`hubmerge app --port PORT` and its page, once it says it runs there; an OSError where the port was taken
    before the app bound it (for ``on_free_port``). A page asked for before that could be another process's, on
    the port taken."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hubmerge.cli", "app", "--port", str(port), "--endpoint", endpoint],
        env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    said = ""
    deadline = time.monotonic() + 180
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and selector.select(timeout=left):
            chunk = os.read(process.stdout.fileno(), 65536).decode(errors="replace")  # not the text buffer's
            said += chunk
            if re.search(rf"Running on local URL:\s+http://\S+:{port}\b", said):  # Gradio's, once bound
                return process, httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
            if not chunk:  # it ended
                break
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    process.stdout.close()
    if "already in use" in said or "Cannot find empty port" in said:  # hubmerge's check, or Gradio's
        raise OSError(said)
    pytest.fail(f"hubmerge app did not say it runs on port {port} within 180 s: {said[-2000:]}")


@pytest.mark.slow
def test_the_app_is_not_taken_for_the_server_on_a_port_taken_before_it_bound(local_hub, tmp_path, monkeypatch):
    """Where the chosen port was taken meanwhile by another process's server, its page answered first and was taken
    for the app's (the app then failed to bind, unseen): the app is started on another port, and its page is read."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from . import _ui_helpers

    class Other(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls it so
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"another process's page")

        def log_message(self, *args: object) -> None:
            pass

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "GRADIO_TEMP_DIR")}
    env["TMPDIR"] = str(tmp_path)
    with ThreadingHTTPServer(("127.0.0.1", 0), Other) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        busy, free_port = other.server_address[1], _ui_helpers.free_port
        chosen = iter([busy])  # then free ones
        monkeypatch.setattr(_ui_helpers, "free_port", lambda: next(chosen, None) or free_port())
        try:
            (process, page), port = on_free_port(lambda port: _app_answering(port, local_hub.endpoint, env))
        finally:
            other.shutdown()
    try:
        assert port != busy and "hubmerge" in page.text
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
def test_hubmerge_app_serves_the_page_and_leaves_nothing_behind(local_hub, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "GRADIO_TEMP_DIR")}
    env["TMPDIR"] = str(tmp_path)  # the only temporary directory the app may use
    (process, page), port = on_free_port(lambda port: _app_answering(port, local_hub.endpoint, env))
    try:
        assert "hubmerge" in page.text
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).json()
        assert any(d.get("api_name") == "merge" for d in config["dependencies"])
        uploaded = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=30,
                              files={"files": ("recipe.yaml", b"method: simple_average\n")}).json()
        assert Path(uploaded[0]).read_bytes() == b"method: simple_average\n"  # gradio's cached copy
        run_folders = list(tmp_path.glob("hubmerge-app-*"))  # this run's own, for outputs and gradio's cache
        assert len(run_folders) == 1 and Path(uploaded[0]).is_relative_to(run_folders[0])
        process.send_signal(signal.SIGINT)  # Ctrl+C
        assert process.wait(timeout=60) == 0
        # outputs, cached copies and the folder gradio makes for each copy are gone; gradio itself makes
        # one fixed empty folder as it starts, which never grows
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
            "gradio", "gradio/vibe_edit_history"]
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()
