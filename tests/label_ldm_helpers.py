"""Helpers of the label_ldm tests: tiny network widths and tiny (untrained or briefly trained) weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "label_ldm"
CONFIGS = BUNDLE / "configs"

# tiny widths for CI seconds (same code paths as the shipped model)
TINY = {
    "ae_channels": [4, 8, 8],
    "ae_norm_groups": 4,
    "latent_channels": 3,
    "ldm_channels": [8, 8, 16],
    "ldm_norm_groups": 4,
    "ldm_head_channels": 8,
}


def common_parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "common.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    parser.update({"profile": "tiny", **TINY, **overrides})
    return parser


def make_tiny_weights(datalist: str | Path, out_dir: str | Path) -> tuple[str, str]:
    """Untrained tiny autoencoder + diffusion weights in the exported format (scale factor etc. from data)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = common_parser()
    scripts = p.get_parsed_content("scripts")
    ae_path, dm_path = str(out_dir / "autoencoder.pt"), str(out_dir / "diffusion.pt")
    scripts.export_autoencoder(p.get_parsed_content("autoencoder_def"), ae_path, "test", "tiny")
    items = scripts.load_datalist(str(datalist), "training")
    meta = scripts.encode_datalist(
        p.get_parsed_content("autoencoder_def"), ae_path, items, "cpu", p.get_parsed_content("profile_obj"), True
    )
    scripts.export_diffusion(p.get_parsed_content("network_def"), meta, dm_path, "test", "v_prediction")
    return ae_path, dm_path


def inference_parser(ae_path: str, dm_path: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    parser.update(
        {
            "profile": "tiny",
            "common_overrides": dict(TINY),
            "autoencoder_path": ae_path,
            "diffusion_path": dm_path,
            "device": "cpu",
            "steps": 2,
            "max_retries": 0,
            **overrides,
        }
    )
    return parser


# one thread per process: on a loaded 2-core machine two spinning OpenMP threads per process are several times
# slower than one (measured: tiny sampling 0.2 s with 1 thread, 3 s with 2)
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this module's in-process torch work on one thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
