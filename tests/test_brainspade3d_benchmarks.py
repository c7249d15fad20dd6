"""Smoke runs of the brainspade3d benchmarks in their tiny mode (real subprocesses of the main command: slow)."""

import json
import subprocess
import sys

import pytest

from brainspade3d_helpers import ROOT


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [("end_to_end.py", ["--threads", "1"]),
                                          ("sharded_generation.py", ["--num_samples", "2", "--threads", "1"])])
def test_benchmark_smoke_mode(tmp_path, script, args):
    out = tmp_path / "res.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--profile", "tiny", "--output", str(out),
                          *args], capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    if script == "end_to_end.py":
        assert r["reference"]["steps"] == 300 and r["default"]["sampler"] == "ddim"
        assert r["reference_over_default"]["pair_s"] > 1 and r["default"]["peak_rss_mb"] > 0
    else:
        assert r["identical_samples"] is True and r["speedup"] > 0
