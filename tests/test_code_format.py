"""The code format the Model Zoo's CI enforces (isort, black -l 120 --skip-magic-trailing-comma, flake8 with
bugbear, comprehensions and pep8-naming), over the whole repository; settings in pyproject.toml and .flake8."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["brainspade", "bundles", "tests", "benchmarks", "integrations", "experiments"]


@pytest.mark.parametrize(
    "tool, args",
    [("isort", ["--check-only", "--quiet"]), ("black", ["--check", "--quiet"]), ("flake8", [])],
    ids=["isort", "black", "flake8"],
)
def test_code_format(tool, args):
    res = subprocess.run(
        [sys.executable, "-m", tool, *args, *SOURCES], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    fix = {"isort": "isort .", "black": "black .", "flake8": "fix by hand"}[tool]
    assert res.returncode == 0, f"{tool} findings ({fix}):\n{res.stdout[-4000:]}{res.stderr[-4000:]}"
