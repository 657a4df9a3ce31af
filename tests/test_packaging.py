"""hubmerge as pip installs it: what pyproject.toml declares builds, and the built package runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

import hubmerge

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
