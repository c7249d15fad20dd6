"""Shared helpers for the segmenter tests: tiny configs, running the bundle in-process, writing NIfTI inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "segmenter"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.yaml")
EVALUATE = str(CONFIGS / "evaluate.yaml")
INFER = str(CONFIGS / "inference.yaml")
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
TINY = ConfigParser.load_config_file(str(CONFIGS / "tiny.yaml"))  # the tiny overlay: profile and U-Net widths
TINY_CHANNELS = TINY["channels"]


def tiny_train_overrides(datalist: Path, out: Path, **extra) -> dict:
    """Tiny profile/channels; every subject of the tiny set (too few for a pathology filter)."""
    d = str(Path(datalist).parent)
    return {
        "bundle_root": str(BUNDLE),
        **TINY,
        "dataset_dir": d,
        "output_dir": str(out),
        "publish_model": False,
        "max_epochs": 1,
        "iterations_per_epoch": 2,
        "val_interval": 1,
        "num_samples": 1,
        "train_sources": [
            {"kind": "phantom", "datalist": d, "split": "training", "contrasts": ["t1", "flair"]},
            {"kind": "dr", "datalist": d, "split": "training"},
        ],
        "val_sources": [{"kind": "phantom", "datalist": d, "split": "validation", "contrasts": ["t1"], "rotate": True}],
        **extra,
    }


def run_bundle(config_file, **override):
    from monai.bundle import run

    return run(config_file=config_file, meta_file=META, logging_file=LOGGING, **override)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def python() -> str:
    return sys.executable
