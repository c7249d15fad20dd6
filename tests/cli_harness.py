"""Run project commands as a user would (subprocess) and check how they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the fields the MONAI Bundle specification requires in every configs/metadata.json (the Zoo CI's schema, offline)
SPEC_FIELDS = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "data_source",
    "data_type",
    "intended_use",
    "references",
    "network_data_format",
)


def run_cmd(
    args: list[str], cwd: Path | str = ROOT, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python <args>`; `env` adds or replaces environment variables (e.g. OMP_NUM_THREADS=1)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def monai_run_args(files: list[str], **overrides) -> list[str]:
    """`-m monai.bundle run` arguments: the config files layered in order, then `--id value` overrides."""
    cfg = str(files[0]) if len(files) == 1 else repr([str(f) for f in files])
    args = ["-m", "monai.bundle", "run", "--config_file", cfg]
    for k, v in overrides.items():
        args += [f"--{k}", str(v)]
    return args


def bundle_cmd(bundle: str, configs: list[str], **overrides) -> list[str]:
    return monai_run_args([str(ROOT / "bundles" / bundle / "configs" / c) for c in configs], **overrides)


def torchrun_cmd(files: list[str], nproc: int = 2, **overrides) -> list[str]:
    """`python` arguments of `monai.bundle run` under torchrun: `nproc` processes on this machine."""
    dist = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
    return [*dist, *monai_run_args(files, **overrides)]


def files_under(path: Path | str) -> list[str]:
    p = Path(path)
    return sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file()) if p.exists() else []


def assert_clean_failure(
    res: subprocess.CompletedProcess, pattern: str, out_dir: Path | str | None = None, before: list[str] | None = None
) -> str:
    """Non-zero exit, one `error:` line naming the problem, no traceback, nothing (new) written."""
    import re

    err = res.stderr.strip()
    assert res.returncode != 0, f"expected failure, got rc 0\n{res.stdout[-2000:]}"
    assert "Traceback" not in err, f"traceback instead of a clear error:\n{err[-3000:]}"
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, f"expected one 'error:' line, got:\n{err[-3000:]}"
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"
    if out_dir is not None:
        assert files_under(out_dir) == (before or []), f"partial output left in {out_dir}: {files_under(out_dir)}"
    return lines[0]
