"""brainspade3d's evaluate.yaml: each figure's function on hand-built arrays whose answer is known, then the whole
evaluation on tiny configs (untrained tiny generator, the tiny phantoms): every figure per contrast, label
fidelity on by default with the shipped segmenter, off with --label_fidelity false, bad options refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from brainspade3d_helpers import BUNDLE, CONFIGS, TINY_CONFIG, make_generator_weights, one_torch_thread
from monai.bundle import ConfigParser, run

from brainspade.bundle import load_scripts
from brainspade.labels import LABEL_CODES, int_to_pv

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
ev = load_scripts(BUNDLE, "brainspade3d_scripts").evaluate
CSF, GM, WM = LABEL_CODES["csf"], LABEL_CODES["gm"], LABEL_CODES["wm"]


def _three_tissues(n: int = 30) -> np.ndarray:
    """A (3n, 2, 1) label map: n voxels each of CSF, GM and WM, and background."""
    labels = np.zeros((3 * n, 2, 1), np.int64)
    labels[:n, 0], labels[n : 2 * n, 0], labels[2 * n :, 0] = CSF, GM, WM
    return labels


def _paint(labels: np.ndarray, values: dict[int, float]) -> np.ndarray:
    img = np.zeros(labels.shape, np.float32)
    for code, v in values.items():
        img[labels == code] = v
    return img


def test_tissue_errors_are_differences_of_brain_z_scored_means():
    labels = _three_tissues()
    real = _paint(labels, {CSF: 0.0, GM: 1.0, WM: 2.0})  # brain mean 1, SD sqrt(2/3)
    # z-scoring inside the brain: any gain and offset of the whole image costs nothing
    assert ev.tissue_errors(3 * real + 5 * (labels > 0), real, labels) == pytest.approx(
        {"csf": 0, "gm": 0, "wm": 0}, abs=1e-6
    )
    fake = _paint(labels, {CSF: 0.0, GM: 0.0, WM: 3.0})  # brain mean 1, SD sqrt(2)
    s_real, s_fake = math.sqrt(2 / 3), math.sqrt(2)
    expected = {"csf": abs(-1 / s_fake + 1 / s_real), "gm": abs(-1 / s_fake - 0), "wm": abs(2 / s_fake - 1 / s_real)}
    assert ev.tissue_errors(fake, real, labels) == pytest.approx(expected, rel=1e-5)
    # a label under min_voxels has no mean: left out
    assert set(ev.tissue_errors(fake, real, labels, min_voxels=31)) == set()
    assert set(ev.label_means(real, labels, min_voxels=30)) == {"csf", "gm", "wm"}


def test_style_profile_is_tissue_means_over_the_brain_median():
    labels = _three_tissues()
    labels[: len(labels) // 6, 1] = GM  # GM the majority: it sets the median
    img = _paint(labels, {CSF: 0.5, GM: 1.0, WM: 2.0})
    prof = ev.style_profile(img, labels)
    assert prof == pytest.approx({"csf": 0.5, "gm": 1.0, "wm": 2.0})
    assert ev.style_profile(7 * img, labels) == pytest.approx(prof)  # global scale is no appearance
    assert ev.style_profile(np.zeros_like(img), labels) == {}


def test_profile_distance_median_and_transfer():
    a, b = {"csf": 1.0, "gm": 2.0, "wm": 3.0}, {"csf": 1.5, "gm": 2.0, "tumour": 9.0}
    assert ev.profile_distance(a, b) == pytest.approx(0.25)  # only the labels both hold
    assert math.isnan(ev.profile_distance(a, {"wmh": 1.0}))
    assert ev.median_profile([a, b, {"csf": 0.0}]) == {"csf": 1.0, "gm": 2.0, "wm": 3.0, "tumour": 9.0}
    ref = {"csf": 1.0, "gm": 1.0}
    assert ev.transfer_closer({"csf": 1.1, "gm": 1.0}, ref, {"csf": 1.4, "gm": 1.0}) == pytest.approx((1.0, 0.05, 0.2))
    assert ev.transfer_closer({"csf": 1.4, "gm": 1.0}, ref, {"csf": 1.1, "gm": 1.0})[0] == 0.0
    assert ev.transfer_closer({"wmh": 1.0}, ref, ref)[0] is None


def test_profile_spread_is_the_mean_per_label_sd():
    profiles = [{"csf": 1.0, "gm": 2.0, "wmh": 5.0}, {"csf": 3.0, "gm": 2.0}]
    assert ev.profile_spread(profiles) == pytest.approx(0.5)  # csf SD 1, gm SD 0; wmh not in every profile
    assert math.isnan(ev.profile_spread(profiles[:1]))


def _sphere_pv(n: int = 24) -> np.ndarray:
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    r = np.sqrt(ii**2 + jj**2 + kk**2)
    labels = np.zeros((n,) * 3, np.int64)
    labels[r < 0.9], labels[r < 0.75], labels[r < 0.5] = CSF, GM, WM
    return int_to_pv(labels)


def test_phantom_profiles_render_random_scanners_reproducibly():
    pv = _sphere_pv()
    t2 = ev.phantom_profiles(pv, "t2", seed=4, k=3, min_voxels=5)
    assert len(t2) == 3 and all(set(p) == {"csf", "gm", "wm"} for p in t2)
    assert t2 == ev.phantom_profiles(pv, "t2", seed=4, k=3, min_voxels=5)
    assert ev.profile_spread(t2) > 0  # each rng is another scanner
    t1 = ev.phantom_profiles(pv, "t1", seed=4, k=1, min_voxels=5)[0]
    assert t2[0]["csf"] > t2[0]["wm"] and t1["csf"] < t1["wm"]  # CSF bright on T2, dark on T1


def test_dice_per_label_and_fidelity_ratios():
    target = np.zeros((4, 4, 2), np.int64)
    target[:2], target[2:] = GM, WM
    assert ev.dice_per_label(target, target) == {"gm": 1.0, "wm": 1.0}  # labels absent from the target: left out
    pred = target.copy()
    pred[0] = WM  # half of GM called WM: GM Dice 2*8/(16+8), WM 2*16/(16+24)
    assert ev.dice_per_label(pred, target) == pytest.approx({"gm": 2 / 3, "wm": 0.8})
    ratios = ev.fidelity_ratios({"gm": 0.8, "wm": 0.6, "csf": 0.0}, {"gm": 0.4, "wm": 0.6})
    assert ratios == {
        "dice_ratio": pytest.approx(0.5 / 0.7, abs=1e-4),
        "dice_ratio_per_label": {"gm": 0.5, "wm": 1.0},
        "dice_ratio_min": 0.5,
    }


def test_references_pair_each_subject_with_another_of_the_same_contrast():
    pairs = [{"id": s, "contrast_name": c} for s in ("a", "b", "c") for c in ("t1", "t2")][:5]  # c has t1 only
    assert ev.references(pairs) == [2, 3, 4, 1, 0]
    assert ev.references([{"id": "a", "contrast_name": "t1"}]) == [None]


def test_summary_averages_per_label_then_over_labels_and_checks_targets():
    records = [
        {
            "scalars": {
                "ssim_sampled": 0.5,
                "style_transfer_fraction": 1.0,
                "style_spread_generated": 0.02,
                "style_spread_phantom": 0.04,
            },
            "per_label": {
                "tissue_error_sampled": {"csf": 0.1, "gm": 0.3},
                "dice_real": {"gm": 0.8},
                "dice_synthetic": {"gm": 0.4},
                "tissue_wasserstein": {"gm": 0.2},
            },
        },
        {
            "scalars": {
                "ssim_sampled": 0.7,
                "style_transfer_fraction": None,
                "style_spread_generated": 0.04,
                "style_spread_phantom": 0.04,
            },
            "per_label": {
                "tissue_error_sampled": {"csf": 0.3, "tumour": 0.5},
                "dice_real": {"gm": 0.6},
                "dice_synthetic": {"gm": 0.6},
                "tissue_wasserstein": {"gm": 0.4},
            },
        },
    ]
    s = ev.summarise_contrast(records)
    assert s["num_pairs"] == 2 and s["ssim_sampled"] == 0.6
    assert s["tissue_error_sampled_per_label"] == {"csf": 0.2, "gm": 0.3, "tumour": 0.5}
    assert s["tissue_error_sampled"] == pytest.approx(1 / 3, abs=1e-4)  # each label weighs the same
    assert s["tissue_wasserstein"] == {"gm": 0.3} and s["tissue_wasserstein_mean"] == 0.3  # its earlier keys
    assert s["dice_ratio"] == pytest.approx(0.5 / 0.7, abs=1e-4) and s["dice_ratio_min"] == s["dice_ratio"]
    assert s["style_transfer_fraction"] == 1.0 and s["style_transfer_pairs"] == 1
    assert s["style_diversity_ratio"] == 0.75
    met = ev.targets({"t1": s})["t1"]
    assert met["tissue_error_sampled <= 0.15"] is False and met["style_transfer_fraction >= 0.9"] is True
    assert ev.targets({"t1": {}})["t1"]["dice_ratio >= 0.9"] is None


def _evaluate(datalist, out: Path, gen: str, **extra):
    return run(
        config_file=[str(CONFIGS / "evaluate.yaml"), str(TINY_CONFIG)],
        ckpt_path=gen,
        datalist=str(datalist),
        datalist_key="training",
        output_dir=str(out),
        device="$torch.device('cpu')",
        **{"style_samples": 2, **extra},
    )


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    return make_generator_weights(tmp_path_factory.mktemp("b3d_eval") / "generator.pt")


def test_label_fidelity_is_on_by_default_with_the_shipped_segmenter():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "evaluate.yaml"))
    assert parser["label_fidelity"] is True
    assert Path(parser.get_parsed_content("segmenter_ckpt")).parts[-3:] == ("segmenter", "models", "model.pt")


def test_the_judge_reads_images_on_its_own_grid_and_answers_on_theirs(monkeypatch):
    """The segmenter works at its inference.yaml profile's spacing and reads in its inference's windows: a 6 mm
    (tiny profile) image is resampled to that grid (same field of view), read by the segmenter's own sliding-window
    inferer with its network in the memory format its inference uses on this device, and the labels come back on
    the image's grid."""
    import torch
    from monai.inferers import SlidingWindowInferer

    import brainspade.precision

    root = BUNDLE.parent / "segmenter"
    infer = ConfigParser()
    infer.read_config(str(root / "configs" / "inference.yaml"))
    spacing, window = infer.get_parsed_content("prof").spacing_mm, tuple(infer.get_parsed_content("roi_size"))
    assert ev.judge_grid((32, 32, 24), 6.0 / spacing) == [round(n * 6.0 / spacing) for n in (32, 32, 24)]
    infer.update({"device": torch.device("cpu")})
    channels_last = infer.get_parsed_content("use_channels_last")
    read: list[tuple] = []
    call = SlidingWindowInferer.__call__

    def spy(self, inputs, *args, **kwargs):
        read.append((tuple(inputs.shape[2:]), tuple(self.roi_size)))
        return call(self, inputs, *args, **kwargs)

    built: list[torch.nn.Module] = []
    to_cl = brainspade.precision.to_channels_last
    monkeypatch.setattr(
        brainspade.precision, "to_channels_last", lambda net, on: built.append(to_cl(net, on)) or built[-1]
    )
    monkeypatch.setattr(SlidingWindowInferer, "__call__", spy)
    segment = ev.segmenter_from_bundle(str(root), str(root / "models" / "model.pt"), "tiny", torch.device("cpu"))
    labels = segment(np.random.default_rng(0).random((32, 32, 24), dtype=np.float32))
    assert labels.shape == (32, 32, 24)
    assert read and read[0] == (tuple(ev.judge_grid((32, 32, 24), 6.0 / spacing)), window)
    weight = next(p for p in built[0].parameters() if p.dim() == 5)
    assert weight.is_contiguous(memory_format=torch.channels_last_3d) == channels_last


def test_evaluation_reports_every_figure_per_contrast(tiny_phantoms, tiny_generator, tmp_path, capsys):
    out = tmp_path / "eval"
    _evaluate(tiny_phantoms, out, tiny_generator)
    report = json.loads((out / "metrics.json").read_text())
    subjects = len(json.loads(Path(tiny_phantoms).read_text())["training"])
    assert report["segmenter"] is True and report["style_samples"] == 2
    assert set(report["per_contrast"]) == set(report["targets"]) == {"t1", "t2", "flair", "t1ce"}
    for r in report["per_contrast"].values():
        assert r["num_pairs"] == r["style_transfer_pairs"] == subjects
        assert {"csf", "gm", "wm"} <= set(r["tissue_error_sampled_per_label"]) <= set(LABEL_CODES)
        assert r["tissue_error_sampled"] >= 0 and r["tissue_error_encoded"] >= 0 and r["tissue_error_phantom"] >= 0
        assert -1 <= r["ssim_encoded"] <= 1 and r["psnr_sampled"] > 0
        assert 0 <= r["dice_real"] <= 1 and 0 <= r["dice_synthetic"] <= 1 and r["dice_ratio"] >= 0
        assert 0 <= r["style_transfer_fraction"] <= 1 and r["style_transfer_distance"] >= 0
        assert r["style_spread_phantom"] > 0 and r["style_diversity_ratio"] >= 0
    log = capsys.readouterr().out
    assert "err_smp = tissue_error_sampled" in log and "Dice ratio" in log and "tissue error (sampled, SD)" in log

    off = tmp_path / "off"
    _evaluate(tiny_phantoms, off, tiny_generator, label_fidelity="false", contrasts="t2", max_pairs=1)
    report = json.loads((off / "metrics.json").read_text())
    (r,) = report["per_contrast"].values()
    assert report["segmenter"] is False and "dice_real" not in r and "dice_ratio" not in r
    assert report["targets"]["t2"]["dice_ratio >= 0.9"] is None  # not measured
    assert r["style_transfer_pairs"] == 0  # one pair: no other subject to take a style from


@pytest.mark.parametrize("option", [{"style_samples": 1}, {"label_fidelity": "maybe"}, {"max_pairs": -1}])
def test_bad_options_are_one_error_line(tiny_phantoms, tiny_generator, tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exc:
        _evaluate(tiny_phantoms, tmp_path / "bad", tiny_generator, **option)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and next(iter(option)) in err[0]
    assert not (tmp_path / "bad").exists()
