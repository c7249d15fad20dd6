"""Bad-input catalogue, brainspade3d (the main command and training), as a user meets it: real subprocesses of
`python -m monai.bundle run`, each expected to end with exit status 2, one `error:` line saying what is wrong and
what is accepted, no traceback and nothing written.

The commands run two at a time in one module fixture (each pays monai's ~7 s import), the checks are per case.
Further cases of the same code path run in-process (same `error:` line through brainspade.cli.run_guarded).
"""

from __future__ import annotations

import gzip
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brainspade3d_helpers import (
    CONFIGS,
    inference_cmd,
    make_tiny_chain,
    one_torch_thread,
    run_inference,
    write_overrides,
)
from cli_harness import assert_clean_failure, run_cmd


def _nifti(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def _brain(shape=(24, 24, 24)) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(ii**2 + jj**2 + kk**2)
    return np.where(r < 0.8, 3, np.where(r < 0.9, 1, 0)).astype(np.int16)


_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
SUBPROCESS = (
    "unknown_contrast",
    "unreadable_label_file",
    "labels_outside_table",
    "nan_in_label_file",
    "bad_style_image",
    "output_exists_without_overwrite",
)  # + training_datalist_missing: 7 processes
IN_PROCESS = (
    "missing_label_file",
    "label_file_2d",
    "label_file_4d_wrong_channels",
    "num_samples_0",
    "shard_out_of_range",
    "unknown_profile",
    "negative_lesion_volume",
    "output_dir_is_a_file",
)


def _cases(d: Path) -> dict[str, tuple[dict, str, list[str]]]:
    """case -> (options of the main command, error pattern, files that exist in output_dir beforehand)."""
    garbage = d / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    outside = _brain()
    outside[10, 10, 10] = 12
    nan = _brain().astype(np.float32)
    nan[5, 5, 5] = np.nan
    four_d = np.zeros((24, 24, 24, 3), np.float32)
    four_d[..., 0] = 1
    (d / "notes.txt").write_text("not an image")
    return {
        "unknown_contrast": ({"contrast": "t1,pd"}, r"unknown contrast 'pd'; accepted: t1, t2, flair, t1ce", []),
        "unreadable_label_file": ({"label_file": str(garbage)}, r"label_file .* not a readable NIfTI.*accepted:", []),
        "missing_label_file": ({"label_file": str(d / "nope.nii.gz")}, r"does not exist; accepted:", []),
        "label_file_4d_wrong_channels": (
            {"label_file": _nifti(d / "four_d.nii.gz", four_d)},
            r"shape \(3, 24, 24, 24\); accepted: \(10, X, Y, Z\)",
            [],
        ),
        "label_file_2d": (
            {"label_file": _nifti(d / "flat.nii.gz", _brain()[:, :, 12])},
            r"has shape \(24, 24\); accepted: a 3D volume",
            [],
        ),
        "labels_outside_table": (
            {"label_file": _nifti(d / "outside.nii.gz", outside)},
            r"label values \[12\] outside the label table; accepted: 0\.\.9",
            [],
        ),
        "nan_in_label_file": ({"label_file": _nifti(d / "nan.nii.gz", nan)}, r"NaN.*accepted: finite", []),
        "bad_style_image": (
            {"style_image": str(d / "notes.txt")},
            r"style_image .* not a readable NIfTI.*accepted: .*nii",
            [],
        ),
        "num_samples_0": ({"num_samples": 0}, r"num_samples=0 is out of range; accepted: 1\.\.", []),
        "shard_out_of_range": ({"shard": 2, "num_shards": 2}, r"shard=2 .*accepted: 0\.\.1", []),
        "negative_lesion_volume": ({"tumour_ml": -5}, r"tumour_ml=-5 is negative; accepted:", []),
        "output_dir_is_a_file": (
            {"output_dir": str(d / "notes.txt")},
            r"output_dir .* cannot be created.*accepted: a writable",
            [],
        ),
        "unknown_profile": ({"profile": "huge"}, r"unknown profile 'huge'; accepted: default, paper, tiny", []),
        "output_exists_without_overwrite": (
            {},
            r"already holds 'sample-000000_t1.nii.gz'.*accepted: .*--overwrite true",
            ["sample-000000_t1.nii.gz"],
        ),
    }


@pytest.fixture(scope="module")
def workdir(tiny_phantoms, tmp_path_factory):
    d = tmp_path_factory.mktemp("b3d_catalogue")
    return d, make_tiny_chain(tiny_phantoms, d / "weights")


@pytest.fixture(scope="module")
def results(workdir):
    d, chain = workdir
    overrides = write_overrides(chain, d / "tiny.json")
    jobs = {}
    for name, (opts, pattern, existing) in _cases(d).items():
        if name not in SUBPROCESS:
            continue
        out = d / name / "out"
        for f in existing:
            out.mkdir(parents=True, exist_ok=True)
            (out / f).write_bytes(b"earlier result")
        jobs[name] = (inference_cmd(overrides, output_dir=out, **opts), pattern, out)
    run_dir = d / "train_run"
    train = [
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr([str(CONFIGS / "common.yaml"), str(CONFIGS / "train.yaml")]),
        "--profile",
        "tiny",
        "--datalist",
        str(d / "missing" / "datalist.json"),
        "--run_dir",
        str(run_dir),
    ]
    jobs["training_datalist_missing"] = (train, r"datalist .* does not exist; accepted: a MONAI datalist", run_dir)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_cmd, args) for name, (args, _, _) in jobs.items()}
        return {name: (futures[name].result(), pattern, out) for name, (_, pattern, out) in jobs.items()}


@pytest.mark.parametrize("case", [*SUBPROCESS, "training_datalist_missing"])
def test_bad_input_fails_clearly_and_writes_nothing(results, case):
    res, pattern, out = results[case]
    before = ["sample-000000_t1.nii.gz"] if case == "output_exists_without_overwrite" else []
    assert res.returncode == 2, res.stderr[-2000:]
    assert_clean_failure(res, pattern, out, before)
    if case == "output_exists_without_overwrite":
        assert (Path(out) / before[0]).read_bytes() == b"earlier result"
    else:
        assert not Path(out).exists()


@pytest.mark.parametrize("case", IN_PROCESS)
def test_bad_input_in_process(workdir, case, capsys):
    d, chain = workdir
    opts, pattern, _ = _cases(d)[case]
    out = d / f"inproc_{case}"
    with pytest.raises(SystemExit) as exc:
        run_inference(chain, **{"output_dir": str(out), **opts})
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines
    assert not out.exists()
