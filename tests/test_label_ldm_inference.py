"""label_ldm inference: valid NIfTI with the profile affine, sidecars, refusals, sampler selection."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_harness import assert_clean_failure, bundle_cmd, files_under, run_cmd
from label_ldm_helpers import TINY, inference_parser, make_tiny_weights

from brainspade.errors import InputError
from brainspade.profiles import get_profile


@pytest.fixture(scope="module")
def weights(tiny_phantoms, tmp_path_factory):
    return make_tiny_weights(tiny_phantoms, tmp_path_factory.mktemp("label_ldm_weights"))


def _cli(weights, out, cwd, **kw):
    ae, dm = weights
    args = bundle_cmd("label_ldm", ["inference.yaml"], profile="tiny", common_overrides=repr(TINY),
                      autoencoder_path=ae, diffusion_path=dm, output_dir=out, steps=2, max_retries=1, **kw)
    return run_cmd(args, cwd=cwd)


def test_cli_writes_valid_nifti_and_sidecar_then_refuses_overwrite(weights, tmp_path):
    out = tmp_path / "out"
    res = _cli(weights, out, cwd=tmp_path, num_samples=2, seed=3, wmh_ml=0, save_pv=True)  # from another folder
    assert res.returncode == 0, res.stderr[-3000:]
    prof = get_profile("tiny")
    for i in range(2):
        img = nib.load(str(out / f"sample-s3-00{i}_label.nii.gz"))
        assert img.shape == prof.shape and np.allclose(img.affine, prof.affine)
        assert int(img.header["qform_code"]) == 4
        lab = np.asarray(img.dataobj)
        assert lab.min() >= 0 and lab.max() <= 9 and np.all(lab == np.round(lab))
        assert not np.any(lab == 6), "wmh_ml=0 but WMH in the label map"
        pv = nib.load(str(out / f"sample-s3-00{i}_pv.nii.gz"))
        assert pv.shape == (*prof.shape, 10)
        side = json.loads((out / f"sample-s3-00{i}.json").read_text())
        for key in ("seed", "requested", "achieved", "sampler", "steps", "model_version", "retries"):
            assert key in side
        assert side["requested"]["wmh_ml"] == 0 and side["sampler"] == "ddim" and side["steps"] == 2
    before = files_under(out)
    res = _cli(weights, out, cwd=tmp_path, num_samples=2, seed=3)
    assert_clean_failure(res, "already holds", out, before)


def test_cli_refuses_bad_conditioning_before_writing(weights, tmp_path):
    out = tmp_path / "bad"
    res = _cli(weights, out, cwd=tmp_path, tumour_ml=-5)
    assert_clean_failure(res, r"tumour_ml=-5 is negative; accepted: 0 \(absent\) or [\d.]+ to [\d.]+ mL")
    assert files_under(out) == []


def test_in_memory_api_and_sampler_selection(weights):
    ae, dm = weights
    parser = inference_parser(ae, dm, num_samples=1, seed=5)
    sampler = parser.get_parsed_content("sampler")
    [s] = sampler()
    assert s["pv"].shape == (10, 32, 32, 32) and s["labels"].shape == (32, 32, 32)
    assert np.allclose(s["pv"].sum(0), 1, atol=1e-4) and np.allclose(s["affine"], get_profile("tiny").affine)
    assert s["sampler"] == "ddim" and s["steps"] == 2
    [p] = sampler(sampling="pndm300", steps=3)
    assert p["sampler"] == "pndm300" and p["steps"] == 3
    [d] = sampler(sampling="ddpm1000", steps=2)
    assert d["sampler"] == "ddpm1000"
    assert type(sampler.schedulers["pndm300"]).__name__ == "PNDMScheduler"
    assert sampler.default_steps == {"ddim": 20, "pndm300": 300, "ddpm1000": 1000}
    with pytest.raises(InputError, match="accepted: ddim, pndm300, ddpm1000"):
        sampler(sampling="euler")
    with pytest.raises(InputError, match="guidance_scale"):
        sampler(guidance_scale=0.2)
    # same seed, same sample
    [s2] = sampler()
    assert np.array_equal(s["labels"], s2["labels"]) and s2["seed"] == s["seed"]


def test_missing_weights_is_a_clear_error(weights, tmp_path):
    parser = inference_parser(str(tmp_path / "nope.pt"), weights[1])
    with pytest.raises(InputError, match="autoencoder weights file .* does not exist"):
        parser.get_parsed_content("sampler")()
