"""Helpers of the brainspade3d tests: tiny generator widths, tiny weights for both chained bundles, configs.

The tiny widths run the same code paths as the shipped model (ContrastSPADENet, label_ldm's LabelSampler)
on the `tiny` profile (32^3) in well under a second per sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from label_ldm_helpers import make_tiny_weights
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "brainspade3d"
CONFIGS = BUNDLE / "configs"

TINY_CONFIG = CONFIGS / "tiny.yaml"  # the tiny overlay: generator widths, discriminator, chained label_ldm's overlay
TINY = ConfigParser.load_config_file(str(TINY_CONFIG))["tiny_sizes"]


def common_parser(**overrides) -> ConfigParser:
    """common.yaml with the tiny overlay layered last, on the CPU, then `overrides`."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "common.yaml"), str(TINY_CONFIG)])
    parser.update({"bundle_root": str(BUNDLE), "device": "$torch.device('cpu')", **overrides})
    return parser


def make_generator_weights(path: str | Path, seed: int = 0) -> str:
    """Untrained tiny generator weights (plain state dict, as train.yaml exports it): tiny.yaml's `untrained_weights`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    common_parser(ckpt_path=str(path), untrained_seed=seed).get_parsed_content("untrained_weights")
    return str(path)


def make_tiny_chain(datalist: str | Path, out_dir: str | Path) -> dict:
    """Tiny weights of label_ldm and brainspade3d; the overrides that use them, layered after inference.yaml and
    tiny.yaml (which chains label_ldm's tiny.yaml)."""
    out_dir = Path(out_dir)
    ae, dm = make_tiny_weights(datalist, out_dir / "label_ldm")
    gen = make_generator_weights(out_dir / "generator.pt")
    return {
        "ckpt_path": gen,
        "device": "$torch.device('cpu')",
        "label_ldm_extra": {"autoencoder_path": ae, "diffusion_path": dm, "steps": 2, "max_retries": 0},
    }


def write_overrides(overrides: dict, path: str | Path) -> str:
    """An override file to layer after inference.yaml on the command line (what a user's own config would be)."""
    Path(path).write_text(json.dumps(overrides, indent=1))
    return str(path)


def inference_cmd(override_file: str | Path, **options) -> list[str]:
    """`python -m monai.bundle run` arguments of the main command with the tiny overlay and overrides layered in."""
    cfg = repr([str(CONFIGS / "inference.yaml"), str(TINY_CONFIG), str(override_file)])
    args = ["-m", "monai.bundle", "run", "--config_file", cfg]
    for k, v in options.items():
        args += [f"--{k}", str(v)]
    return args


def run_inference(overrides: dict, *configs: str, **options):
    """The main command in-process (monai.bundle.run): inference.yaml, then `configs` of this bundle (e.g.
    montage.yaml), then the tiny overlay; for tests that check outputs rather than exit codes."""
    from monai.bundle import run

    files = [str(CONFIGS / c) for c in ("inference.yaml", *configs)] + [str(TINY_CONFIG)]
    return run(config_file=files, **{**overrides, **options})


def one_torch_thread():
    """Generator body of a fixture: one torch thread while a test module runs (2 threads on the shared CI cores
    made the tiny 3D convolutions ~5x slower through oversubscription), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
