"""Benchmark (a): label map sampling time per sample, the default few-step sampler (DDIM + classifier-free
guidance) vs the reference settings (PNDM 300 steps, DDPM 1000 steps) on the same weights, with conditioning
accuracy beside each, measured in one run on one machine and printed as ratios.

    python benchmarks/label_sampling.py                          # default profile, shipped weights (lead)
    python benchmarks/label_sampling.py --bundle /path/label_ldm  # the weights (and configs) of another copy
    python benchmarks/label_sampling.py --profile tiny            # smoke mode: tiny untrained weights, seconds

Every sampler gets the same conditioning requests (drawn from the weights' own training table, fixed seed) and
the same noise seeds. Verification retries are off (`--max_retries 0`) so each sampler is timed and scored on
single attempts of the network alone (no volume matching); one extra row `ddim+verify+match` runs the user-facing
default, verification with bounded retries and then volume matching: its plain figures are what users get, its
`*_sampled` figures the network's own volumes in the same (verified) samples, before matching. The reference rows use
`--reference_guidance` (default 1: the reference samplers had no classifier-free guidance).
Writes benchmarks/results/label_sampling.json (label_sampling_tiny.json in smoke mode).
Targets: default <= 10 s and <= 2.5 GB per label map; >= 15x faster than pndm300 with accuracy no worse.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "label_ldm"
SAMPLERS = ("ddim", "pndm300", "ddpm1000")


def _machine() -> str:
    import platform

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )


def _tiny_setup(work: Path) -> dict:
    """Tiny phantoms + untrained tiny weights (same code paths as the shipped model, seconds); configs/tiny.yaml
    gives the widths."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bundle_run import untrained_weights

    from brainspade.phantom import generate_dataset

    datalist = generate_dataset(
        work / "phantoms", num_subjects=4, profile="tiny", seed=0, split=(1.0, 0.0, 0.0), workers=1
    )
    (work / "weights").mkdir(parents=True, exist_ok=True)
    ae, dm = str(work / "weights" / "autoencoder.pt"), str(work / "weights" / "diffusion.pt")
    untrained_weights("label_ldm", datalist=str(datalist), autoencoder_path=ae, diffusion_path=dm)
    return {"autoencoder_path": ae, "diffusion_path": dm}


def _sampler(bundle: Path, profile: str, overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    overlays = [str(BUNDLE / "configs" / "tiny.yaml")] if profile == "tiny" else []
    parser.read_config([str(bundle / "configs" / "inference.yaml"), *overlays])
    parser.update({"bundle_root": str(bundle), "profile": profile, **overrides})
    sampler = parser.get_parsed_content("sampler")
    sampler.load()  # clear `error:` on missing/damaged weights before any timing
    return sampler


def _requests(space, n: int, seed: int) -> list[dict]:
    """n conditioning requests from the training table of the weights (omitted = none: every value explicit)."""
    from brainspade.labels import CONDITION_KEYS

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        vols, _ = space.draw(dict.fromkeys(CONDITION_KEYS), rng)
        out.append({k: round(float(v), 3) for k, v in zip(CONDITION_KEYS, vols, strict=True)})
    return out


def _accuracy(samples: list[dict]) -> dict:
    """Per-lesion conditioning metrics (scripts.evaluate) flattened for the results table, plus their summary."""
    import importlib

    # the bundle's scripts package was imported (as label_ldm_scripts) when its config was parsed
    metrics = importlib.import_module("label_ldm_scripts.evaluate").conditioning_metrics(samples)
    flat: dict = {}
    for k, m in metrics.items():
        for name in (
            "spearman",
            "median_rel_error",
            "presence_rate",
            "false_lesion_rate_raw",
            "spearman_sampled",
            "median_rel_error_sampled",
        ):
            if name in m:
                flat[f"{k.removesuffix('_ml')}_{name}"] = m[name]
    rhos = [m["spearman"] for m in metrics.values() if m["spearman"] is not None]
    pres = [m["presence_rate"] for m in metrics.values() if m["presence_rate"] is not None]
    flat["min_spearman"] = min(rhos) if rhos else None
    flat["min_presence_rate"] = min(pres) if pres else None
    return flat


def _run(
    sampler, name: str, steps: int | None, guidance: float, requests: list[dict], seed: int, max_retries: int
) -> tuple[dict, list[dict]]:
    """Single attempts (max_retries 0) score the network and sampler alone (no volume matching); with retries the
    row is the default (verification, then volume matching), reporting the figures before matching as `*_sampled`."""
    samples, t0 = [], time.perf_counter()
    for i, req in enumerate(requests):
        samples.extend(
            sampler(
                num_samples=1,
                seed=seed + i,
                sampling=name,
                steps=steps,
                guidance_scale=guidance,
                max_retries=max_retries,
                match_volumes=max_retries > 0,
                **req,
            )
        )
    wall = time.perf_counter() - t0
    row = {
        "sampler": name + ("+verify+match" if max_retries else ""),
        "steps": samples[0]["steps"],
        "guidance_scale": guidance,
        "max_retries": max_retries,
        "match_volumes": max_retries > 0,
        "samples": len(samples),
        "s_per_sample": round(wall / len(samples), 3),
        "mean_retries": round(float(np.mean([s["retries"] for s in samples])), 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    row.update(_accuracy(samples))
    return row, samples


def _steps(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (text or "").split(",")):
        key, _, val = part.partition("=")
        if key not in SAMPLERS or not val.isdigit() or int(val) < 1:
            sys.exit(
                f"error: --steps {text!r} is not accepted; accepted: e.g. ddim=20,pndm300=300 "
                f"(samplers {', '.join(SAMPLERS)}, positive integers)"
            )
        out[key] = int(val)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--profile",
        default="default",
        choices=("default", "paper", "tiny"),
        help="default/paper: weights of --bundle; tiny: smoke test with tiny untrained weights",
    )
    p.add_argument("--bundle", default=str(BUNDLE), help="label_ldm bundle folder whose configs and models/ to use")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--steps", default=None, help="per-sampler steps, e.g. ddim=10 (default: each setting's own)")
    p.add_argument("--num_samples", type=int, default=None, help="requests per sampler (default 8; tiny 2)")
    p.add_argument(
        "--reference_num_samples",
        type=int,
        default=None,
        help="requests of the pndm300/ddpm1000 rows (the first K of the same requests; default: all): on a "
        "CPU a reference map takes minutes, and the comparison uses ddim's first K as well",
    )
    p.add_argument("--guidance_scale", type=float, default=3.0, help="classifier-free guidance of the default ddim")
    p.add_argument("--reference_guidance", type=float, default=1.0, help="guidance of pndm300/ddpm1000 rows")
    p.add_argument(
        "--verify_retries", type=int, default=3, help="retries of the ddim+verify+match row (0: no such row)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--output", default=None)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    names = [s.strip() for s in a.samplers.split(",") if s.strip()]
    if not names or any(n not in SAMPLERS for n in names):
        sys.exit(f"error: --samplers {a.samplers!r} is not accepted; accepted: a comma list of {', '.join(SAMPLERS)}")
    steps = _steps(a.steps)
    n = a.num_samples or (2 if a.profile == "tiny" else 8)
    with tempfile.TemporaryDirectory(prefix="label_sampling_") as tmp:
        bundle = Path(a.bundle).resolve()
        if not (bundle / "configs" / "inference.yaml").is_file():
            sys.exit(
                f"error: --bundle {a.bundle!r} has no configs/inference.yaml; accepted: a label_ldm bundle folder "
                "(with its weights in models/)"
            )
        overrides = _tiny_setup(Path(tmp)) if a.profile == "tiny" else {}
        if a.profile == "tiny":
            bundle = BUNDLE
        overrides["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        from brainspade.cli import run_guarded

        sampler = run_guarded(_sampler, bundle, a.profile, overrides)
        requests = _requests(sampler.space, n, a.seed)
        rows, by_name = [], {}
        k = min(a.reference_num_samples or n, n)
        for name in names:
            guidance = a.guidance_scale if name == "ddim" else a.reference_guidance
            row, by_name[name] = _run(
                sampler, name, steps.get(name), guidance, requests if name == "ddim" else requests[:k], a.seed, 0
            )
            rows.append(row)
            print(
                {k: v for k, v in rows[-1].items() if not k.startswith(("wmh_", "tumour_", "oedema_", "enhancing_"))},
                flush=True,
            )
        if "ddim" in names and a.verify_retries > 0:
            rows.append(
                _run(sampler, "ddim", steps.get("ddim"), a.guidance_scale, requests, a.seed, a.verify_retries)[0]
            )
            print(
                {k: v for k, v in rows[-1].items() if not k.startswith(("wmh_", "tumour_", "oedema_", "enhancing_"))},
                flush=True,
            )
    base = next((r for r in rows if r["sampler"] == "ddim"), None)
    ratios = {}
    if base:
        # accuracy on the same requests as the reference rows (ddim's first k)
        same = base if k == n else {**base, **_accuracy(by_name["ddim"][:k])}
        ratios["ddim_first_k"] = {
            "k": k,
            "min_spearman": same["min_spearman"],
            "min_presence_rate": same["min_presence_rate"],
        }
        for r in rows:
            if r["sampler"] in ("pndm300", "ddpm1000"):
                key = f"{r['sampler']}_over_ddim_time"
                ratios[key] = round(r["s_per_sample"] / max(base["s_per_sample"], 1e-9), 2)
                print(
                    f"{r['sampler']} ({r['steps']} steps) / ddim ({base['steps']} steps): time x{ratios[key]}; on the "
                    f"same {k} requests min Spearman {r['min_spearman']} vs {same['min_spearman']}; "
                    f"min presence {r['min_presence_rate']} vs {same['min_presence_rate']}"
                )
    res = {
        "benchmark": "label_sampling" + ("_tiny" if a.profile == "tiny" else ""),
        "profile": a.profile,
        "bundle": str(Path(a.bundle).resolve()) if a.profile != "tiny" else "tiny untrained weights",
        "requests_per_sampler": n,
        **ratios,
        "cases": rows,
        "targets": {
            "ddim_s_per_sample": 10.0,
            "peak_rss_gb": 2.5,
            "pndm300_over_ddim_time": 15.0,
            "min_spearman": 0.9,
            "min_presence_rate": 0.98,
        },
        "machine": _machine(),
    }
    from brainspade.io import save_json

    out = Path(a.output) if a.output else Path(__file__).parent / "results" / f"{res['benchmark']}.json"
    save_json(out, res)
    print(f"saved {out}")
    return res


if __name__ == "__main__":
    main()
