"""The layering of DESIGN.md, checked twice: statically (every import statement, including
those inside functions) and at run time (what importing a layer actually loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tui_tuner"

# layer -> packages it must never import (textual is forbidden everywhere but ui/ and cli)
FORBIDDEN = {
    "core": (
        "textual",
        "optuna",
        "aiohttp",
        "psutil",
        "pynvml",
        "subprocess",
        "tui_tuner.engine",
        "tui_tuner.adapters",
        "tui_tuner.sim",
        "tui_tuner.ui",
        "tui_tuner.report",
        "tui_tuner.cli",
    ),
    "engine": ("textual", "tui_tuner.ui", "tui_tuner.cli", "tui_tuner.sim", "subprocess"),
    "adapters": ("textual", "tui_tuner.ui", "tui_tuner.cli", "tui_tuner.engine", "tui_tuner.sim"),
    "report": ("textual", "tui_tuner.ui", "tui_tuner.cli", "tui_tuner.adapters", "subprocess"),
    "sim": (
        "textual",
        "optuna",
        "tui_tuner.engine",
        "tui_tuner.adapters",
        "tui_tuner.ui",
        "tui_tuner.cli",
        "subprocess",
    ),
}


# Adapters implement the engine's ports, so that one engine module is theirs to import.
ALLOWED = {"adapters": ("tui_tuner.engine.ports",)}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            if name in ALLOWED.get(layer, ()):
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "\n".join(bad)


def test_headless_layers_never_load_textual() -> None:
    modules = [
        f"tui_tuner.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for layer in ("core", "engine", "adapters", "sim", "report")
        for p in sorted((PACKAGE / layer).rglob("*.py"))
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import tui_tuner.cli, tui_tuner.headless, tui_tuner.compose\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'optuna'))\n"
        "print(bad)\n"
        "sys.exit(1 if any(m.startswith('textual') for m in bad) else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_is_pure_at_run_time() -> None:
    modules = [f"tui_tuner.core.{p.stem}" for p in sorted((PACKAGE / "core").glob("[!_]*.py"))]
    code = (
        f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        "heavy = {'textual', 'optuna', 'aiohttp', 'psutil', 'pynvml', 'numpy'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
