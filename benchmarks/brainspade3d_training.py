"""brainspade3d's SPADE-GAN training step (generator + discriminator updates, configs/train.yaml's own networks,
losses and step) on whole volumes in fp32, whole volumes under bf16 autocast, and patches under bf16, measured in
one run. Prints and stores the ratios the `bf16: auto` and `patch_size` defaults rest on.

    python benchmarks/brainspade3d_training.py [--threads 2] [--steps 4]
    python benchmarks/brainspade3d_training.py --quick     # smoke test: tiny profile, 1 step

Writes benchmarks/results/brainspade3d_training.json (or --output).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from _bundle_run import mean_step_seconds

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIGS = ROOT / "bundles" / "brainspade3d" / "configs"
# mode -> train.yaml overrides (patch_size "default": the config's own)
MODES = {
    "fp32_whole": {"bf16": False, "patch_size": None},
    "bf16_whole": {"bf16": True, "patch_size": None},
    "bf16_patch": {"bf16": True},
}


def _step(overrides: dict):
    """(train step, batch, patch size) built by the bundle's configs with `overrides`."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "common.yaml"), str(CONFIGS / "train.yaml")])
    parser.update({"device": "$torch.device('cpu')", **overrides})
    step = parser.get_parsed_content("train_step")
    shape = parser.get_parsed_content("image_shape")
    torch.manual_seed(0)
    pv = torch.softmax(torch.randn(1, parser.get_parsed_content("num_labels"), *shape), 1)
    batch = {"pv": pv, "image": torch.rand(1, 1, *shape), "contrast": torch.tensor([1])}
    return step, batch, parser.get_parsed_content("train_shape")


def measure(steps: int, base: dict) -> dict:
    engine = SimpleNamespace(state=SimpleNamespace(device=__import__("torch").device("cpu"), metrics={}))
    out: dict = {}
    for mode, over in MODES.items():
        step, batch, shape = _step({**base, **over})
        seconds = mean_step_seconds(lambda s=step, b=batch: s(engine, b), steps)
        out[mode] = {"train_shape": list(shape), "step_s": round(seconds, 3)}
    ref = out["fp32_whole"]["step_s"]
    out["speedup_bf16_whole"] = round(ref / out["bf16_whole"]["step_s"], 2)
    out["speedup_bf16_patch"] = round(ref / out["bf16_patch"]["step_s"], 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    from monai.bundle import ConfigParser

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bundle_run import machine, step_timing_args, write_result

    from brainspade.precision import bf16_pays

    a = step_timing_args(__doc__, 4, "tiny profile and widths, 1 step (smoke test)", argv)
    base = ConfigParser.load_config_file(str(CONFIGS / "tiny.yaml")) if a.quick else {}
    base = {k: v for k, v in base.items() if not k.startswith("untrained")}
    res = {
        "benchmark": "brainspade3d_training",
        "threads": a.threads,
        "quick": bool(a.quick),
        "bf16_native": bf16_pays("cpu"),
        **measure(1 if a.quick else a.steps, base),
        "machine": machine(),
    }
    write_result("brainspade3d_training", "tiny" if a.quick else "default", res, a.output)
    return res


if __name__ == "__main__":
    main()
