"""Helpers of the brainspade3d tests: tiny generator widths, tiny weights for both chained bundles, configs.

The tiny widths run the same code paths as the shipped model (ContrastSPADENet, label_ldm's LabelSampler)
on the `tiny` profile (32^3) in well under a second per sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from label_ldm_helpers import TINY as LDM_TINY
from label_ldm_helpers import make_tiny_weights
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "brainspade3d"
CONFIGS = BUNDLE / "configs"

TINY = {"channels": [4, 8], "z_dim": 8, "spade_hidden": 4, "head_channels": 2, "head_hidden": 4}
TINY_D = {"d_channels": 4, "d_num": 1, "d_layers": 2}


def common_parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "common.yaml"))
    parser.update(
        {"bundle_root": str(BUNDLE), "profile": "tiny", "device": "$torch.device('cpu')", **TINY, **overrides}
    )
    return parser


def make_generator_weights(path: str | Path, seed: int = 0) -> str:
    """Untrained tiny generator weights (plain state dict, as train.yaml exports it)."""
    torch.manual_seed(seed)
    net = common_parser().get_parsed_content("network_def")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), str(path))
    return str(path)


def make_tiny_chain(datalist: str | Path, out_dir: str | Path) -> dict:
    """Tiny weights of label_ldm and brainspade3d; returns the inference.yaml overrides that use them."""
    out_dir = Path(out_dir)
    ae, dm = make_tiny_weights(datalist, out_dir / "label_ldm")
    gen = make_generator_weights(out_dir / "generator.pt")
    return {
        "profile": "tiny",
        "common_overrides": dict(TINY),
        "ckpt_path": gen,
        "device": "$torch.device('cpu')",
        "label_ldm_extra": {
            "common_overrides": dict(LDM_TINY),
            "autoencoder_path": ae,
            "diffusion_path": dm,
            "steps": 2,
            "max_retries": 0,
        },
    }


def write_overrides(overrides: dict, path: str | Path) -> str:
    """An override file to layer after inference.yaml on the command line (what a user's own config would be)."""
    Path(path).write_text(json.dumps(overrides, indent=1))
    return str(path)


def inference_cmd(override_file: str | Path, **options) -> list[str]:
    """`python -m monai.bundle run` arguments of the main command with tiny overrides layered in."""
    cfg = repr([str(CONFIGS / "inference.yaml"), str(override_file)])
    args = ["-m", "monai.bundle", "run", "--config_file", cfg]
    for k, v in options.items():
        args += [f"--{k}", str(v)]
    return args


def run_inference(overrides: dict, **options):
    """The main command in-process (monai.bundle.run), for tests that check outputs rather than exit codes."""
    from monai.bundle import run

    return run(config_file=str(CONFIGS / "inference.yaml"), **{**overrides, **options})


def one_torch_thread():
    """Generator body of a fixture: one torch thread while a test module runs (2 threads on the shared CI cores
    made the tiny 3D convolutions ~5x slower through oversubscription), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
