"""Segmenter training step and inference of one sliding window (`roi_size`) in fp32, fp32 + channels-last 3D, bf16
autocast, and bf16 + channels-last 3D, measured in one run on the bundle's own network, loss and batch
(configs/train.yaml), through brainspade.precision's AutocastInferer, the path the configs take. Prints and stores
the ratios the `bf16: auto` and `channels_last: auto` defaults rest on.

    python benchmarks/segmenter_precision.py [--threads 2] [--steps 6]
    python benchmarks/segmenter_precision.py --quick     # smoke test: tiny patch, 2 steps
    python benchmarks/segmenter_precision.py --modes fp32,fp32_channels_last   # a CPU that emulates bf16 (AVX2),
        # where each bf16 step takes minutes

Writes benchmarks/results/segmenter_precision.json (or --output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _bundle_run import mean_step_seconds

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUNDLE = ROOT / "bundles" / "segmenter"
MODES = {
    "fp32": (False, False),
    "fp32_channels_last": (False, True),
    "bf16": (True, False),
    "bf16_channels_last": (True, True),
}


def _parts(overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return (
        parser.get_parsed_content("network_def"),
        parser.get_parsed_content("loss"),
        parser.get_parsed_content("patch_size"),
        int(parser.get_parsed_content("num_samples")),
        parser.get_parsed_content("roi_size"),
    )


def measure(steps: int, overrides: dict, modes: tuple[str, ...] = tuple(MODES)) -> dict:
    import torch
    from monai.inferers import SimpleInferer

    from brainspade.precision import AutocastInferer, bf16_pays, to_channels_last

    net_def, loss_fn, patch, batch, roi = _parts(overrides)
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, net_def.out_channels, (batch, 1, *patch))
    volume = torch.randn(1, 1, *roi)
    out: dict = {"batch": batch, "patch": list(patch), "volume": list(roi), "bf16_native": bf16_pays("cpu")}
    state = {k: v.clone() for k, v in net_def.state_dict().items()}
    for mode in modes:
        bf16, channels_last = MODES[mode]
        net = to_channels_last(type(net_def)(**_kwargs(net_def)), channels_last)
        net.load_state_dict(state)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        inferer = AutocastInferer(SimpleInferer(), enabled=bf16, channels_last=channels_last)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(inferer(x, net), y).backward()
            opt.step()

        def infer() -> None:
            with torch.no_grad():
                inferer(volume, net)

        out[mode] = {
            "train_step_s": round(mean_step_seconds(step, steps), 4),
            "inference_s": round(mean_step_seconds(infer, max(1, steps // 2)), 4),
        }
    for mode in (m for m in modes if m != "fp32"):
        out[f"train_speedup_{mode}"] = round(out["fp32"]["train_step_s"] / out[mode]["train_step_s"], 2)
        out[f"inference_speedup_{mode}"] = round(out["fp32"]["inference_s"] / out[mode]["inference_s"], 2)
    return out


def _kwargs(net) -> dict:
    """Constructor arguments of MONAI's UNet as built by the config (so each mode gets an identical fresh net)."""
    return {
        "spatial_dims": net.dimensions,
        "in_channels": net.in_channels,
        "out_channels": net.out_channels,
        "channels": list(net.channels),
        "strides": list(net.strides),
        "num_res_units": net.num_res_units,
        "norm": net.norm,
    }


def main(argv: list[str] | None = None) -> dict:
    from monai.bundle import ConfigParser

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bundle_run import machine, step_timing_args, write_result

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, fp32 first: {', '.join(MODES)}")
    m, rest = pre.parse_known_args(argv)
    modes = tuple(x.strip() for x in m.modes.split(",") if x.strip())
    if not modes or modes[0] != "fp32" or not set(modes) <= set(MODES):
        raise SystemExit(f"error: --modes {m.modes!r}; accepted: fp32 first, then any of {', '.join(MODES)}")
    a = step_timing_args(__doc__, 6, "tiny widths and patch, 2 steps (smoke test)", rest)
    overrides = (
        {**ConfigParser.load_config_file(str(BUNDLE / "configs" / "tiny.yaml")), "num_samples": 1} if a.quick else {}
    )
    res = {
        "benchmark": "segmenter_precision",
        "threads": a.threads,
        "quick": bool(a.quick),
        "modes": list(modes),
        **measure(2 if a.quick else a.steps, overrides, modes),
        "machine": machine(),
    }
    write_result("segmenter_precision", "tiny" if a.quick else "default", res, a.output)
    return res


if __name__ == "__main__":
    main()
