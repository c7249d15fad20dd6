"""The segmenter's one input chain (training == inference) and its SynthSeg-style augmentation."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from _segmenter_helpers import BUNDLE, INFER, TRAIN
from monai.bundle import ConfigParser
from monai.transforms import Compose, ScaleIntensityRangePercentilesd

from brainspade.bundle import load_scripts
from brainspade.labels import NUM_LABELS
from brainspade.realscan import write_mni_t1

scripts = load_scripts(BUNDLE, "segmenter_scripts")


def _parser(config: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config)
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


@pytest.fixture(scope="module")
def real_scan(tmp_path_factory):
    """The real MNI152 T1, re-saved in a non-RAS orientation (1 mm, not the profile's 2 mm)."""
    return write_mni_t1(tmp_path_factory.mktemp("mni") / "mni_reoriented.nii.gz", "reoriented")


def test_training_and_inference_feed_the_network_the_same_volume(real_scan, tmp_path):
    # training's chain without its random parts (augmentation, crops) is exactly inference's chain
    train = _parser(TRAIN, **{"train#augmentation": [], "train#crop_transforms": []})
    infer = _parser(INFER)
    # the label is only loaded, orientated and resampled; any 3D file on the image's grid will do
    seen_in_training = train.get_parsed_content("train#preprocessing")(
        {"image": str(real_scan), "label": str(real_scan)}
    )
    seen_at_inference = infer.get_parsed_content("preprocessing")({"image": str(real_scan)})
    a, b = seen_in_training["image"], seen_at_inference["image"]
    assert a.shape == b.shape and a.shape[1:] != (189, 197, 233)  # resampled, not the input grid
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-5)
    torch.testing.assert_close(a.as_tensor(), b.as_tensor())
    assert float(b.min()) == 0.0 and float(b.max()) == 1.0
    # ... and so is the validation chain
    val = train.get_parsed_content("validate#preprocessing")({"image": str(real_scan), "label": str(real_scan)})
    torch.testing.assert_close(val["image"].as_tensor(), b.as_tensor())


def test_percentile_scaling_matches_monai():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.gamma(2.0, 1.0, (1, 40, 30, 20)).astype(np.float32))
    img[:, :10] = 0  # a skull-stripped background
    ours = scripts.ScalePercentilesd(keys=["image"])({"image": img})["image"]
    theirs = ScaleIntensityRangePercentilesd("image", lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)(
        {"image": img}
    )["image"]
    torch.testing.assert_close(torch.as_tensor(ours), torch.as_tensor(theirs), atol=1e-5, rtol=1e-4)
    assert float(ours[:, :10].abs().max()) == 0.0  # exactly-zero background stays exactly zero


def _volume() -> dict:
    labels = np.zeros((1, 48, 48, 48), np.uint8)
    labels[:, 8:40, 8:40, 8:40] = 3
    labels[:, 12:36, 12:36, 12:36] = 2
    labels[:, 20:28, 20:28, 20:28] = 7
    image = torch.from_numpy(labels.astype(np.float32) / 9 + 0.05)  # a noisy-background rendering stand-in
    return {"image": image, "label": torch.from_numpy(labels)}


def test_augmentation_draws_valid_varied_images():
    aug = Compose(scripts.augmentation_transforms(2.0) + scripts.intensity_transforms())
    aug.set_random_state(0)
    draws = [aug(_volume()) for _ in range(12)]
    for d in draws:
        assert d["image"].shape == d["label"].shape == (1, 48, 48, 48)
        assert set(np.unique(d["label"].numpy())) <= set(range(NUM_LABELS))
        assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0
    # tissue contrast varies between draws (random per-label intensities, gamma, bias): GM brighter than WM
    # in some draws and darker in others
    order = [float(d["image"][d["label"] == 2].mean() > d["image"][d["label"] == 3].mean()) for d in draws]
    assert 0 < sum(order) < len(order)
    # both kinds of background occur: exactly zero (skull-stripped) and not
    zero_bg = [bool((d["image"][d["label"] == 0] == 0).all()) for d in draws]
    assert any(zero_bg) and not all(zero_bg)


def test_early_noise_is_added_before_the_blur_and_the_thick_slices():
    """`early_noise_prob` puts noise where the blur and the slice sampling correlate it (a coarser scan's noise)."""
    chain = scripts.augmentation_transforms(2.0, early_noise_prob=0.7)
    names = [type(t).__name__ for t in chain]
    early = names.index("RandGaussianNoised")
    assert early < names.index("RandGaussianSmoothd") < names.index("RandThickSliced")
    assert chain[early].prob == 0.7 and scripts.augmentation_transforms(2.0)[early].prob == 0.0

    def background_noise(early_noise_prob: float) -> list[bool]:
        vol = _volume()
        vol["image"] = torch.where(vol["label"] > 0, vol["image"], torch.zeros(()))  # an exactly-zero background
        aug = Compose(
            scripts.augmentation_transforms(2.0, dr_prob=0.0, skull_strip_prob=0.0, early_noise_prob=early_noise_prob)
        )
        aug.set_random_state(1)
        return [bool(aug(dict(vol))["image"][:, :4].abs().max() > 0) for _ in range(10)]

    assert all(background_noise(1.0))  # every draw has a noisy background
    assert not all(background_noise(0.0))  # without it, only the late noise (half the draws) makes one


def _partial_volumes() -> dict:
    """Two tissues (GM 2, WM 3) meeting in a column of 50/50 voxels, brain inside a zero background."""
    pv = np.zeros((NUM_LABELS, 24, 24, 24), np.float32)
    pv[0] = 1.0
    pv[:, 4:20, 4:20, 4:20] = 0.0
    pv[2, 4:20, 4:12, 4:20] = 1.0
    pv[3, 4:20, 13:20, 4:20] = 1.0
    pv[2, 4:20, 12, 4:20] = pv[3, 4:20, 12, 4:20] = 0.5
    labels = np.argmax(pv, axis=0)[None].astype(np.uint8)
    return {"label": torch.from_numpy(labels), "pv": torch.from_numpy(pv).half()}


def test_partial_volume_draw_mixes_the_tissue_means():
    draw = scripts.RandLabelToIntensityd(std_range=(0.0, 0.0), background_zero_prob=1.0)
    draw.set_random_state(3)
    for _ in range(4):
        d = draw(_partial_volumes())
        assert "pv" not in d and d["image"].shape == (1, 24, 24, 24)  # the maps are used, then dropped
        img = d["image"][0]
        gm, wm, mixed = float(img[10, 8, 10]), float(img[10, 16, 10]), img[4:20, 12, 4:20]
        assert abs(gm - wm) > 1e-3  # two distinct random means
        # a half-and-half voxel is the average of its tissues' means, not one of them (a hard-label draw's step)
        torch.testing.assert_close(mixed, torch.full_like(mixed, 0.5 * (gm + wm)), atol=2e-3, rtol=0)
        assert float(img[0, 0, 0]) == 0.0
    # the hard-label draw of the same volume has no in-between intensities
    hard = _partial_volumes()
    del hard["pv"]
    img = scripts.RandLabelToIntensityd(std_range=(0.0, 0.0), background_zero_prob=1.0)(hard)["image"][0]
    assert len(torch.unique(img[4:20, 4:20, 4:20])) == 2


def test_prior_draws_look_like_a_contrast():
    from brainspade.contrasts import CONTRASTS, INTENSITY_PRIORS

    d = _partial_volumes()
    del d["pv"]
    exact = scripts.RandLabelToIntensityd(
        std_range=(0.0, 0.0), background_zero_prob=1.0, prior_prob=1.0, prior_jitter=0
    )
    exact.set_random_state(0)
    seen = set()
    for _ in range(12):
        img = exact(dict(d))["image"][0]
        gm_wm = (round(float(img[10, 8, 10]), 4), round(float(img[10, 16, 10]), 4))
        match = [c for c in CONTRASTS if gm_wm == (INTENSITY_PRIORS[c]["gm"], INTENSITY_PRIORS[c]["wm"])]
        assert match, gm_wm  # without jitter: exactly one contrast's priors
        seen.add(match[0])
    assert len(seen) > 1
    # with jitter the GM/WM ratio strays beyond every contrast's own (the renderer jitters each tissue by 5 %)
    jittered = scripts.RandLabelToIntensityd(std_range=(0.0, 0.0), background_zero_prob=1.0, prior_prob=1.0)
    jittered.set_random_state(1)
    ratios = [float(im[10, 8, 10] / im[10, 16, 10]) for im in (jittered(dict(d))["image"][0] for _ in range(40))]
    prior_ratios = np.array([INTENSITY_PRIORS[c]["gm"] / INTENSITY_PRIORS[c]["wm"] for c in CONTRASTS])
    strays = [np.min(np.abs(np.log(r / prior_ratios))) > 0.1 for r in ratios]
    assert 0.3 < np.mean(strays) < 1.0


def test_partial_volumes_on_another_grid_are_refused():
    d = _partial_volumes()
    d["pv"] = d["pv"][:, :20]
    with pytest.raises(ValueError, match="do not match"):
        scripts.RandLabelToIntensityd()(d)


def test_skull_strip_zeroes_exactly_the_background():
    d = scripts.RandSkullStripd(prob=1.0)(_volume())
    assert float(d["image"][d["label"] == 0].abs().max()) == 0.0
    assert bool((d["image"][d["label"] > 0] > 0).all())


def test_thick_slices_blur_along_one_axis_only():
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.normal(size=(1, 48, 48, 48)).astype(np.float32))
    t = scripts.RandThickSliced(
        keys=["image"], spacing_mm=2.0, thickness_mm=(6.0, 6.0), in_plane_mm=(1.0, 1.0), prob=1.0
    )
    t.set_random_state(0)
    out = t({"image": img})["image"]
    axis = int(np.argmax(t.resolution))
    # relative to the image's own spread, neighbours differ much less along the thick axis than in-plane
    rough = [float(torch.diff(out, dim=1 + ax).abs().mean() / out.std()) for ax in range(3)]
    assert rough[axis] < 0.5 * min(rough[ax] for ax in range(3) if ax != axis)


def test_monai_label_string_entries_pass_the_input_chain(real_scan):
    # MONAI Label's infer task adds `image_path` (a string); MONAI's Spacingd calls .update() on every image_* entry
    infer = _parser(INFER)
    out = infer.get_parsed_content("preprocessing")({"image": str(real_scan), "image_path": str(real_scan)})
    assert out["image_path"] == str(real_scan) and out["image"].shape[0] == 1


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("4d", r"has 3 volumes \(shape \(12, 12, 12\)\); accepted: one 3D volume"),
        ("nan", r"holds NaN or infinite values; accepted: finite"),
        ("zeros", r"is empty \(all zeros\)"),
    ],
)
def test_input_chain_refuses_what_the_network_cannot_segment(tmp_path, case, pattern):
    """The checks live in the data path, so clients that bypass the CLI (MONAI Label) get the same clear error
    instead of a channel mismatch in the UNet (4D) or a silent all-background answer (NaN)."""
    import nibabel as nib

    from brainspade.errors import InputError

    data = np.random.default_rng(0).random((12, 12, 12, 3) if case == "4d" else (12, 12, 12)).astype(np.float32)
    if case == "nan":
        data[3, 3, 3] = np.nan
    if case == "zeros":
        data[:] = 0
    path = tmp_path / f"{case}.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    chain = Compose(_parser(INFER).get_parsed_content("preprocessing").transforms)
    with pytest.raises(Exception) as info:
        chain({"image": str(path)})
    err = info.value
    while not isinstance(err, InputError) and err.__cause__ is not None:  # MONAI wraps transform errors
        err = err.__cause__
    assert isinstance(err, InputError)
    assert re.search(pattern, str(err)), str(err)


def test_soft_targets_are_the_partial_volumes_or_the_one_hot_label():
    soft = scripts.PartialVolumeTargetd()
    d = soft(_partial_volumes())
    assert "pv" not in d and d["label"].shape == (NUM_LABELS, 24, 24, 24)
    torch.testing.assert_close(d["label"].sum(0), torch.ones(24, 24, 24))
    # the half-and-half column stays half GM, half WM (the hard label calls it GM, the argmax's first tie)
    torch.testing.assert_close(d["label"][2:4, 4:20, 12, 4:20], torch.full((2, 16, 16), 0.5))
    hard = _partial_volumes()
    del hard["pv"]
    onehot = soft(dict(hard))["label"]
    assert torch.equal(onehot.argmax(0)[None], hard["label"].long()) and set(onehot.unique().tolist()) == {0.0, 1.0}
    # maps that lost mass at the volume's edge (zero padding of a rotation) are topped up as background
    edge = _partial_volumes()
    edge["pv"] = edge["pv"].float() * 0.5
    torch.testing.assert_close(soft(edge)["label"][0, 0, 0, 0], torch.tensor(1.0))
    d = _partial_volumes()
    d["pv"] = d["pv"][:, :20]
    with pytest.raises(ValueError, match="do not match"):
        soft(d)


def test_soft_target_augmentation_moves_the_maps_with_the_label():
    vol = _volume()
    pv = torch.nn.functional.one_hot(vol["label"][0].long(), NUM_LABELS).permute(3, 0, 1, 2).float()
    aug = Compose(scripts.augmentation_transforms(2.0, dr_prob=1.0, soft_targets=True))
    aug.set_random_state(0)
    moved = 0
    for _ in range(6):
        d = aug({"label": vol["label"], "pv": pv})  # a pv entry: no rendered image, drawn from the maps
        assert d["image"].shape == (1, 48, 48, 48) and d["pv"].shape == (NUM_LABELS, 48, 48, 48)
        # the maps went through the same rotation, scaling and flip as the label (bilinear vs nearest)
        agree = float((torch.as_tensor(d["pv"]).argmax(0) == torch.as_tensor(d["label"])[0].long()).float().mean())
        assert agree > 0.97, agree
        moved += int(not torch.equal(torch.as_tensor(d["label"])[0].long(), vol["label"][0].long()))
        target = scripts.PartialVolumeTargetd()(d)["label"]
        assert target.shape == (NUM_LABELS, 48, 48, 48)
        torch.testing.assert_close(torch.as_tensor(target).sum(0), torch.ones(48, 48, 48))
    assert moved > 0  # the random geometry did move them
    # without soft targets the maps are used for the draw and dropped, as before
    assert "pv" not in Compose(scripts.augmentation_transforms(2.0, dr_prob=1.0))({"label": vol["label"], "pv": pv})


def test_the_loss_with_soft_targets_is_lowest_at_the_fractions():
    target = torch.tensor([0.5, 0.5, 0.0])[None, :, None, None, None].repeat(1, 1, 2, 2, 2)
    at_fractions = torch.log(target.clamp_min(1e-4))
    sharpened = at_fractions.clone()
    sharpened[:, 0] += 3.0
    soft = scripts.dice_ce_loss(soft_targets=True)
    assert float(soft(at_fractions, target)) < float(soft(sharpened, target))
    hard_labels = torch.zeros(1, 1, 2, 2, 2)
    assert float(scripts.dice_ce_loss()(sharpened, hard_labels)) < float(
        scripts.dice_ce_loss()(at_fractions, hard_labels)
    )
