"""`pip install tui-tuner` works: the wheel and the sdist build cleanly and pass `twine check`,
carry the licence, the URLs and the extras, hold every non-Python file the package reads, and the
wheel installed into a fresh virtual environment runs the demo (issue 12)."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_files() -> list[str]:
    """Every non-Python file under tui_tuner/ that git tracks (the package reads them)."""
    out = subprocess.run(
        ["git", "ls-files", "tui_tuner"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [p for p in out if not p.endswith(".py")]


def test_package_data_covers_every_non_python_file() -> None:
    files = _package_files()
    if not files:
        pytest.skip("not a git checkout")
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["tui_tuner"]
    missing = [
        f
        for f in files
        if not any(fnmatch.fnmatch(f.removeprefix("tui_tuner/"), p) for p in patterns)
    ]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_metadata_has_licence_urls_and_extras() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and (ROOT / "LICENSE").is_file()
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert {"Homepage", "Issues"} <= set(project["urls"])
    extras = project["optional-dependencies"]
    assert {"gp", "botorch", "dev"} <= set(extras)
    assert any(d.startswith("torch") for d in extras["gp"])
    assert any(d.startswith("scipy") for d in extras["gp"])
    assert any(d.startswith("botorch") for d in extras["botorch"])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_wheel_installs_into_a_fresh_venv_and_runs_the_demo(
    tmp_path: Path, guidellm_exe: Path
) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    warnings = [
        line
        for line in (build.stdout + build.stderr).splitlines()
        if "warning" in line.lower() and "byte-compiling is disabled" not in line
    ]
    assert not warnings, "\n".join(warnings)
    wheel = next(dist.glob("*.whl"))
    sdist = next(dist.glob("*.tar.gz"))
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
    assert set(_package_files()) <= names, set(_package_files()) - names
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta
    assert "Project-URL: Homepage" in meta
    for extra in ("gp", "botorch", "dev"):
        assert f"Provides-Extra: {extra}" in meta

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # pip's own cache makes a second run quick; only PyPI (or the configured index) is asked.
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    work = tmp_path / "elsewhere"  # not the repository: nothing can come from the source tree
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    demo = subprocess.run(
        [str(venv / "bin" / "tui-tuner"), "demo", "--headless", "--trials", "2",
         "--guidellm", str(guidellm_exe), "--study-dir", str(work / "study")],
        capture_output=True, text=True, timeout=600, cwd=work, env=env,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "vllm serve" in demo.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tui_tuner; print(tui_tuner.__file__)"],
        capture_output=True, text=True, cwd=work, env=env,
    )  # fmt: skip
    assert str(venv) in where.stdout, where.stdout
