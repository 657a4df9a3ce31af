"""hubmerge as pip installs it: what pyproject.toml declares builds, and the built package runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import hubmerge
from hubmerge.hub.space import package_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which the package supports: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_oldest_setuptools_allowed_reads_the_license_expression():
    """`license = "Apache-2.0"` (an SPDX expression, PEP 639) is read by setuptools from 77 on; older ones
    reject the whole pyproject ("project.license must be valid exactly by one definition"), and `>=69`
    let a build without isolation, or a pinned build environment, pick such a one and fail."""
    assert isinstance(PYPROJECT["project"]["license"], str)
    setuptools = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                      if Requirement(r).name == "setuptools")
    assert not setuptools.specifier.contains(Version("76.1.0"))
    assert setuptools.specifier.contains(Version("77.0.3"))


def test_the_package_says_the_version_pip_installs():
    """`hubmerge --version`, the card and the Space's README say __version__; pip and the wheel's name say
    pyproject's version. Two places to bump: one left behind would make bug reports and cards misname it."""
    assert hubmerge.__version__ == PYPROJECT["project"]["version"]


def test_python_dash_m_hubmerge_is_the_executable(tmp_path):
    """`python -m hubmerge` runs the CLI (pip's scripts folder is often not on PATH: `pip install --user`,
    Windows); without a __main__ module Python said "'hubmerge' is a package and cannot be directly
    executed"."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "hubmerge", "--version"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"hubmerge {hubmerge.__version__}\n")
    usage = subprocess.run([sys.executable, "-m", "hubmerge", "plan"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "python -m hubmerge plan" in usage.stderr


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist built from a copy of this source tree, and the wheel built from that sdist alone (as pip
    builds one): {"sdist": names in it, "wheel": names in it}, each relative to its root."""
    pytest.importorskip("setuptools", minversion="77.0.3")  # the backend pyproject names, run here in-tree
    work = tmp_path_factory.mktemp("dists")
    ignored = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "out", "test-*")
    shutil.copytree(ROOT, work / "src", symlinks=True, ignore=ignored)
    backend = "import sys, setuptools.build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"

    def build(kind: str, source: Path) -> Path:
        done = subprocess.run([sys.executable, "-c", backend, kind, str(work)], cwd=source,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return work / done.stdout.split()[-1]

    sdist = build("build_sdist", work / "src")
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.10 before 3.10.12
        tar.extractall(work / "unpacked", **safe)
        top = f"{sdist.name.removesuffix('.tar.gz')}/"
        in_sdist = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
    wheel = build("build_wheel", work / "unpacked" / top)
    with zipfile.ZipFile(wheel) as zipped:
        in_wheel = set(zipped.namelist())
    return {"sdist": in_sdist, "wheel": in_wheel}


def test_the_sdist_holds_the_test_suite_whole(dists):
    """setuptools alone put tests/test_*.py in the sdist but not conftest.py and the helpers they import
    (`from ._ui_helpers import free_port`), so no test of an unpacked sdist could run."""
    tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("*.py")}
    read_by_tests = {"README.md", "pyproject.toml", "app.py", "space/README.md", "space/requirements.txt"}
    assert {"tests/conftest.py", "tests/_models.py"} <= tests
    assert tests | read_by_tests <= dists["sdist"]
    assert not [name for name in dists["sdist"] if name.endswith(".pyc")]


def test_the_wheel_built_from_the_sdist_holds_every_file_the_package_opens(dists):
    """Templates, presets, metric scripts and py.typed are package data: one the wheel lacked would fail
    only once installed (the card, `space deploy`, a preset), never from a checkout."""
    assert set(package_files()) <= dists["wheel"]
    assert {"hubmerge/templates/model_card.md", "hubmerge/metrics/accuracy/accuracy.py",
            "hubmerge/presets/convnext-base-224-8tasks.yaml", "hubmerge/py.typed"} <= dists["wheel"]
    assert not [name for name in dists["wheel"] if name.startswith(("tests/", "space/"))]


def test_the_license_text_goes_with_the_sdist_and_the_wheel(dists):
    """Apache-2.0 asks that every copy come with the license's text; the repository had none, so neither
    the sdist nor the wheel carried it, only the expression in the metadata."""
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "LICENSE" in dists["sdist"]
    assert f"hubmerge-{hubmerge.__version__}.dist-info/licenses/LICENSE" in dists["wheel"]
