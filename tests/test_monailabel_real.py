"""The real client: MONAI Label 0.8.5 from the package index, in a throw-away environment, serving the exported
(self-contained) segmenter over REST on 127.0.0.1. Upload, infer, train, infer with the trained weights.

Slow (the first run installs MONAI Label, ~5 min and ~8 GB; later runs reuse the environment in
$BRAINSPADE_MONAILABEL_VENV, default ~/.cache/brainspade/monailabel-0.8.5):
    python -m pytest -m slow tests/test_monailabel_real.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "integrations" / "monailabel"


def _venv() -> Path:
    venv = Path(os.environ.get("BRAINSPADE_MONAILABEL_VENV", Path.home() / ".cache/brainspade/monailabel-0.8.5"))
    subprocess.run(["bash", str(HERE / "install.sh"), str(venv)], check=True, timeout=1800)
    return venv


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_monai_label_serves_infers_and_trains_the_exported_segmenter(tmp_path):
    from brainspade.export import export
    from brainspade.phantom import generate_dataset
    from brainspade.realscan import write_mni_t1

    venv = _venv()
    app = tmp_path / "app"
    shutil.copytree(venv / "monailabel" / "sample-apps" / "monaibundle", app)  # MONAI Label's own sample app
    export("segmenter", app / "model")
    studies = tmp_path / "studies"
    studies.mkdir()
    scan = write_mni_t1(tmp_path / "mni_t1.nii.gz", "reoriented")  # a real scan, not in RAS
    nan_img = nib.load(str(scan))
    nan_data = np.asarray(nan_img.dataobj, dtype=np.float32)
    nan_data[10, 10, 10] = np.nan
    nan_scan = tmp_path / "nan_scan.nii.gz"
    nib.save(nib.Nifti1Image(nan_data, nan_img.affine), str(nan_scan))
    datalist = generate_dataset(
        tmp_path / "phantoms",
        num_subjects=2,
        profile="default",
        seed=5,
        pathologies=["tumour"],
        split=(1.0, 0.0, 0.0),
        workers=1,
    )
    entries = json.loads(datalist.read_text())["training"]
    pairs = [f"{datalist.parent / e['t1']}:{datalist.parent / e['label']}" for e in entries]

    # the command-line answer for the same scan, from the repository's bundle and the same shipped weights
    cli_out = tmp_path / "cli"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(ROOT / "bundles" / "segmenter" / "configs" / "inference.yaml"),
            "--input_image",
            str(scan),
            "--output_dir",
            str(cli_out),
        ],
        check=True,
        cwd=ROOT,
        timeout=600,
    )

    out = tmp_path / "out"
    out.mkdir()
    report_path = out / "report.json"
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(HERE / "roundtrip.py"),
            "--venv",
            str(venv),
            "--app",
            str(app),
            "--studies",
            str(studies),
            "--scan",
            str(scan),
            "--nan_scan",
            str(nan_scan),
            "--train",
            *pairs,
            "--report",
            str(report_path),
        ],
        check=True,
        timeout=3000,
    )
    report = json.loads(report_path.read_text())
    log = (out / "server.log").read_text(errors="replace")[-3000:]
    assert report["models"] == ["segmenter"] and report["trainers"] == ["segmenter"], log

    before = report["infer_before"]
    assert before["status"] == 200, (before, log)
    seg = nib.load(before["file"])
    cli = nib.load(str(cli_out / "mni_t1_seg.nii.gz"))
    assert seg.shape == nib.load(str(scan)).shape and np.allclose(seg.affine, cli.affine, atol=1e-4)
    agree = float(np.mean(np.asarray(seg.dataobj) == np.asarray(cli.dataobj)))
    assert agree >= 0.999, f"MONAI Label and the CLI agree on {agree:.4%} of voxels"

    nan = report["infer_nan"]
    # MONAI Label answers any task error with HTTP 500 "Internal Server Error"; the reason is in its log
    full_log = (out / "server.log").read_text(errors="replace")
    assert nan["status"] == 500 and "nan_scan.nii.gz' holds NaN or infinite values; accepted" in full_log, nan

    assert report["train"]["status"] == 200, (report["train"], log)
    assert report["weights_after_train"] != report["weights_before"], "training did not publish models/model.pt"
    after = report["infer_after"]
    assert after["status"] == 200, (after, log)
    changed = float(np.mean(np.asarray(nib.load(after["file"]).dataobj) != np.asarray(seg.dataobj)))
    assert changed > 0, "the second inference did not use the trained weights"
    print(json.dumps({**report, "cli_agreement": agree, "voxels_changed_by_training": changed}, indent=2))
