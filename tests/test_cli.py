"""The command line: thin commands, one readable line per typed error, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hubmerge.cli import GC_THRESHOLD, main

from ._models import make_family, write_recipe


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("family"), "resnet")


def test_plan_prints_tables_and_json(tmp_path, family, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", family, "ties")
    assert main(["plan", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "Inputs" in err and "merged tensors" in err and "peak memory" in err and "head: alpha" in err
    assert main(["plan", str(recipe), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "ties" and data["counts"]["merged"] > 0 and len(data["inputs"]) == 4


def test_merge_writes_the_output_and_prints_its_path(tmp_path, family, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    out = tmp_path / "out"
    assert main(["merge", str(recipe), "-o", str(out), "--quiet", "--dtype", "float16", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)  # the result on stdout, nothing else when quiet
    assert captured.err == ""
    tensors = load_file(out / "model.safetensors")
    assert tensors["resnet.embedder.embedder.convolution.weight"].dtype == torch.float16


def test_typed_errors_are_one_line_and_exit_1(tmp_path, family, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    out = tmp_path / "out"
    out.mkdir()
    (out / "hubmerge_recipe.yaml").write_text("x")  # an earlier output
    assert main(["merge", str(recipe), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "OutputExistsError" in err and "--overwrite" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: simple_average\nmodels: [\n")
    assert main(["plan", str(bad)]) == 1
    assert "RecipeError" in capsys.readouterr().err


def test_refusals_come_before_any_header_is_read(tmp_path, family, capsys, monkeypatch):
    """An existing output or a CUDA device that is not there is refused at once: no plan, no bar, no Hub."""

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr("hubmerge.engine.plan", no_work)
    monkeypatch.setattr("hubmerge.publish.publish", no_work)
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    out = tmp_path / "out"
    out.mkdir()
    (out / "hubmerge_recipe.yaml").write_text("x")  # an earlier output
    assert main(["merge", str(recipe), "-o", str(out)]) == 1
    assert capsys.readouterr().err.startswith("error: OutputExistsError")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x").write_text("x")  # no output: not replaced, --overwrite or not
    assert main(["merge", str(recipe), "-o", str(tmp_path / "mine"), "--overwrite"]) == 1
    assert capsys.readouterr().err.startswith("error: OutputNotOursError")
    assert main(["merge", str(recipe), "-o", str(tmp_path), "--overwrite"]) == 1  # the recipe's folder
    assert capsys.readouterr().err.startswith("error: OutputHoldsInputError")
    assert main(["merge", str(recipe), "-o", str(family.base), "--overwrite"]) == 1  # an input
    assert capsys.readouterr().err.startswith("error: OutputHoldsInputError")
    for command in (["merge", str(recipe), "-o", str(tmp_path / "new")], ["push", str(recipe), "--repo-id", "a/b"]):
        assert main([*command, "--device", "cuda:99"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: RecipeError: 'device'") and "cuda" in err.lower(), err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "error, shown",
    [
        (OSError(28, "No space left on device", "/data/out/model.safetensors"),
         "error: No space left on device: /data/out/model.safetensors"),
        (PermissionError(13, "Permission denied", "/data/out"), "error: Permission denied: /data/out"),
        (OSError(104, "Connection reset by peer"), "unexpected error: ConnectionResetError"),  # a bug of ours
    ],
)
def test_the_machines_refusals_are_said_plainly(tmp_path, family, capsys, monkeypatch, error, shown):
    def refused(*args, **kwargs):
        raise error

    monkeypatch.setattr("hubmerge.engine.execute", refused)
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    assert main(["merge", str(recipe), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(shown) and ("please report it" in err) == shown.startswith("unexpected")


def test_a_busy_port_is_said_before_anything_announces_it(tmp_path, capsys, caplog):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in (["hub", "serve", "--root", str(tmp_path / "hub")], ["app"]):
            assert main([*command, "--port", port]) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"error: PortInUseError: cannot listen on 127.0.0.1:{port}: it is already in use")
    assert "local hub on" not in caplog.text and not (tmp_path / "hub").exists()
    # an address this machine does not have (TEST-NET-1; a host name that does not resolve fails the same
    # way): it was an unexpected OSError
    for command in (["hub", "serve", "--root", str(tmp_path / "hub")], ["app"]):
        assert main([*command, "--host", "192.0.2.1", "--port", "0"]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error: ListenError: cannot listen on 192.0.2.1:0:"), err
        assert "choose another --host (e.g. 127.0.0.1) or --port" in err
    assert not (tmp_path / "hub").exists()


def test_a_server_listens_on_the_ipv6_loopback_too():
    """``--host ::1`` is one of LOOPBACK_HOSTS: it gets an IPv6 socket, not "Address family not supported"."""
    import socket

    from hubmerge.ports import bind_port

    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with bind_port("::1", 0) as sock:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[0] == "::1"


def test_a_hub_token_without_its_user_or_secret_is_refused(capsys, tmp_path, monkeypatch):
    """`--token :bob` let anyone write as bob with an empty token; `--token secret:` wrote as no one."""
    served = []
    monkeypatch.setattr("hubmerge.hub.localhub.serve", lambda *a, **k: served.append(k))
    for pair in (":bob", "secret:", "no-colon"):
        assert main(["hub", "serve", "--root", str(tmp_path / "hub"), "--token", pair]) == 2
        assert "write --token TOKEN:USER" in capsys.readouterr().err
    assert served == []
    assert main(["hub", "serve", "--root", str(tmp_path / "hub"), "--token", "a:b:alice"]) == 0
    assert served[0]["tokens"] == {"a:b": "alice"}


def test_hub_serve_takes_lfs_uploads_only_when_asked(tmp_path, monkeypatch):
    """--lfs answers preupload as huggingface.co does (datasets' push_to_hub needs it); without it every
    upload is regular, which clients with Xet on (their default) can make."""
    from hubmerge.hub.localhub.storage import LFS_MIN_SIZE

    served = []
    monkeypatch.setattr("hubmerge.hub.localhub.serve", lambda *a, **k: served.append(k))
    assert main(["hub", "serve", "--root", str(tmp_path / "hub")]) == 0
    assert main(["hub", "serve", "--root", str(tmp_path / "hub"), "--lfs"]) == 0
    assert [k["lfs_threshold"] for k in served] == [None, LFS_MIN_SIZE]


def test_hub_serve_with_lfs_tells_clients_to_turn_xet_off(tmp_path, monkeypatch, caplog):
    """Clients with Xet on (their default) ask an LFS server for a Xet token: its 501 was their only error."""
    import uvicorn

    from hubmerge.hub.localhub import serve
    from hubmerge.hub.localhub.storage import LFS_MIN_SIZE

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    with caplog.at_level("WARNING"):
        serve(tmp_path / "regular", port=0)
        assert "HF_HUB_DISABLE_XET" not in caplog.text
        serve(tmp_path / "lfs", port=0, lfs_threshold=LFS_MIN_SIZE)
    assert "set HF_HUB_DISABLE_XET=1 for clients" in caplog.text


def test_usage_errors_exit_2(capsys, tmp_path):
    assert main(["merge"]) == 2
    assert main(["no-such-command"]) == 2
    capsys.readouterr()
    recipe = tmp_path / "never-read.yaml"  # a bad size is refused before the recipe is even opened
    for command in (["merge", str(recipe)], ["push", str(recipe), "--repo-id", "alice/x"]):
        assert main([*command, "--max-shard-size", "lots"]) == 2
        assert "cannot read size 'lots'" in capsys.readouterr().err
    assert main(["plan", str(recipe), "--endpoint", "127.0.0.1:8080"]) == 2  # no scheme: refused before the Hub
    assert "is no Hub URL" in capsys.readouterr().err
    assert main(["plan", str(recipe), "--preset", "convnext-base-224-8tasks"]) == 2  # not the preset in silence
    assert "give a recipe file or --preset, not both" in capsys.readouterr().err
    for command in (["app", "--port", "99999"], ["hub", "serve", "--port", "-1"]):  # were unexpected errors
        assert main(command) == 2
        assert "--port" in capsys.readouterr().err
    in_the_way = tmp_path / "a-file"  # a folder to work in that is a file: it was an unexpected OSError
    in_the_way.touch()
    for command in (["demo", "--workdir", str(in_the_way)], ["hub", "serve", "--root", str(in_the_way)]):
        assert main(command) == 2
        assert "is a file, not a folder" in capsys.readouterr().err


def test_messages_print_emoji_codes_as_written(tmp_path, capsys):
    """rich turned the ':a:' of a dataset spelled 'org/data:a:b:c' into an emoji in the error that quoted it."""
    assert main(["evaluate", str(tmp_path), "--task", "x=org/data:a:b:c"]) == 1
    err = "".join(capsys.readouterr().err.split())
    assert "got'x=org/data:a:b:c'" in err


def test_an_error_printed_to_a_file_is_one_line(tmp_path, capsys):
    """Written to a pipe or a log, rich folded an error at 80 columns, splitting its path for grep."""
    missing = tmp_path / ("a-folder-with-a-name-long-enough-to-pass-eighty-columns-" * 2) / "recipe.yaml"
    assert main(["plan", str(missing)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: ") and str(missing) in lines[0], lines
    assert lines[1:] == ["(set HUBMERGE_DEBUG=1 for the traceback)"]


def test_a_merged_output_named_where_a_recipe_goes_points_to_its_recipe(tmp_path, family, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    out = tmp_path / "out"
    assert main(["merge", str(recipe), "-o", str(out), "--quiet"]) == 0
    assert main(["plan", str(out)]) == 1  # it said "cannot be read: [Errno 21] Is a directory"
    err = "".join(capsys.readouterr().err.split())  # rich folds long paths anywhere
    assert f"isadirectory,notarecipefile;therecipethismergedoutputwasmadefromis{out}/hubmerge_recipe.yaml" in err
    assert main(["card", str(out), "--repo-id", "not a repo id"]) == 2  # the card's samples would name it
    assert "is not a valid repo id" in capsys.readouterr().err and not (out / "README.md").exists()


def test_shape_mismatch_message_keeps_its_brackets(tmp_path, family, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average", extra={"target_modules": ["resnet", "classifier"]})
    assert main(["plan", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "ShapeMismatchError" in err and "classifier.1.weight" in err
    assert "target_modules: [resnet]" in err.replace("\n", "")  # rich markup did not eat the brackets


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBMERGE_DEBUG", "1")
    with pytest.raises(Exception, match="does not exist"):
        main(["plan", str(tmp_path / "missing.yaml")])


def test_console_script_starts_fast_and_lazily():
    code = "import sys, hubmerge.cli; print('torch' in sys.modules, 'transformers' in sys.modules, 'gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False False"
    help_text = subprocess.run([sys.executable, "-m", "hubmerge.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("plan", "merge", "evaluate", "push", "card", "methods", "demo", "hub"):
        assert command in help_text.stdout


def test_help_wraps_each_paragraph_to_the_terminal():
    """A docstring's source line breaks are not the help's: `push --help` at 80 columns must not break a
    sentence where the source did, leaving a short line in the middle of a paragraph."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    for command in (["push"], ["demo"]):
        out = subprocess.run([sys.executable, "-m", "hubmerge.cli", *command, "--help"], capture_output=True,
                             text=True, env=env, check=True).stdout
        description = out.split("Usage:", 1)[1].split("╭", 1)[0].split("\n")[2:]
        paragraphs = "\n".join(line.strip() for line in description).strip().split("\n\n")
        for paragraph in paragraphs:
            lines = paragraph.split("\n")
            assert all(len(line) > 60 for line in lines[:-1]), paragraph


def test_executable_flushes_output_runs_atexit_and_keeps_exit_codes(tmp_path, family):
    """``run`` skips the interpreter's teardown (os._exit), so check what a normal exit would give."""
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    out, marker = tmp_path / "out", tmp_path / "atexit-ran"
    code = (
        "import atexit, gc, pathlib, sys; from hubmerge.cli import run; "
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text(repr(gc.get_threshold()))); "
        "sys.argv = ['hubmerge', *sys.argv[1:]]; run()"
    )
    merge = [sys.executable, "-c", code, "merge", str(recipe), "-o", str(out), "--quiet", "--device", "cpu"]
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe: block-buffered stdout
    done = subprocess.run(merge, capture_output=True, text=True, env=buffered, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)  # buffered stdout reached the pipe
    assert marker.read_text() == repr(GC_THRESHOLD)  # the command ran at the executable's collector pace
    assert (out / "model.safetensors").is_file()
    again = subprocess.run(merge, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "OutputExistsError" in again.stderr


@pytest.mark.parametrize("command", [["hub", "serve"], ["app"]])
def test_serving_commands_collect_at_the_interpreters_pace(tmp_path, monkeypatch, command):
    """The executable's slow collector pace is for commands that end: ``hub serve`` kept each dropped
    download's 4 MiB read in a reference cycle until a collection a hundred-odd requests later (680 MB after
    150)."""
    import gc

    from hubmerge.cli import SERVING_GC_THRESHOLD

    paces = []
    serving = lambda *args, **kwargs: paces.append(gc.get_threshold())  # noqa: E731
    monkeypatch.setattr("hubmerge.hub.localhub.serve", serving)
    monkeypatch.setattr("hubmerge.ui.launch_app", serving, raising=False)  # not hubmerge.ui's lazy Gradio
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)  # as ``run`` starts every command
    try:
        assert main([*command, "--root", str(tmp_path)] if command[0] == "hub" else command) == 0
    finally:
        gc.set_threshold(*before)
    assert paces == [SERVING_GC_THRESHOLD] and SERVING_GC_THRESHOLD != GC_THRESHOLD


def test_ctrl_c_stops_a_server_without_claiming_work_was_cut_short(tmp_path, monkeypatch, capsys):
    """Ctrl+C is how ``hub serve`` ends: it said "interrupted: ... nothing partial was left", as for a merge."""
    import gc

    def serve(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("hubmerge.hub.localhub.serve", serve)
    before = gc.get_threshold()
    try:
        assert main(["hub", "serve", "--root", str(tmp_path / "hub")]) == 130
    finally:
        gc.set_threshold(*before)
    err = capsys.readouterr().err
    assert "stopped" in err and "interrupted" not in err
    monkeypatch.setattr("hubmerge.method_help.print_methods", serve)  # a command that works, then Ctrl+C
    assert main(["methods"]) == 130 and "nothing partial was left" in capsys.readouterr().err


def test_ctrl_c_that_lands_in_a_finalizer_still_stops_the_command():
    """Python swallows an exception raised in a ``__del__`` (it prints "Exception ignored in" and goes on), so a
    Ctrl+C that arrived while one ran was lost: a push went on to publish, a traceback in its output."""
    code = """
import sys, time
from hubmerge import cli, method_help

class Finalized:
    def __del__(self):
        raise KeyboardInterrupt  # as Ctrl+C's handler does, wherever the signal lands

def work(*args, **kwargs):
    Finalized()
    for _ in range(1000):  # the rest of the command's work: 10 s
        time.sleep(0.01)
    print("went on")

method_help.print_methods = work
sys.argv = ["hubmerge", "methods"]
cli.run()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 130, done.stderr
    assert "went on" not in done.stdout
    assert "interrupted" in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_executable_with_stdout_or_stderr_closed_exits_0():
    """A cron line or a script may start it with a descriptor closed (`>&-`); Python then has no sys.stdout.
    The command's work succeeded, so its exit code is 0 and nothing reads as a crash."""
    for closed in (1, 2):
        done = subprocess.run([sys.executable, "-m", "hubmerge.cli", "--version"], capture_output=True,
                              text=True, check=False, preexec_fn=lambda fd=closed: os.close(fd))
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_executable_prints_what_stdouts_encoding_lacks_escaped():
    """PYTHONIOENCODING=ascii (a Docker image's) or cp1252 (a Windows redirect) cannot encode task arithmetic's
    lambda and sigma: the result is printed with them escaped, as on stderr, not lost to a UnicodeEncodeError."""
    for encoding in ("ascii", "cp1252"):
        env = {**os.environ, "PYTHONIOENCODING": encoding}
        for args in (["methods"], ["methods", "task_arithmetic"]):
            done = subprocess.run([sys.executable, "-m", "hubmerge.cli", *args], capture_output=True, env=env,
                                  check=False)
            assert done.returncode == 0, done.stderr.decode(encoding, "replace")
            assert b"\\u03bb" in done.stdout and b"task_arithmetic" in done.stdout


def _main_in_fresh_interpreter(modules: tuple[str, ...], *args: str) -> tuple[str, list[str]]:
    """``main(args)`` in a new interpreter (exit code 0 asserted): its stdout, and which of ``modules`` it imported."""
    code = (
        "import sys; from hubmerge.cli import main; "
        f"assert main({list(args)!r}) == 0; "
        f"print(','.join(m for m in {modules!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    last = done.stderr.splitlines()[-1] if done.stderr.strip() else ""
    return done.stdout, [m for m in last.split(",") if m]


def test_version_names_hubmerge_and_its_libraries_without_importing_them():
    import gradio
    import huggingface_hub
    import safetensors
    import transformers

    import hubmerge

    out, imported = _main_in_fresh_interpreter(("torch", "transformers", "gradio"), "--version")
    first, second = out.splitlines()
    assert first == f"hubmerge {hubmerge.__version__}"
    assert second.startswith(f"Python {sys.version.split()[0]}, ")
    for module in (torch, transformers, safetensors, huggingface_hub, gradio):
        assert f"{module.__name__} {module.__version__.split('+')[0]}" in second  # metadata: no local build tag
    assert imported == []  # read from package metadata: the answer is instant


def test_local_merge_never_imports_the_hub_client(tmp_path, family):
    recipe = write_recipe(tmp_path / "r.yaml", family, "simple_average")
    merge = ("merge", str(recipe), "-o", str(tmp_path / "out"), "--quiet")
    _, imported = _main_in_fresh_interpreter(("huggingface_hub",), *merge)
    assert imported == []


def test_planning_never_imports_torch(tmp_path, family):
    """``hubmerge plan`` reads headers and checks the recipe against the method's schema: no torch (1-2 s),
    nor numpy (the merge's buffer pool, 0.1 s)."""
    recipe = write_recipe(tmp_path / "r.yaml", family, "ties")
    out, imported = _main_in_fresh_interpreter(("torch", "numpy"), "plan", str(recipe), "--json")
    assert imported == []
    assert json.loads(out)["method"] == "ties"


def test_the_plan_says_which_heads_no_task_keeps(tmp_path, family):
    """Inputs listed without a task keep no head of their own: the plan says so instead of dropping them quietly."""
    from hubmerge import engine
    from hubmerge.plan_summary import summary_rows
    from hubmerge.recipe import load_recipe

    def rows(recipe_path):
        merge_plan = engine.plan(load_recipe(recipe_path))
        try:
            return dict(summary_rows(merge_plan))
        finally:
            engine.close_plan(merge_plan)

    untasked = rows(write_recipe(tmp_path / "r.yaml", family, "task_arithmetic",
                                 extra={"models": [str(path) for path in family.models.values()]}))
    assert untasked["head: model0"] == "root only (the default input): no task named; a 'task:' keeps it in heads/"
    assert untasked["head: model1"].startswith("dropped: no task named") and "head: base" not in untasked
    named = rows(write_recipe(tmp_path / "named.yaml", family, "task_arithmetic"))
    assert not any("no task named" in value for value in named.values())
    assert "base model" not in named  # task arithmetic merges it
    # SLERP and the averages take no base: one listed was shown as an input and otherwise said nothing
    two = {"models": [{"model": str(path), "task": task} for task, path in list(family.models.items())[:2]]}
    slerp = rows(write_recipe(tmp_path / "slerp.yaml", family, "slerp", extra=two))
    assert slerp["base model"] == "not merged by slerp: the output takes only its processor files and integer buffers"


def test_the_plan_names_cache_snapshots_by_repo_and_commit(tmp_path, family):
    """Inputs named by the paths `snapshot_download()` returns filled the plan's model column with 100-character
    cache paths and its revision column with "local": the card named them by repo and commit, the plan did not."""
    from hubmerge import engine
    from hubmerge.plan_summary import input_rows
    from hubmerge.recipe import load_recipe

    from ._models import cache_snapshot

    commit = "89abcdef" * 5
    local, (task, cached) = family.base, next(iter(family.models.items()))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", family, "task_arithmetic", extra={
        "models": [{"model": str(cache_snapshot(cached, tmp_path / "cache", commit=commit)), "task": task}]}))
    merge_plan = engine.plan(recipe)
    try:
        rows = {row[0]: row[1:3] for row in input_rows(merge_plan)}
    finally:
        engine.close_plan(merge_plan)
    assert rows == {"base": (str(local), "local"), task: (f"org/{cached.name} (local cache)", commit[:12])}
