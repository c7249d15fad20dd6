"""Smoke runs of the brainspade3d benchmarks in their tiny mode (real subprocesses of the main command: slow)."""

import json
import os
import subprocess
import sys

import pytest
from brainspade3d_helpers import ROOT


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args",
    [("end_to_end.py", ["--threads", "1"]), ("sharded_generation.py", ["--num_samples", "2", "--threads", "1"])],
)
def test_benchmark_smoke_mode(tmp_path, script, args):
    out = tmp_path / "res.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--profile", "tiny", "--output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=str(ROOT),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    if script == "end_to_end.py":
        assert r["reference"]["steps"] == 300 and r["default"]["sampler"] == "ddim"
        assert r["reference_over_default"]["pair_s"] > 1 and r["default"]["peak_rss_mb"] > 0
    else:
        assert r["identical_samples"] is True and r["speedup"] > 0


@pytest.mark.parametrize("case, train, ckpt", [(0, True, True), (2, True, True), (3, False, False)])
def test_network_scaling_case_runs_forward_and_training_steps(case, train, ckpt):
    """One case of benchmarks/network_scaling.py in-process on the tiny grid: the row it reports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("network_scaling", ROOT / "benchmarks" / "network_scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.run_case(case, "tiny", 1, False, train, ckpt)
    assert row["shape"] == [32, 32, 32] and row["mode"] == ("train" if train else "forward")
    assert row["checkpointing"] is (ckpt and case in (0, 2)) and row["seconds"] > 0 and row["peak_rss_gb"] > 0
    assert row["device"] in ("cpu", "cuda") and ("peak_gpu_gb" in row) == (row["device"] == "cuda")


@pytest.mark.parametrize("script", ["brainspade3d_training.py", "label_ldm_precision.py", "segmenter_precision.py"])
def test_step_timing_benchmarks_quick_mode(tmp_path, script):
    """The training-step precision benchmarks in --quick mode: every mode timed and a ratio reported."""
    out = tmp_path / "res.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--threads", "1", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    parts = [r, *(v for v in r.values() if isinstance(v, dict))]  # label_ldm reports per network
    speedups = [v for part in parts for k, v in part.items() if k.startswith(("speedup", "train_speedup"))]
    assert r["quick"] is True and speedups and all(v > 0 for v in speedups)


def test_segmenter_precision_measures_only_the_modes_asked(tmp_path):
    """`--modes` (a CPU that emulates bf16 takes minutes a step there): only those are timed; a bad list is refused."""
    out = tmp_path / "res.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "segmenter_precision.py"), "--quick", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [*cmd, "--modes", "fp32,fp32_channels_last", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["modes"] == ["fp32", "fp32_channels_last"] and "bf16" not in r
    assert r["train_speedup_fp32_channels_last"] > 0 and "train_speedup_bf16" not in r
    bad = subprocess.run([*cmd, "--modes", "bf16"], capture_output=True, text=True, timeout=600, cwd=str(ROOT), env=env)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --modes 'bf16'; accepted: fp32 first, then any of fp32, fp32_channels_last, bf16, bf16_channels_last"
    ]
