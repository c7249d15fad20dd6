"""Helpers of the label_ldm tests: tiny network widths and tiny (untrained or briefly trained) weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "label_ldm"
CONFIGS = BUNDLE / "configs"

# tiny widths for CI seconds (same code paths as the shipped model): the bundle's configs/tiny.yaml overlay
TINY_CONFIG = CONFIGS / "tiny.yaml"
TINY = ConfigParser.load_config_file(str(TINY_CONFIG))["tiny_sizes"]


def common_parser(**overrides) -> ConfigParser:
    """common.yaml with the tiny overlay layered last, then `overrides`."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "common.yaml"), str(TINY_CONFIG)])
    parser["bundle_root"] = str(BUNDLE)
    parser.update(overrides)
    return parser


def make_tiny_weights(datalist: str | Path, out_dir: str | Path) -> tuple[str, str]:
    """Untrained tiny autoencoder + diffusion weights in the exported format (tiny.yaml's `untrained_weights`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ae_path, dm_path = str(out_dir / "autoencoder.pt"), str(out_dir / "diffusion.pt")
    common_parser(datalist=str(datalist), autoencoder_path=ae_path, diffusion_path=dm_path).get_parsed_content(
        "untrained_weights"
    )
    return ae_path, dm_path


def inference_parser(ae_path: str, dm_path: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.yaml"), str(TINY_CONFIG)])
    parser["bundle_root"] = str(BUNDLE)
    parser.update(
        {
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
