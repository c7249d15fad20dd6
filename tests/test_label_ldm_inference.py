"""label_ldm inference: valid NIfTI with the profile affine, sidecars, sampler selection, verification with bounded
retries, no lesion outside the brain. (Refusals of bad input: tests/test_catalogue_label_ldm.py.)"""

from __future__ import annotations

import importlib
import json

import nibabel as nib
import numpy as np
import pytest
from cli_harness import bundle_cmd, run_cmd
from label_ldm_helpers import (  # noqa: F401
    BUNDLE,
    ONE_THREAD_ENV,
    TINY,
    inference_parser,
    make_tiny_weights,
    one_thread,
)

import brainspade.precision
from brainspade.bundle import bundle_config, load_scripts
from brainspade.errors import InputError
from brainspade.labels import CONDITION_KEYS, LABEL_CODES, int_to_pv, pv_to_int
from brainspade.profiles import get_profile

scripts = load_scripts(BUNDLE, "label_ldm_scripts")


@pytest.fixture(scope="module")
def weights(tiny_phantoms, tmp_path_factory):
    return make_tiny_weights(tiny_phantoms, tmp_path_factory.mktemp("label_ldm_weights"))


def test_cli_writes_valid_nifti_pv_and_sidecar(weights, tmp_path):
    ae, dm = weights
    out = tmp_path / "out"
    args = bundle_cmd(
        "label_ldm",
        ["inference.yaml", "tiny.yaml"],
        autoencoder_path=ae,
        diffusion_path=dm,
        output_dir=out,
        steps=2,
        max_retries=1,
        num_samples=2,
        seed=3,
        wmh_ml=0,
        save_pv=True,
    )
    res = run_cmd(args, cwd=tmp_path, env=ONE_THREAD_ENV)  # from another folder than the repository
    assert res.returncode == 0, res.stderr[-3000:]
    prof = get_profile("tiny")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"sample-s3-00{i}{suffix}" for i in range(2) for suffix in ("_label.nii.gz", "_pv.nii.gz", ".json")
    )
    for i in range(2):
        img = nib.load(str(out / f"sample-s3-00{i}_label.nii.gz"))
        assert img.shape == prof.shape and np.allclose(img.affine, prof.affine)
        assert int(img.header["qform_code"]) == 4 and int(img.header["sform_code"]) == 4  # MNI
        lab = np.asarray(img.dataobj)
        assert np.issubdtype(lab.dtype, np.integer) and lab.min() >= 0 and lab.max() <= 9
        assert not np.any(lab == LABEL_CODES["wmh"]), "wmh_ml=0 but WMH in the label map"
        pv = np.moveaxis(np.asarray(nib.load(str(out / f"sample-s3-00{i}_pv.nii.gz")).dataobj, dtype=np.float32), -1, 0)
        assert pv.shape == (10, *prof.shape) and np.allclose(pv.sum(0), 1, atol=0.05)
        side = json.loads((out / f"sample-s3-00{i}.json").read_text())
        assert side["requested"]["wmh_ml"] == 0 and side["requested_source"]["wmh_ml"] == "requested"
        assert side["requested_source"]["tumour_ml"] == "drawn" and set(side["achieved"]) == set(CONDITION_KEYS)
        assert side["sampler"] == "ddim" and side["steps"] == 2 and side["base_seed"] == 3 and side["index"] == i
        assert isinstance(side["seed"], int) and 0 <= side["retries"] <= 1 and side["model_version"] == "test"
        assert side["removed_outside_brain_ml"] >= 0 and side["removed_unrequested_ml"] >= 0  # clean-up reported
        assert side["files"] == {"label": f"sample-s3-00{i}_label.nii.gz", "pv": f"sample-s3-00{i}_pv.nii.gz"}


def test_in_memory_api_and_sampler_selection(weights):
    ae, dm = weights
    sampler = inference_parser(ae, dm, num_samples=1, seed=5).get_parsed_content("sampler")
    [s] = sampler()
    assert s["pv"].shape == (10, 32, 32, 32) and s["labels"].shape == (32, 32, 32)
    assert np.allclose(s["pv"].sum(0), 1, atol=1e-4) and np.allclose(s["affine"], get_profile("tiny").affine)
    assert s["sampler"] == "ddim" and s["steps"] == 2 and s["guidance_scale"] == 3.0
    [p] = sampler(sampling="pndm300", steps=3)
    assert p["sampler"] == "pndm300" and p["steps"] == 3
    [d] = sampler(sampling="ddpm1000", steps=2)
    assert d["sampler"] == "ddpm1000"
    assert [type(sampler.schedulers[k]).__name__ for k in ("ddim", "pndm300", "ddpm1000")] == [
        "DDIMScheduler",
        "PNDMScheduler",
        "DDPMScheduler",
    ]
    assert sampler.default_steps == {"ddim": 20, "pndm300": 300, "ddpm1000": 1000}
    assert sampler.settings()["steps"] == 2 and sampler.settings(steps=None, sampling="pndm300")["steps"] == 300
    with pytest.raises(InputError, match="accepted: ddim, pndm300, ddpm1000"):
        sampler(sampling="euler")
    with pytest.raises(InputError, match="guidance_scale=0.2 is not accepted; accepted: a number from 1"):
        sampler(guidance_scale=0.2)
    with pytest.raises(InputError, match=r"steps=0 is out of range; accepted: 1\.\.1000"):
        sampler(steps=0)
    with pytest.raises(InputError, match="oedema_ml='nan' is not finite; accepted: 0 \\(absent\\) or"):
        sampler(oedema_ml="nan")
    with pytest.raises(InputError, match="max_retries=99 is out of range; accepted: 0..20"):
        sampler(max_retries=99)
    [s2] = sampler()  # same seed, same sample
    assert np.array_equal(s["labels"], s2["labels"]) and s2["seed"] == s["seed"]
    [n] = sampler(guidance_scale=1.0)  # no guidance: a different (unguided) sample path
    assert n["guidance_scale"] == 1.0


def test_verification_retries_are_bounded_and_reported(weights):
    """Untrained weights rarely hit a requested tumour: the sampler retries at most max_retries times, keeps the
    closest attempt and says so. By default (trim) a sample is verified when every requested lesion lies within
    +-25 % of the request's bounds and is then trimmed to it; otherwise it is delivered as sampled, unverified."""
    ae, dm = weights
    space = scripts.condition_space(dm)
    lo, hi = space.ranges["tumour_ml"]
    sampler = inference_parser(ae, dm, max_retries=2).get_parsed_content("sampler")
    [s] = sampler(tumour_ml=round((lo + hi) / 2, 3))
    assert 0 <= s["attempt_used"] <= s["retries"] <= 2 and s["max_retries"] == 2
    assert s["verified"] or s["retries"] == 2
    assert s["match_mode"] == "trim" and s["match_tolerance"] == 0.25
    voxel_ml = get_profile("tiny").voxel_mm3 / 1000
    requested = [k for k in CONDITION_KEYS if s["requested"][k] > 0]
    for k in requested:
        status, req, got = s["volume_matching"][k], s["requested"][k], s["sampled_achieved"][k]
        if s["verified"]:  # trimmed: moved by at most a quarter of the sampled volume, to the request
            assert status.startswith("trimmed (sampled x") and abs(s["achieved"][k] - req) <= voxel_ml / 2 + 1e-3
            assert abs(s["achieved"][k] - got) <= 0.25 * got + voxel_ml
        else:  # delivered as sampled
            assert s["achieved"][k] == got and status.split(" (")[0] in ("absent", "left as sampled", "outside +-25 %")
    [f] = sampler(tumour_ml=round((lo + hi) / 2, 3), match_mode="full")  # the whole edit, whatever the ratio
    ratios = [f["sampled_achieved"][k] / f["requested"][k] for k in CONDITION_KEYS if f["requested"][k] > 0]
    assert f["match_mode"] == "full" and f["verified"] == all(0.5 <= r <= 2.0 for r in ratios)
    for k in CONDITION_KEYS:  # every requested lesion drawn at >= a fifth of the request is brought to it
        status, req, got = f["volume_matching"][k], f["requested"][k], f["sampled_achieved"][k]
        if req > 0 and got >= 0.2 * req + voxel_ml:
            assert status.startswith("matched (sampled x"), status
            assert abs(f["achieved"][k] - req) <= voxel_ml / 2 + 1e-3
        elif req > 0 and 0 < got < 0.2 * req - voxel_ml:
            assert status.startswith("not drawn (sampled x") and f["achieved"][k] == got
        elif got == 0:
            assert status in ("absent", "not requested") and f["achieved"][k] == got
    [u] = sampler(tumour_ml=round((lo + hi) / 2, 3), match_volumes=False)  # the network's own volumes
    assert u["volume_matching"] == "off" and u["achieved"] == u["sampled_achieved"] and u["match_mode"] == "off"
    with pytest.raises(InputError, match="match_volumes='perhaps' is not a boolean; accepted: true/yes/y/on or false"):
        sampler(match_volumes="perhaps")
    with pytest.raises(InputError, match="match_mode='exact' is not known; accepted: trim, full"):
        sampler(match_mode="exact")
    with pytest.raises(InputError, match="match_tolerance=1.5 is not accepted; accepted: a number above 0 and below 1"):
        sampler(match_tolerance=1.5)
    [n] = sampler(tumour_ml=round((lo + hi) / 2, 3), match_volumes="false")  # as the README writes it (issue 15)
    assert n["volume_matching"] == "off"
    [z] = sampler(max_retries=0)
    assert z["retries"] == 0 and z["attempt_used"] == 0


def test_clean_lesions_keeps_lesions_inside_the_brain():
    lab = np.zeros((20, 20, 20), dtype=np.int16)
    lab[5:15, 5:15, 5:15] = LABEL_CODES["wm"]
    lab[8:10, 8:10, 8:10] = LABEL_CODES["tumour"]  # inside: kept
    lab[0:2, 0:2, 0:2] = LABEL_CODES["enhancing"]  # outside the brain: removed
    lab[12, 12, 12] = LABEL_CODES["wmh"]  # inside, but the user asked for none: removed
    pv, info = scripts.lesion_cleanup.clean_lesions(int_to_pv(lab), {"wmh_ml": 0.0, "tumour_ml": 1.0}, 8.0)
    assert np.allclose(pv.sum(0), 1)
    assert pv[LABEL_CODES["tumour"]].sum() == 8 and pv[LABEL_CODES["enhancing"]].sum() == 0
    assert pv[LABEL_CODES["wmh"]].sum() == 0 and pv[LABEL_CODES["wm"], 12, 12, 12] == 1
    assert info == {"removed_outside_brain_ml": 0.064, "removed_unrequested_ml": 0.008, "removed_tumour_specks_ml": 0.0}


def test_clean_lesions_returns_small_detached_tumour_specks_to_their_tissue():
    """The training tumours are one piece; the network scatters specks of tumour parts around its tumour. Pieces
    under 5 % of the sample's tumour voxels go to the tissue around them; the tumour (core in oedema, a diagonal
    neighbour included) and any substantial second piece stay as drawn."""
    lab = np.zeros((24, 24, 24), dtype=np.int16)
    lab[2:22, 2:22, 2:22] = LABEL_CODES["wm"]
    lab[4:12, 4:12, 4:12] = LABEL_CODES["oedema"]
    lab[6:10, 6:10, 6:10] = LABEL_CODES["tumour"]
    lab[12, 12, 12] = LABEL_CODES["enhancing"]  # touches the oedema corner diagonally: part of the tumour
    lab[17:19, 17:19, 17:19] = LABEL_CODES["oedema"]  # detached speck, 8 voxels (1.5 % of the tumour voxels)
    lab[5, 18, 5] = LABEL_CODES["tumour"]  # detached speck, 1 voxel
    lab[18, 5, 5] = LABEL_CODES["wmh"]  # WMH are many spots by nature: kept
    req = {"wmh_ml": 1.0, "tumour_ml": 1.0, "oedema_ml": 1.0, "enhancing_ml": 1.0}
    pv, info = scripts.lesion_cleanup.clean_lesions(int_to_pv(lab), req, 8.0)
    out = pv_to_int(pv)
    assert np.allclose(pv.sum(0), 1)
    assert info["removed_tumour_specks_ml"] == 0.072 and info["removed_unrequested_ml"] == 0.0
    assert (out[17:19, 17:19, 17:19] == LABEL_CODES["wm"]).all() and out[5, 18, 5] == LABEL_CODES["wm"]
    assert (out[6:10, 6:10, 6:10] == LABEL_CODES["tumour"]).all() and out[12, 12, 12] == LABEL_CODES["enhancing"]
    assert (out == LABEL_CODES["oedema"]).sum() == 8**3 - 4**3 and out[18, 5, 5] == LABEL_CODES["wmh"]
    lab[17:19, 17:19, 17:19] = LABEL_CODES["wm"]
    lab[14:20, 14:20, 14:20] = LABEL_CODES["oedema"]  # a second piece of 216 voxels (30 %): substantial, kept
    pv, info = scripts.lesion_cleanup.clean_lesions(int_to_pv(lab), req, 8.0)
    assert (pv_to_int(pv)[14:20, 14:20, 14:20] == LABEL_CODES["oedema"]).all() and info[
        "removed_tumour_specks_ml"
    ] == 0.008


def test_enclosed_background_goes_to_the_tissue_around_each_hole():
    """Holes of background inside the brain (what renders as black holes in the ventricles) take the healthy label
    most common around them; background reaching the outside, even through a one-voxel channel, stays."""
    lab = np.zeros((24, 24, 24), dtype=np.int16)
    lab[2:22, 2:22, 2:22] = LABEL_CODES["wm"]
    lab[6:12, 6:12, 6:12] = LABEL_CODES["csf"]  # a ventricle ...
    lab[8:10, 8:10, 8:10] = LABEL_CODES["background"]  # ... with a hole inside: 8 voxels
    lab[15, 15, 15] = LABEL_CODES["background"]  # a one-voxel hole in white matter ...
    for x, y in ((14, 15), (16, 15), (15, 14), (15, 16)):  # ... lined by WMH on 4 of its 6 faces: still white
        lab[x, y, 15] = LABEL_CODES["wmh"]  # matter, never a lesion
    lab[16:20, 4:8, 12:22] = LABEL_CODES["background"]  # open to the outside at z=21: not enclosed
    pv, filled = scripts.lesion_cleanup.fill_enclosed_background(int_to_pv(lab), 8.0)
    out = pv_to_int(pv)
    assert filled == 0.072 and np.allclose(pv.sum(0), 1)
    assert (out[8:10, 8:10, 8:10] == LABEL_CODES["csf"]).all() and out[15, 15, 15] == LABEL_CODES["wm"]
    assert (out[16:20, 4:8, 12:22] == LABEL_CODES["background"]).all()
    assert importlib.import_module("label_ldm_scripts.evaluate").enclosed_background_ml(out, 8.0) == 0.0
    same, none = scripts.lesion_cleanup.fill_enclosed_background(pv, 8.0)
    assert none == 0.0 and np.array_equal(same, pv)


def test_missing_weights_is_a_clear_error(weights, tmp_path):
    parser = inference_parser(str(tmp_path / "nope.pt"), weights[1])
    with pytest.raises(InputError, match="autoencoder weights file .* does not exist"):
        parser.get_parsed_content("sampler")()


def test_weights_of_another_profile_or_size_are_refused(weights):
    ae, dm = weights
    with pytest.raises(InputError, match="trained for profile 'tiny', not 'default'; accepted: --profile tiny"):
        inference_parser(ae, dm, profile="default").get_parsed_content("sampler").load()
    wider = inference_parser(ae, dm, common_overrides={**TINY, "ae_channels": [8, 8, 8]})
    with pytest.raises(InputError, match="does not fit this network .*accepted: weights trained with"):
        wider.get_parsed_content("sampler").load()


def test_bad_datalists_are_refused(tmp_path, tiny_phantoms):
    bad = tmp_path / "datalist.json"
    bad.write_text(json.dumps({"validation": []}))
    with pytest.raises(InputError, match="has no usable 'training' list"):
        scripts.load_datalist(bad, "training")
    bad.write_text(json.dumps({"training": [{"id": "s1", "pv": "missing_pv.nii.gz"}]}))
    with pytest.raises(InputError, match="'s1' lacks a readable 'pv' file .*accepted: paths relative to the datalist"):
        scripts.load_datalist(bad, "training")
    assert len(scripts.load_datalist(tiny_phantoms, "training", limit=2)) == 2


def test_sliding_window_decoding_matches_whole_decoding_with_shipped_weights():
    """Tiled decoding (paper profile on small GPUs) keeps the reconstruction: the decoder's GroupNorm sees each
    window's statistics, so a few boundary voxels change, but accuracy against the true map stays the same."""
    import torch

    from brainspade.phantom import generate_subject

    p = bundle_config(BUNDLE, "common.yaml")
    ae = p.get_parsed_content("autoencoder_def")
    scripts.weights.load_weights(ae, p.get_parsed_content("autoencoder_path"), "autoencoder", "cpu")
    ae.eval()
    pv = torch.from_numpy(generate_subject(7, 0, "default", "both")["pv"])[None]
    truth = pv.argmax(1)
    with torch.no_grad():
        z = ae.encode_stage_2_inputs(pv)
        whole = scripts.decode_latent(ae, z).argmax(1)
        tiled = scripts.decode_latent(ae, z, [16, 16, 16], 0.25).argmax(1)
    assert tiled.shape == whole.shape == truth.shape
    agree = (tiled == whole).float().mean().item()
    acc_whole, acc_tiled = ((whole == truth).float().mean().item(), (tiled == truth).float().mean().item())
    assert agree > 0.95 and abs(acc_whole - acc_tiled) < 0.01, (agree, acc_whole, acc_tiled)


def test_decode_roi_through_the_config(weights):
    """`--decode_roi` reaches the sampler and still yields full-size maps (tiny latent 8^3, windows of 4^3)."""
    ae, dm = weights
    sampler = inference_parser(ae, dm, decode_roi=[4, 4, 4], decode_overlap=0.5).get_parsed_content("sampler")
    # bf16 autocast where the hardware runs it natively (auto), on the CPU too
    assert sampler.amp is brainspade.precision.bf16_pays(sampler.device)
    [s] = sampler(seed=2)
    assert s["pv"].shape == (10, 32, 32, 32) and np.allclose(s["pv"].sum(0), 1, atol=1e-4)
    for roi, msg in (
        ([0, 4, 4], "decode_roi=\\[0, 4, 4\\] is not accepted; accepted: null"),
        ("big", "decode_roi='big'"),
    ):
        bad = inference_parser(ae, dm, decode_roi=roi).get_parsed_content("sampler")
        with pytest.raises(InputError, match=msg):
            bad()
    bad = inference_parser(ae, dm, decode_overlap=1.5).get_parsed_content("sampler")
    with pytest.raises(InputError, match="decode_overlap=1.5 is not accepted; accepted: a number from 0 to below 1"):
        bad()
