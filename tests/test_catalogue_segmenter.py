"""Bad-input catalogue, segmenter bundle (see bundles/segmenter/docs/README.md 'Bad input'): each case is a
real `python -m monai.bundle run` subprocess; it must exit non-zero with one `error:` line that says what is
wrong and what is accepted, and leave nothing (new) in its output folder.

The subprocesses are started together (at most 4 at a time, one thread each) so the catalogue costs about two
interpreter start-ups of wall time rather than eight."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_harness import ROOT, assert_clean_failure, bundle_cmd, files_under

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


BUNDLE_MODEL = Path(__file__).resolve().parent.parent / "bundles" / "segmenter" / "models" / "model.pt"


def _img(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFF), str(path))
    return str(path)


def _cases(tmp: Path) -> dict[str, dict]:
    """name -> {args, pattern, out (folder that must stay as it was), before}."""
    good = _img(tmp / "good.nii.gz", np.random.default_rng(0).random((12, 12, 12)))
    four_d = _img(tmp / "series.nii.gz", np.ones((12, 12, 12, 3)))
    nan = np.ones((12, 12, 12))
    nan[3, 3, 3] = np.nan
    nan = _img(tmp / "nan.nii.gz", nan)
    weights = tmp / "weights.pt"
    torch.save({"w": torch.zeros(1)}, weights)  # readable state dict: the checks come before the network
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch checkpoint\n" * 10)
    exists = tmp / "out_exists"
    exists.mkdir()
    (exists / "good_seg.nii.gz").write_bytes(b"earlier result")
    bad_list = tmp / "real.json"
    bad_list.write_text('{"training": [{"image": "good.nii.gz"}]}')

    def infer(name, **kw):
        out = tmp / f"out_{name}"
        return bundle_cmd(
            "segmenter",
            ["inference.yaml"],
            output_dir=kw.pop("output_dir", out),
            ckpt_path=kw.pop("ckpt_path", weights),
            **kw,
        )

    def train(name, sources):
        return bundle_cmd("segmenter", ["train.yaml"], output_dir=tmp / f"out_{name}", train_sources=repr(sources))

    return {
        "missing_image": {
            "args": infer("missing_image", input_image=tmp / "nope.nii.gz"),
            "pattern": r"input image '.*nope\.nii\.gz' does not exist; accepted: a 3D NIfTI",
        },
        "4d_image": {
            "args": infer("4d_image", input_image=four_d),
            "pattern": r"is 4D with shape \(12, 12, 12, 3\); accepted: a 3D NIfTI",
        },
        "nan_image": {
            "args": infer("nan_image", input_image=nan),
            "pattern": r"contains NaN or infinite values; accepted: a 3D NIfTI.*finite values",
        },
        # real weights of the network (weights that do not fit it are refused first, before the folder check)
        "output_exists": {
            "args": infer("exists", input_image=good, output_dir=exists, ckpt_path=BUNDLE_MODEL),
            "pattern": r"already holds 'good_seg\.nii\.gz'.*accepted: .*--overwrite true",
            "out": exists,
            "before": ["good_seg.nii.gz"],
        },
        "unreadable_checkpoint": {
            "args": infer("ckpt", input_image=good, ckpt_path=corrupt),
            "pattern": r"model weights '.*corrupt\.pt' is not a readable weights file.*accepted: "
            r"a PyTorch state-dict",
        },
        "missing_datalist": {
            "args": train("missing_datalist", [{"kind": "phantom", "datalist": str(tmp / "nowhere")}]),
            "pattern": r"datalist '.*nowhere' does not exist; accepted: a MONAI datalist",
        },
        "datalist_entry_without_label": {
            "args": train("no_label", [{"kind": "datalist", "datalist": str(bad_list)}]),
            "pattern": r"real\.json entry 0 lacks key 'label'; required keys: image, label",
        },
        "unknown_source_kind": {
            "args": train("kind", [{"kind": "gan", "path": str(tmp)}]),
            "pattern": r"training source 0 .* has no valid 'kind'; accepted: phantom, datalist, folder, dr",
        },
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg_catalogue")
    cases = _cases(tmp)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(case):
        return subprocess.run(
            [sys.executable, *case["args"]], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(cases, pool.map(run, cases.values()), strict=True))
    return {name: (cases[name], res, tmp) for name, res in done.items()}


CASES = [
    "missing_image",
    "4d_image",
    "nan_image",
    "output_exists",
    "unreadable_checkpoint",
    "missing_datalist",
    "datalist_entry_without_label",
    "unknown_source_kind",
]


@pytest.mark.parametrize("name", CASES)
def test_segmenter_refuses_bad_input_cleanly(results, name):
    case, res, tmp = results[name]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    out = case.get("out")
    assert_clean_failure(res, case["pattern"], out, case.get("before"))
    # no other output folder was created or filled by any refused run
    stray = [p for p in Path(tmp).glob("out_*") if p.name != "out_exists" and files_under(p)]
    assert not stray, stray


def _documented_errors() -> list[str]:
    """The first `error: ...` message of each row of the README's 'Bad input' table."""
    section = (ROOT / "bundles" / "segmenter" / "docs" / "README.md").read_text().split("## Bad input", 1)[1]
    return re.findall(r"^\|[^|\n]+\| `(error: [^`]+)`", section.split("\n## ", 1)[0], flags=re.M)


def _shape(documented: str) -> str:
    """A regex of a documented message: its fixed words in order (`\u2026` and parenthesised examples vary)."""
    parts = [p.strip(" '\";,") for p in re.split(r"\u2026|\([^)]*\)", documented)]
    return ".*".join(re.escape(p) for p in parts if p)


def test_catalogue_covers_every_case(results):
    """Every case ran; each row of the README's table is an error a run printed, and each run's error is a row."""
    assert sorted(results) == sorted(CASES)
    printed = {
        name: [ln for ln in res.stderr.splitlines() if ln.startswith("error:")] for name, (_, res, _) in results.items()
    }
    shapes = [_shape(doc) for doc in _documented_errors()]
    assert shapes, "no 'error:' rows in the README's Bad input table"
    for doc, shape in zip(_documented_errors(), shapes, strict=True):
        assert any(re.search(shape, ln) for lines in printed.values() for ln in lines), f"{doc!r} printed by no case"
    for name, lines in printed.items():
        assert any(re.search(shape, ln) for shape in shapes for ln in lines), f"{name}: {lines} is in no README row"
