"""Bad-input catalogue, label_ldm bundle (see bundles/label_ldm/docs/README.md 'Bad input'): each case is a real
`python -m monai.bundle run ...` command; it must exit non-zero with one `error:` line that names what is
accepted, and leave nothing (new) behind. The commands run concurrently (each is dominated by Python/torch start-up)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_harness import assert_clean_failure, bundle_cmd, files_under, run_cmd
from label_ldm_helpers import BUNDLE, ONE_THREAD_ENV, make_tiny_weights, one_thread  # noqa: F401

from brainspade.bundle import load_scripts

scripts = load_scripts(BUNDLE, "label_ldm_scripts")

RANGE = r"accepted: 0 \(absent\) or [\d.]+ to [\d.]+ mL \(the trained range\)"
# name: (extra inference options, pattern of the error line); every case also gets the tiny weights + output_dir
INFERENCE_CASES = {
    "tumour_above_range": ({"tumour_ml": 999}, r"tumour_ml=999 mL is outside the trained range; " + RANGE),
    "negative_volume": ({"wmh_ml": -2}, r"wmh_ml=-2 is negative; " + RANGE),
    "oedema_without_tumour": (
        {"tumour_ml": 0, "oedema_ml": "{oedema_mid}"},  # oedema_ml inside its range
        r"combination tumour_ml=0, oedema_ml>0 never occurs in the training data.*accepted",
    ),
    "unknown_sampling": ({"sampling": "euler"}, r"sampling='euler' is not known; accepted: ddim, pndm300, ddpm1000"),
    "missing_weights": (
        {"autoencoder_path": "{tmp}/nope.pt"},
        r"autoencoder weights file '.*nope.pt' does not exist; accepted: the bundle's models/",
    ),
    "malformed_weights": (
        {"diffusion_path": "{tmp}/broken.pt"},
        r"diffusion weights file '.*broken.pt' is not a readable weights file .*; accepted: the bundle's models/ files "
        r"or a checkpoint written by",
    ),
    "output_dir_holds_results": (
        {"output_dir": "{tmp}/full"},
        r"output_dir '.*full' already holds 'sample-s0-000_label",
    ),
}
# the same checks once more as commands, with -m slow (in-process tests cover them in the default run); each
# command costs ~6 s of CPU in Python/torch/MONAI start-up alone
SLOW_CASES = {
    "nan_volume": ({"oedema_ml": "nan"}, r"oedema_ml='nan' is not finite; " + RANGE),
    "non_numeric_volume": ({"enhancing_ml": "lots"}, r"enhancing_ml='lots' is not a number; " + RANGE),
    "zero_steps": ({"steps": 0}, r"steps=0 is out of range; accepted: 1\.\.1000"),
    "guidance_below_one": ({"guidance_scale": 0.5}, r"guidance_scale=0.5 is not accepted; accepted: a number from 1"),
}


@pytest.fixture(scope="module")
def setup(tiny_phantoms, tmp_path_factory):
    """Tiny weights, a damaged weights file and an output folder holding a result; builds each case's command."""
    root = tmp_path_factory.mktemp("label_ldm_catalogue")
    ae, dm = make_tiny_weights(tiny_phantoms, root / "weights")
    lo, hi = scripts.condition_space(dm).ranges["oedema_ml"]
    (root / "broken.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    (root / "full").mkdir()
    (root / "full" / "sample-s0-000_label.nii.gz").write_bytes(b"earlier result")

    def job(name: str, opts: dict) -> tuple[list[str], Path]:
        out = Path(str(opts.get("output_dir", root / name)).format(tmp=root))
        kw = {"autoencoder_path": ae, "diffusion_path": dm, "output_dir": out, "steps": 1}
        kw.update({k: str(v).format(tmp=root, oedema_mid=round((lo + hi) / 2, 3)) for k, v in opts.items()})
        return bundle_cmd("label_ldm", ["inference.yaml", "tiny.yaml"], **kw), out

    return root, job


@pytest.fixture(scope="module")
def results(setup):
    """Run every default catalogue command once (concurrently), keyed by case name: (result, output, files before)."""
    root, job = setup
    jobs = {name: job(name, opts) for name, (opts, _) in INFERENCE_CASES.items()}
    run_dir = root / "train_run"
    jobs["training_missing_datalist"] = (
        bundle_cmd(
            "label_ldm",
            ["common.yaml", "train_autoencoder.yaml"],
            profile="tiny",
            datalist=root / "no" / "datalist.json",
            run_dir=run_dir,
            export_path=run_dir / "autoencoder.pt",
        ),
        run_dir,
    )
    before = {name: files_under(out) for name, (_, out) in jobs.items()}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_cmd, args, root, 300, ONE_THREAD_ENV) for name, (args, _) in jobs.items()}
    return {name: (f.result(), jobs[name][1], before[name]) for name, f in futures.items()}


@pytest.mark.parametrize("case", sorted(INFERENCE_CASES))
def test_inference_refuses_bad_input(results, case):
    res, out, before = results[case]
    assert_clean_failure(res, INFERENCE_CASES[case][1], out, before)


def test_training_refuses_missing_datalist(results):
    res, out, before = results["training_missing_datalist"]
    assert_clean_failure(
        res, r"datalist '.*datalist.json' does not exist; accepted: a datalist.json written by", out, before
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_CASES))
def test_inference_refuses_bad_input_more(setup, case):
    args, out = setup[1](case, SLOW_CASES[case][0])
    assert_clean_failure(run_cmd(args, setup[0], 300, ONE_THREAD_ENV), SLOW_CASES[case][1], out, [])
