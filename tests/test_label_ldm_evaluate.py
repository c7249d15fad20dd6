"""label_ldm evaluate.yaml on tiny weights: every metric computed for the network alone and the delivered maps side by
side, saved, and no silent overwrite; the anatomy metrics on hand-built maps whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from label_ldm_helpers import BUNDLE, CONFIGS, TINY, make_tiny_weights, one_thread  # noqa: F401  (autouse fixture)
from monai.bundle import run

from brainspade.labels import CONDITION_KEYS, LABEL_CODES, LABELS, int_to_pv


def test_evaluate_config_runs_and_saves_all_metrics(tiny_phantoms, tmp_path, capsys):
    ae, dm = make_tiny_weights(tiny_phantoms, tmp_path / "w")
    out = tmp_path / "eval.json"
    kw = dict(
        config_file=str(CONFIGS / "evaluate.yaml"),
        profile="tiny",
        datalist=str(tiny_phantoms),
        output_file=str(out),
        num_samples=3,
        device="cpu",
        steps=2,
        max_retries=1,
        inference_overrides={"common_overrides": dict(TINY), "autoencoder_path": ae, "diffusion_path": dm},
    )
    run(**kw)
    res = json.loads(out.read_text())
    assert set(res["reconstruction_dice"]) == {lab.key for lab in LABELS}
    assert 0 <= res["reconstruction_dice"]["background"] <= 1
    figures = ("enclosed_background_ml", "lesion_outside_parenchyma", "tumour_nested_rate")
    for variant in ("network_alone", "delivered"):
        r = res[variant]
        assert set(r["conditioning"]) == set(CONDITION_KEYS)
        for m in r["conditioning"].values():
            assert {"spearman", "median_rel_error", "presence_rate", "false_lesion_rate", "n_requested"} <= set(m)
        assert set(r["tissue_w1_over_sd"]) == {"csf", "gm", "wm", "dgm", "brainstem"}
        assert all(v is None or v >= 0 for v in r["tissue_w1_over_sd"].values())
        assert set(r["volume_wasserstein_ml"]) == {lab.key for lab in LABELS}
        assert set(figures) <= set(r) and r["enclosed_background_ml"] >= 0
        assert set(r["lesion_components"]) == set(CONDITION_KEYS)
        assert r["diversity"]["pairs"] == 2 and 0 <= r["diversity"]["ms_ssim_mean"] <= 1
        assert r["sampling"]["sampler"] == "ddim" and r["sampling"]["steps"] == 2 and len(res["samples"][variant]) == 3
    alone, delivered = res["samples"]["network_alone"], res["samples"]["delivered"]
    assert all(s["retries"] == 0 and s["volume_matching"] == "off" for s in alone)  # no matching, no retries
    assert all(s["retries"] <= 1 and s["match_mode"] == "trim" for s in delivered)
    assert [s["requested"] for s in alone] == [s["requested"] for s in delivered]  # the same requests
    assert set(res["training"]) >= set(figures) and res["training"]["enclosed_background_ml"] == 0
    rows = res["side_by_side"]
    rec = res["reconstruction"]
    assert rec["dice"] == res["reconstruction_dice"] and rec["n_subjects"] >= 1
    assert set(rec["volume_bias_sd"]) == {lab.key for lab in LABELS} and set(rec["lesions"]) == set(CONDITION_KEYS)
    # the autoencoder's own figure beside the network's, where one applies
    assert rows["tumour_ml spearman"].keys() == {"network_alone", "delivered", "autoencoder"}
    assert rows["tumour_ml presence_rate"].keys() == {"network_alone", "delivered"}
    assert rows["dgm volume W1/SD"] == {
        "network_alone": res["network_alone"]["tissue_w1_over_sd"]["dgm"],
        "delivered": res["delivered"]["tissue_w1_over_sd"]["dgm"],
        "autoencoder": rec["tissue_w1_over_sd"]["dgm"],
    }
    for fig in figures:
        assert rows[fig] == {
            "network_alone": res["network_alone"][fig],
            "delivered": res["delivered"][fig],
            "autoencoder": rec[fig],
            "training": res["training"][fig],
        }
    printed = capsys.readouterr().out
    assert "reconstruction Dice" in printed and "network alone" in printed and "tumour_nested_rate" in printed
    assert "autoencoder" in printed and "volume bias" in printed
    before = out.read_text()
    with pytest.raises(SystemExit) as exc:  # refuses to replace the results without --overwrite true
        run(**kw)
    assert exc.value.code == 2 and out.read_text() == before


def _evaluate_module():
    import importlib

    from brainspade.bundle import load_scripts

    load_scripts(BUNDLE, "label_ldm_scripts")
    return importlib.import_module("label_ldm_scripts.evaluate")  # the package exports `evaluate`, the function


class _PassThrough(torch.nn.Module):
    """A stand-in autoencoder with a known answer: the latent is the map itself and the decoder returns
    log(pv x gain), so the softmax of its output is the map with each label's fraction scaled by `gain`."""

    def __init__(self, gain: list[float]) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(gain).view(1, -1, 1, 1, 1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log(z.clamp_min(1e-6) * self.gain)


def test_reconstruction_figures_know_a_lossless_and_an_inflating_autoencoder(tiny_phantoms, tmp_path):
    from brainspade.profiles import get_profile

    ev = _evaluate_module()
    items = ev.load_datalist(str(tiny_phantoms), "training", ("pv",), None)
    train_labels = [ev.pv_to_int(ev.load_nifti(i["pv"], "pv")[0]) for i in items]
    voxel = get_profile("tiny").voxel_mm3
    lossless = _PassThrough([1.0] * len(LABELS))
    torch.save({"autoencoder": lossless.state_dict()}, tmp_path / "ae.pt")
    res = ev.reconstruction_figures(lossless, str(tmp_path / "ae.pt"), items, "cpu", voxel, train_labels)
    assert all(v is None or v == 1.0 for v in res["dice"].values())
    assert all(v is None or v == 0.0 for v in res["volume_bias_sd"].values())
    assert all(v == 0.0 for v in res["tissue_w1_over_sd"].values())  # the same maps as the training reference
    assert all(m["median_rel_error"] in (None, 0.0) for m in res["lesions"].values())
    # CSF's fraction tripled: it wins every voxel it shares, so its volume grows and its neighbours' shrink
    gain = [1.0] * len(LABELS)
    gain[LABEL_CODES["csf"]] = 3.0
    torch.save({"autoencoder": _PassThrough(gain).state_dict()}, tmp_path / "csf.pt")
    res = ev.reconstruction_figures(_PassThrough(gain), str(tmp_path / "csf.pt"), items, "cpu", voxel, train_labels)
    assert res["volume_bias_sd"]["csf"] > 0.5 and res["volume_bias_sd"]["gm"] < 0 and res["dice"]["csf"] < 1.0
    assert res["tissue_w1_over_sd"]["csf"] > 0


def test_lesion_components_counts_separate_lesions_where_present():
    scripts = _evaluate_module()
    wmh, core = LABEL_CODES["wmh"], LABEL_CODES["tumour"]

    def spots(n: int, code: int) -> np.ndarray:
        lab = np.full((20, 20, 20), LABEL_CODES["wm"], dtype=np.int16)
        for i in range(n):  # separate cubes, 2 voxels apart
            lab[1 + 4 * i : 3 + 4 * i, 5:7, 5:7] = code
        return lab

    touching = spots(1, wmh)
    touching[3, 7, 7] = wmh  # a diagonal neighbour: the same component under 26-connectivity
    samples = [{"labels": spots(2, wmh)}, {"labels": touching}, {"labels": spots(1, core)}]
    res = scripts.lesion_components(samples, [spots(3, wmh), spots(4, wmh), spots(1, core)])
    assert res["wmh_ml"] == {"generated": 1.5, "training": 3.5, "n_generated": 2, "n_training": 2}
    assert res["tumour_ml"] == {"generated": 1.0, "training": 1.0, "n_generated": 1, "n_training": 1}
    assert res["oedema_ml"] == {"generated": None, "training": None, "n_generated": 0, "n_training": 0}


def _head(shape=(20, 20, 20)) -> np.ndarray:
    """A white-matter cube (the brain) in background, a CSF ventricle inside."""
    lab = np.zeros(shape, dtype=np.int16)
    lab[3:17, 3:17, 3:17] = LABEL_CODES["wm"]
    lab[8:12, 8:12, 8:12] = LABEL_CODES["csf"]
    return lab


def test_enclosed_background_counts_holes_not_connected_to_the_outside():
    ev = _evaluate_module()
    lab = _head()
    assert ev.enclosed_background_ml(lab, 8.0) == 0.0
    lab[9:11, 9:11, 9:11] = LABEL_CODES["background"]  # a black hole inside the ventricle: 8 voxels of 8 mm^3
    assert ev.enclosed_background_ml(lab, 8.0) == pytest.approx(0.064)
    lab[9:11, 9:11, 0:11] = LABEL_CODES["background"]  # a channel to the outside: no longer enclosed
    assert ev.enclosed_background_ml(lab, 8.0) == 0.0


def test_lesion_voxels_outside_the_parenchyma():
    ev = _evaluate_module()
    lab = _head()
    lab[4:6, 4:6, 4:6] = LABEL_CODES["wmh"]  # 8 voxels in white matter
    lab[9:11, 9:11, 9:11] = LABEL_CODES["tumour"]  # 8 voxels in the ventricle
    # partial volumes: each lesion voxel keeps a healthy fraction of the tissue it was drawn in
    pv = int_to_pv(_head()).astype(np.float32) * 0.4
    for code in (LABEL_CODES["wmh"], LABEL_CODES["tumour"]):
        pv[code][lab == code] = 0.6
    assert ev.lesion_voxels_outside_parenchyma(pv, lab) == (8, 16)
    # no healthy fraction at all (pure lesion voxels): the nearest non-lesion voxel decides (CSF around the core)
    assert ev.lesion_voxels_outside_parenchyma(int_to_pv(lab).astype(np.float32), lab) == (8, 16)
    assert ev.lesion_voxels_outside_parenchyma(int_to_pv(_head()), _head()) == (0, 0)


def _tumour(core_at_edge: bool = False) -> np.ndarray:
    lab = np.full((30, 30, 30), LABEL_CODES["wm"], dtype=np.int16)
    grid = np.stack(np.meshgrid(*[np.arange(30)] * 3, indexing="ij"))
    r = np.sqrt(((grid - 15) ** 2).sum(0))
    lab[r < 9] = LABEL_CODES["oedema"]
    lab[r < 6] = LABEL_CODES["enhancing"]
    lab[r < 3] = LABEL_CODES["tumour"]
    if core_at_edge:  # the core moved to the tumour's rim: outside it touches white matter
        lab[lab == LABEL_CODES["tumour"]] = LABEL_CODES["enhancing"]
        lab[(np.abs(grid[0] - 23) <= 1) & (np.abs(grid[1] - 15) <= 2) & (np.abs(grid[2] - 15) <= 2)] = 7
    return lab


def test_tumour_nesting():
    ev = _evaluate_module()
    assert ev.tumour_nested(_tumour()) is True and ev.tumour_nested(_head()) is None
    assert ev.tumour_nested(_tumour(core_at_edge=True)) is False
    swapped = _tumour()  # oedema inside, enhancing outside: not nested
    o, e = swapped == LABEL_CODES["oedema"], swapped == LABEL_CODES["enhancing"]
    swapped[o], swapped[e] = LABEL_CODES["enhancing"], LABEL_CODES["oedema"]
    assert ev.tumour_nested(swapped) is False
    recs = [ev.anatomy_record(int_to_pv(m), m, 8.0) for m in (_tumour(), swapped, _head())]
    fig = ev.anatomy_figures(recs)
    assert fig["tumour_nested_rate"] == 0.5 and fig["n_tumour_maps"] == 2 and fig["enclosed_background_ml"] == 0


def test_tissue_volume_distance_in_training_sds():
    ev = _evaluate_module()
    ref = [{k: v for k in ev.TISSUES} for v in (10.0, 20.0)]  # SD 5 mL for every tissue
    gen = [{**{k: v for k in ev.TISSUES}, "dgm": v + 5.0} for v in (10.0, 20.0)]
    out = ev.tissue_volume_distance(gen, ref)
    assert out["dgm"] == pytest.approx(1.0) and out["csf"] == 0.0 and set(out) == set(ev.TISSUES)
    assert ev.tissue_volume_distance(gen, [ref[0], ref[0]])["gm"] is None  # no spread in training: undefined


def test_label_sampling_benchmark_smoke(tmp_path):
    """benchmarks/label_sampling.py --profile tiny: every sampler timed on the same requests, ratios and accuracy."""
    import importlib.util

    from label_ldm_helpers import ROOT

    spec = importlib.util.spec_from_file_location("label_sampling_bench", ROOT / "benchmarks" / "label_sampling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "label_sampling.json"
    res = bench.main(
        [
            "--profile",
            "tiny",
            "--steps",
            "ddim=2,pndm300=2,ddpm1000=3",
            "--num_samples",
            "3",
            "--reference_num_samples",
            "2",
            "--threads",
            "1",
            "--verify_retries",
            "1",
            "--output",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["benchmark"] == "label_sampling_tiny"
    rows = {r["sampler"]: r for r in res["cases"]}
    assert list(rows) == ["ddim", "pndm300", "ddpm1000", "ddim+verify+match"]
    assert (rows["ddim"]["steps"], rows["pndm300"]["steps"], rows["ddpm1000"]["steps"]) == (2, 2, 3)
    assert rows["ddim"]["guidance_scale"] == 3.0 and rows["pndm300"]["guidance_scale"] == 1.0
    assert [r["samples"] for r in rows.values()] == [3, 2, 2, 3]  # reference rows on the first 2 requests
    assert all(r["s_per_sample"] > 0 and "tumour_presence_rate" in r for r in rows.values())
    assert res["ddim_first_k"]["k"] == 2 and "min_presence_rate" in res["ddim_first_k"]
    assert res["pndm300_over_ddim_time"] > 0 and res["ddpm1000_over_ddim_time"] > 0
    assert rows["ddim+verify+match"]["max_retries"] == 1 and rows["ddim"]["mean_retries"] == 0
    # single attempts score the network alone; the default row also reports the figures before matching
    assert not rows["ddim"]["match_volumes"] and rows["ddim+verify+match"]["match_volumes"]
