"""label_ldm evaluate.yaml on tiny weights: every metric computed, saved, and no silent overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from label_ldm_helpers import BUNDLE, CONFIGS, TINY, make_tiny_weights, one_thread  # noqa: F401  (autouse fixture)
from monai.bundle import run

from brainspade.labels import CONDITION_KEYS, LABELS


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
    assert set(res["conditioning"]) == set(CONDITION_KEYS)
    for m in res["conditioning"].values():
        assert {"spearman", "median_rel_error", "presence_rate", "false_lesion_rate", "n_requested"} <= set(m)
    assert set(res["volume_wasserstein_ml"]) == {lab.key for lab in LABELS}
    assert all(v >= 0 for v in res["volume_wasserstein_ml"].values())
    assert set(res["lesion_components"]) == set(CONDITION_KEYS)
    assert res["diversity"]["pairs"] == 2 and 0 <= res["diversity"]["ms_ssim_mean"] <= 1
    assert res["sampling"]["sampler"] == "ddim" and res["sampling"]["steps"] == 2 and len(res["samples"]) == 3
    assert all(s["retries"] <= 1 for s in res["samples"])
    assert "reconstruction Dice" in capsys.readouterr().out
    before = out.read_text()
    with pytest.raises(SystemExit) as exc:  # refuses to replace the results without --overwrite true
        run(**kw)
    assert exc.value.code == 2 and out.read_text() == before


def test_lesion_components_counts_separate_lesions_where_present():
    import importlib

    from brainspade.bundle import load_scripts
    from brainspade.labels import LABEL_CODES

    load_scripts(BUNDLE, "label_ldm_scripts")
    scripts = importlib.import_module("label_ldm_scripts.evaluate")  # the package exports `evaluate`, the function
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
