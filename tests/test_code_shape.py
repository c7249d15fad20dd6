"""Code shape that keeps the bundles readable as one hand's work (issue "Code shape"): modules keep their
private names to themselves, functions stay short enough to read at once, config expressions stay short
(anything longer is a tested Python function or a `_target_` component)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CODE = sorted([*(ROOT / "brainspade").rglob("*.py"), *(ROOT / "bundles").glob("*/scripts/*.py")])
CONFIGS = sorted((ROOT / "bundles").glob("*/configs/*.yaml"))
MAX_FUNCTION_LINES = 60
MAX_EXPRESSION_CHARS = 120


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_no_module_imports_another_modules_private_name():
    found = []
    for p in CODE:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found += [
                    f"{_rel(p)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_functions_fit_on_a_screen():
    found = []
    for p in CODE:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{_rel(p)}:{node.lineno} {node.name} ({n} lines)")
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


def _expressions(node, where: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _expressions(v, f"{where}#{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _expressions(v, f"{where}#{i}")
    elif isinstance(node, str) and node.startswith("$"):
        yield where, node


def test_config_expressions_are_short():
    found = []
    for p in CONFIGS:
        config = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        found += [
            f"{_rel(p)} {where} ({len(e) - 1} chars)"
            for where, e in _expressions(config, "")
            if len(e) - 1 > MAX_EXPRESSION_CHARS and not e.startswith(("$import ", "$from "))
        ]
    assert not found, f"config expressions over {MAX_EXPRESSION_CHARS} characters:\n" + "\n".join(found)
