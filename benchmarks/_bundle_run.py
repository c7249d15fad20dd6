"""Shared by end_to_end.py and sharded_generation.py: the main command as a measured subprocess, and the tiny
weights of both chained bundles for the quick `--profile tiny` smoke mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFERENCE = ROOT / "bundles" / "brainspade3d" / "configs" / "inference.yaml"
TINY_CONFIG = INFERENCE.parent / "tiny.yaml"


def main_command(override_files: list[str], **options) -> list[str]:
    cfg = str(INFERENCE) if not override_files else repr([str(INFERENCE), *override_files])
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", cfg]
    for k, v in options.items():
        args += [f"--{k}", str(v)]
    return args


def measured(args: list[str], env: dict | None = None) -> dict:
    """Run `args` in a fresh child of a fresh wrapper process: wall seconds and that child's peak RSS alone
    (getrusage(RUSAGE_CHILDREN) is a maximum over all waited-for children, so every run gets its own wrapper)."""
    wrapper = (
        "import json,resource,subprocess,sys,time;a=json.loads(sys.argv[1]);t=time.perf_counter();"
        "r=subprocess.run(a,capture_output=True,text=True);dt=time.perf_counter()-t;"
        "print(json.dumps({'rc':r.returncode,'wall_s':dt,'peak_rss_mb':resource.getrusage(resource.RUSAGE_CHILDREN)"
        ".ru_maxrss/1024,'stderr':r.stderr[-2000:],'stdout':r.stdout[-4000:]}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", wrapper, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=str(ROOT),
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise RuntimeError(f"command failed ({out['rc']}): {' '.join(args)}\n{out['stderr']}")
    return out


def concurrent(commands: list[list[str]], env: dict | None = None) -> float:
    """Start all commands at once; wall seconds until the last one ends."""
    t = time.perf_counter()
    procs = [
        subprocess.Popen(
            a,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, **(env or {})},
        )
        for a in commands
    ]
    errs = [p.communicate()[1] for p in procs]
    dt = time.perf_counter() - t
    for p, e in zip(procs, errs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(e[-2000:])
    return dt


def untrained_weights(bundle: str, **ids) -> None:
    """Untrained tiny weights of `bundle` at the paths in `ids` (its configs/tiny.yaml `untrained_weights`)."""
    from monai.bundle import ConfigParser

    configs = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "common.yaml"), str(configs / "tiny.yaml")])
    parser.update({"bundle_root": str(configs.parent), "device": "$torch.device('cpu')", **ids})
    parser.get_parsed_content("untrained_weights")


def tiny_overrides(work: Path) -> dict:
    """Tiny phantoms + untrained tiny weights of label_ldm and brainspade3d (smoke mode: same code paths, seconds);
    the overrides to layer after inference.yaml and TINY_CONFIG."""
    from brainspade.phantom import generate_dataset

    datalist = generate_dataset(
        work / "phantoms", num_subjects=3, profile="tiny", seed=0, split=(1.0, 0.0, 0.0), workers=1
    )
    weights = work / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    ae, dm, gen = (str(weights / n) for n in ("autoencoder.pt", "diffusion.pt", "generator.pt"))
    untrained_weights("label_ldm", datalist=str(datalist), autoencoder_path=ae, diffusion_path=dm)
    untrained_weights("brainspade3d", ckpt_path=gen)
    return {
        "ckpt_path": gen,
        "device": "$torch.device('cpu')",
        "label_ldm_extra": {"autoencoder_path": ae, "diffusion_path": dm, "steps": 2, "max_retries": 0},
    }


def config_files(profile: str) -> list[str]:
    """The overlays to layer after inference.yaml for `profile` (tiny: configs/tiny.yaml)."""
    return [str(TINY_CONFIG)] if profile == "tiny" else []


def overrides_for(profile: str, work: Path) -> dict:
    """{} for the shipped default profile (checks the weights exist); tiny smoke-mode overrides otherwise."""
    if profile == "default":
        missing = [
            p
            for p in (
                ROOT / "bundles" / "brainspade3d" / "models" / "model.pt",
                ROOT / "bundles" / "label_ldm" / "models" / "model.pt",
            )
            if not p.is_file()
        ]
        if missing:
            sys.exit(
                f"error: shipped weights missing ({missing[0]}); accepted: --profile tiny, or train/copy the weights first"
            )
        return {}
    if profile != "tiny":
        sys.exit(f"error: --profile {profile!r} is not accepted; accepted: default, tiny")
    return tiny_overrides(work)


def write_override(obj: dict, path: Path) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def machine() -> str:
    import platform

    import torch

    from brainspade.precision import bf16_pays

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    # the vector unit decides which precision pays (AVX2 emulates bf16; AVX-512 BF16 / AMX run it natively)
    isa = torch.backends.cpu.get_cpu_capability()
    bf16 = "native bf16" if bf16_pays("cpu") else "no native bf16"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {isa} ({bf16}), "
        f"torch threads from OMP_NUM_THREADS={threads}"
    )


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="b3d_bench_")


def write_result(name: str, profile: str, res: dict, output: str | None = None) -> Path:
    """results/<name>.json for the default profile (results/<name>_<profile>.json otherwise), printed too."""
    from brainspade.io import save_json

    out = (
        Path(output)
        if output
        else ROOT / "benchmarks" / "results" / (f"{name}.json" if profile == "default" else f"{name}_{profile}.json")
    )
    save_json(out, res)
    print(json.dumps(res))
    return out


def step_timing_args(doc: str, steps: int, quick_help: str, argv: list[str] | None = None):
    """The options every step-timing benchmark takes (--threads, --steps, --quick, --output), parsed, with torch's
    CPU threads set to --threads."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--output", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    return a


def mean_step_seconds(fn, steps: int) -> float:
    """Mean wall time of `fn()` over `steps` calls, after one warm-up call (kernels chosen, memory pools filled)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps
