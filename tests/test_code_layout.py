"""House rules that a reader of the code relies on, checked on the source (no import of the modules):

* no function in the package is longer than 80 lines (docstring included): each can be read at once;
* no module of the package imports a private name (``_x``) from another module: shared helpers are public
  names, in private modules where they are internal (``uncertainty/_numerics.py``, ``losses/_rowwise.py``);
* nothing walks Python stack frames (the plugin talks to fairseq through its public APIs only);
* no file of the repository points outside it (the repository stands on its own).
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "proxy_end2"
MAX_FUNCTION_LINES = 80
SOURCES = sorted(PACKAGE.rglob("*.py"))
OUTSIDE = ["../" + "shared", "shared/" + "docs", "shared/" + "seeds"]  # the material next to the repository


def _functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_package_has_sources():
    assert len(SOURCES) > 25


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in _functions(tree) if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_is_imported_from_another_module(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    private = [f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"
               for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not private, private


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_stack_frame_inspection(path):
    text = path.read_text()
    for needle in ("currentframe", "_getframe", "f_back", "f_locals", "inspect.stack"):
        assert needle not in text, f"{path.name} uses {needle}"


def test_no_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    offenders = []
    for name in files.stdout.splitlines():
        path = REPO_ROOT / name
        if path.suffix not in {".py", ".md", ".sh", ".txt", ".cfg", ".ini", ".toml", ".json"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(needle in text for needle in OUTSIDE):
            offenders.append(name)
    assert not offenders, offenders
