"""The layering of docs/architecture.md, checked twice: statically (every import statement,
including those inside functions) and at run time (what importing a layer actually loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tui_tuner"

#: The wiring above the layers: only these name both the engine and the adapters.
WIRING = (
    "tui_tuner.cli",
    "tui_tuner.cli_tools",
    "tui_tuner.compose",
    "tui_tuner.headless",
    "tui_tuner.profiling",
    "tui_tuner.study_dir",
)

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
    # The engine sees the world through its ports: it imports core alone (and Optuna).
    "engine": (
        "textual",
        "aiohttp",
        "psutil",
        "pynvml",
        "subprocess",
        "tui_tuner.ui",
        "tui_tuner.sim",
        "tui_tuner.adapters",
        "tui_tuner.report",
        *WIRING,
    ),
    "adapters": ("textual", "tui_tuner.ui", "tui_tuner.engine", "tui_tuner.sim", *WIRING),
    "report": ("textual", "tui_tuner.ui", "tui_tuner.adapters", "subprocess", *WIRING),
    # The UI sees the study through events and the orchestrator's commands, never an adapter.
    "ui": (
        "aiohttp",
        "psutil",
        "pynvml",
        "subprocess",
        "tui_tuner.adapters",
        "tui_tuner.sim",
        "tui_tuner.cli",
        "tui_tuner.compose",
        "tui_tuner.headless",
    ),
    # Other tools' files read into a configuration: pure but for reading them.
    "importers": (
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
        *WIRING,
    ),
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


# Adapters implement the engine's ports, so that one engine module is theirs to import. The
# TUI's entry point (ui/run.py) is the TUI's part of the wiring: it runs the study through the
# assembly, as headless.py does.
ALLOWED = {
    "adapters": ("tui_tuner.engine.ports",),
    "ui/run.py": ("tui_tuner.compose",),
}
#: A module of the package grows past this many lines only by holding two concepts.
MAX_LINES = 450


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
            where = path.relative_to(PACKAGE).as_posix()
            if name in ALLOWED.get(layer, ()) or name in ALLOWED.get(where, ()):
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "\n".join(bad)


def test_headless_layers_never_load_textual() -> None:
    modules = [
        f"tui_tuner.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for layer in ("core", "engine", "adapters", "sim", "report", "importers")
        for p in sorted((PACKAGE / layer).rglob("*.py"))
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "import tui_tuner.cli, tui_tuner.headless, tui_tuner.compose, tui_tuner.study_dir\n"
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


def _package_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import statement, deferred ones too)."""
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]  # `from pkg.mod import name`
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_circles() -> None:
    graph = _package_graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_no_module_holds_two_concepts_by_its_size() -> None:
    big = [
        f"{p.relative_to(PACKAGE.parent)}: {n} lines"
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not big, "\n".join(big)
