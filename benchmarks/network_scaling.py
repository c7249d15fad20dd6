"""Benchmark (e): how time and peak memory grow with volume size, for every network.

Each case runs in its own process (clean peak RSS): the network is built from its bundle's own
config with `profile` overridden (default -> paper grid), then one no-grad forward is timed, or with
`--train` one forward + backward (the training step's memory), optionally with `--checkpoint`
(gradient checkpointing where the network has it). On a CUDA machine the case runs on the GPU and
also reports torch's peak allocated GPU memory: the figure the paper-profile budget is about.

    python benchmarks/network_scaling.py [--profiles default,paper] [--reps 2] [--train] [--checkpoint]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (bundle, network id, what one forward means)
CASES = (
    ("label_ldm", "autoencoder_def", "decode latent -> 10-channel map (train: encode + decode)"),
    ("label_ldm", "network_def", "one diffusion UNet step (batch 2: guided + unguided)"),
    ("brainspade3d", "network_def", "label map + contrast -> image (train: + style encoder)"),
    ("segmenter", "network_def", "image -> 10-class logits (whole volume)"),
)


def _configs(bundle: str, paper_widths: bool) -> list[str]:
    cfg = ROOT / "bundles" / bundle / "configs"
    files = [cfg / "common.yaml"] if (cfg / "common.yaml").exists() else [cfg / "train.yaml"]
    if paper_widths and (cfg / "paper.yaml").exists():
        files.append(cfg / "paper.yaml")
    return [str(f) for f in files]


def _inputs(bundle: str, net_id: str, parser, shape, train: bool = False):
    """The forward of one case; in training mode the whole training forward (encoder included)."""
    import torch

    if bundle == "label_ldm":
        lat_c = int(parser.get_parsed_content("latent_channels"))
        lat = [s // 4 for s in shape]
        if net_id == "autoencoder_def" and train:
            pv = torch.softmax(torch.randn(1, 10, *shape), 1)
            return lambda net: net(pv)  # (reconstruction, mu, sigma)
        if net_id == "autoencoder_def":
            return lambda net: net.decode(torch.randn(1, lat_c, *lat))
        k = len(parser.get_parsed_content("condition_keys"))
        return lambda net: net(
            torch.randn(2, lat_c, *lat), timesteps=torch.tensor([500, 500]), context=torch.randn(2, 1, k)
        )
    if bundle == "brainspade3d":
        pv = torch.softmax(torch.randn(1, 10, *shape), 1)
        if train:  # style encoder + generator, as in a training step
            image = torch.rand(1, 1, *shape)
            return lambda net: net(pv, torch.tensor([0]), image=image)
        return lambda net: net(pv, torch.tensor([0]))
    return lambda net: net(torch.randn(1, 1, *shape))


# config id of each bundle's gradient-checkpointing switch (networks without one are run as they are)
CHECKPOINT_IDS = {
    "label_ldm": {"autoencoder_def": "ae_use_checkpoint"},
    "brainspade3d": {"network_def": "use_checkpoint"},
}


def _step(fwd, net, train: bool) -> None:
    out = fwd(net)
    if train:
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().square().mean().backward()
        net.zero_grad(set_to_none=True)


def run_case(i: int, profile: str, reps: int, paper_widths: bool, train: bool = False, use_ckpt: bool = False) -> dict:
    import torch
    from monai.bundle import ConfigParser

    torch.set_num_threads(os.cpu_count() or 1)
    bundle, net_id, what = CASES[i]
    parser = ConfigParser()
    parser.read_config(_configs(bundle, paper_widths))
    parser["profile"] = profile
    ckpt_id = CHECKPOINT_IDS.get(bundle, {}).get(net_id)
    if ckpt_id:
        parser[ckpt_id] = bool(use_ckpt)
    from brainspade.profiles import get_profile

    shape = list(get_profile(profile).shape)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    with device:  # inputs are created inside the forward lambdas: on the same device
        net = parser.get_parsed_content(net_id).to(device).train(train)
        fwd = _inputs(bundle, net_id, parser, shape, train)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        with torch.set_grad_enabled(train):
            for _ in range(reps):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                _step(fwd, net, train)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {
        "bundle": bundle,
        "network": net_id,
        "what": what + (" + backward" if train else ""),
        "profile": profile,
        "shape": shape,
        "widths": "paper" if paper_widths else "config default",
        "mode": "train" if train else "forward",
        "checkpointing": bool(use_ckpt and ckpt_id),
        "device": device.type,
        "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
        "seconds": round(min(times), 3),
        "peak_rss_gb": round(peak / 2**20, 2),
        "forward_rss_gb": round((peak - base) / 2**20, 2),
    }
    if cuda:
        row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--profiles", default="default,paper")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--paper_widths", action="store_true", help="also layer each bundle's paper.yaml")
    p.add_argument("--train", action="store_true", help="forward + backward (training memory) instead of no-grad")
    p.add_argument("--checkpoint", action="store_true", help="with gradient checkpointing where the network has it")
    p.add_argument("--networks", default="", help="comma-separated case numbers (default: all)")
    p.add_argument("--case", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--profile", default="default", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case >= 0:
        print(json.dumps(run_case(a.case, a.profile, a.reps, a.paper_widths, a.train, a.checkpoint)))
        return
    rows = []
    cases = [int(c) for c in a.networks.split(",")] if a.networks else range(len(CASES))
    for i in cases:
        for prof in a.profiles.split(","):
            cmd = [sys.executable, __file__, "--case", str(i), "--profile", prof, "--reps", str(a.reps)]
            cmd += ["--paper_widths"] if a.paper_widths else []
            cmd += ["--train"] if a.train else []
            cmd += ["--checkpoint"] if a.checkpoint else []
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                rows.append(
                    {
                        "bundle": CASES[i][0],
                        "network": CASES[i][1],
                        "profile": prof,
                        "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed",
                    }
                )
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    # ratios paper/default per network, measured in this one run
    for bundle, net_id, _ in CASES:
        got = {r["profile"]: r for r in rows if r["bundle"] == bundle and r["network"] == net_id and "seconds" in r}
        if "default" in got and "paper" in got:
            print(
                f"{bundle}/{net_id}: paper/default time x{got['paper']['seconds'] / max(got['default']['seconds'], 1e-9):.1f}, "
                f"forward memory x{got['paper']['forward_rss_gb'] / max(got['default']['forward_rss_gb'], 1e-3):.1f}"
            )
    from brainspade.io import save_json

    name = "network_scaling" + ("_train" if a.train else "") + ("_checkpoint" if a.checkpoint else "")
    save_json(
        Path(__file__).parent / "results" / f"{name}.json", {"benchmark": name, "cases": rows, "machine": _machine()}
    )


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}"


if __name__ == "__main__":
    main()
