"""Issue 8: each bundle works when its folder is copied elsewhere on disk, and its documented commands work
from the repository root and from the bundle's own folder (configs find `scripts` by their own location).
brainspade3d's chained case (with label_ldm beside it) is in tests/test_brainspade3d_inference.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _segmenter_helpers import TINY_CHANNELS
from cli_harness import ROOT, run_cmd
from label_ldm_helpers import TINY as LDM_TINY
from label_ldm_helpers import make_tiny_weights
from monai.bundle import ConfigParser


def _copy(bundle: str, dest: Path) -> Path:
    target = dest / "elsewhere" / bundle
    shutil.copytree(ROOT / "bundles" / bundle, target, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
    return target


@pytest.fixture(scope="module")
def ldm_weights(tiny_phantoms, tmp_path_factory):
    return make_tiny_weights(tiny_phantoms, tmp_path_factory.mktemp("ldm_w"))


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / "segmenter" / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(ROOT / "bundles" / "segmenter"), "profile": "tiny", "channels": TINY_CHANNELS})
    path = tmp_path_factory.mktemp("seg_w") / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


@pytest.mark.parametrize("where", ["repo_root", "copied_bundle_folder"])
def test_label_ldm_inference_runs_from_root_and_from_a_copied_bundle(ldm_weights, tmp_path, where):
    ae, dm = ldm_weights
    over = tmp_path / "tiny.json"
    over.write_text(
        json.dumps(
            {
                "profile": "tiny",
                "common_overrides": LDM_TINY,
                "autoencoder_path": ae,
                "diffusion_path": dm,
                "steps": 2,
                "max_retries": 0,
            }
        )
    )
    if where == "repo_root":
        cwd, cfg = ROOT, "bundles/label_ldm/configs/inference.yaml"
        out = tmp_path / "out"
    else:
        cwd, cfg = _copy("label_ldm", tmp_path), "configs/inference.yaml"
        out = cwd / "out"
    res = run_cmd(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            repr([cfg, str(over)]),
            "--output_dir",
            str(out),
            "--tumour_ml",
            "0",
        ],
        cwd=cwd,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    side = json.loads(next(out.glob("*.json")).read_text())
    assert side["requested"]["tumour_ml"] == 0.0
    assert list(out.glob("*_label.nii.gz"))


@pytest.mark.parametrize("where", ["repo_root", "copied_bundle_folder"])
def test_segmenter_inference_runs_from_root_and_from_a_copied_bundle(tiny_phantoms, seg_weights, tmp_path, where):
    entry = json.loads(Path(tiny_phantoms).read_text())["test"][0]
    image = Path(tiny_phantoms).parent / entry["t1"]
    if where == "repo_root":
        cwd, cfg, out = ROOT, "bundles/segmenter/configs/inference.yaml", tmp_path / "out"
    else:
        cwd = _copy("segmenter", tmp_path)
        cfg, out = "configs/inference.yaml", cwd / "out"
    res = run_cmd(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            cfg,
            "--profile",
            "tiny",
            "--channels",
            str(TINY_CHANNELS),
            "--ckpt_path",
            str(seg_weights),
            "--input_image",
            str(image),
            "--output_dir",
            str(out),
        ],
        cwd=cwd,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(out.glob("*_seg.nii.gz"))) == 1 and len(list(out.glob("*_volumes.json"))) == 1
