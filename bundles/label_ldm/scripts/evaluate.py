"""Evaluation of the label LDM: autoencoder reconstruction, conditioning accuracy, realism, diversity.

Metrics come from MONAI (`compute_dice`, `MultiScaleSSIMMetric`) and SciPy (`spearmanr`, `wasserstein_distance`,
`ndimage.label`); this module only arranges the data for them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric, compute_dice
from scipy import ndimage
from scipy.stats import spearmanr, wasserstein_distance

from brainspade.errors import InputError
from brainspade.io import load_nifti, save_json
from brainspade.labels import CONDITION_KEYS, LABELS, LESION_CODES, int_to_pv, pv_to_int, tissue_volumes_ml
from brainspade.profiles import get_profile

from .data import load_datalist, pv_condition_ml
from .volume_matching import NEIGHBOURS_26, PRESENCE_FRACTION
from .weights import load_weights


@torch.no_grad()
def reconstruction_dice(autoencoder, autoencoder_path: str, items: list[dict], device) -> dict:
    """Per-label Dice of argmax(decode(encode(pv))) vs the subject's labels (mean over subjects where present)."""
    load_weights(autoencoder, autoencoder_path, "autoencoder", "cpu", "autoencoder weights")
    ae = autoencoder.to(device).eval()
    scores = []
    for item in items:
        pv, _ = load_nifti(item["pv"], "partial-volume map")
        z_mu, _ = ae.encode(torch.from_numpy(pv)[None].to(device))
        rec = torch.softmax(ae.decode(z_mu).float(), 1)[0].cpu().numpy()
        y_pred = torch.from_numpy(int_to_pv(pv_to_int(rec)))[None]
        y = torch.from_numpy(int_to_pv(pv_to_int(pv)))[None]
        scores.append(compute_dice(y_pred, y, include_background=True, ignore_empty=True)[0].numpy())
    arr = np.stack(scores)
    return {
        lab.key: (None if np.all(np.isnan(arr[:, lab.code])) else round(float(np.nanmean(arr[:, lab.code])), 4))
        for lab in LABELS
    }


def _agreement(req: np.ndarray, ach: np.ndarray) -> tuple[float | None, float | None]:
    """Spearman (None below 3 distinct requests) and median relative error of achieved vs requested volumes."""
    rho = None
    if len(req) >= 3 and np.ptp(req) > 0:
        r = spearmanr(req, ach).statistic
        rho = None if np.isnan(r) else round(float(r), 4)
    return rho, (round(float(np.median(np.abs(ach - req) / req)), 4) if len(req) else None)


def conditioning_metrics(
    samples: list[dict], presence_fraction: float = PRESENCE_FRACTION, false_ml: float = 0.1
) -> dict:
    """Per lesion type: Spearman(requested, achieved), median relative error, presence rate, false-lesion rate."""
    out = {}
    for k in CONDITION_KEYS:
        req = np.array([s["requested"][k] for s in samples])
        ach = np.array([s["achieved"][k] for s in samples])
        raw = np.array([s["raw_achieved"][k] for s in samples])
        pos = req > 0
        m: dict[str, Any] = {"n_requested": int(pos.sum()), "n_zero": int((~pos).sum())}
        m["spearman"], m["median_rel_error"] = _agreement(req[pos], ach[pos])
        if all("sampled_achieved" in s for s in samples):  # the model's own figures, before volume matching
            sampled = np.array([s["sampled_achieved"][k] for s in samples])
            m["spearman_sampled"], m["median_rel_error_sampled"] = _agreement(req[pos], sampled[pos])
        m["presence_rate"] = round(float(np.mean(ach[pos] >= presence_fraction * req[pos])), 4) if pos.any() else None
        # false lesions are counted before the clean-up that removes unrequested lesion types
        m["false_lesion_rate_raw"] = round(float(np.mean(raw[~pos] > false_ml)), 4) if (~pos).any() else None
        m["false_lesion_rate"] = round(float(np.mean(ach[~pos] > false_ml)), 4) if (~pos).any() else None
        out[k] = m
    return out


def training_label_maps(train_items: list[dict]) -> list[np.ndarray]:
    """Integer label maps of the training subjects (read once for every realism figure)."""
    return [pv_to_int(load_nifti(item["pv"], "partial-volume map")[0]) for item in train_items]


def volume_wasserstein(samples: list[dict], train_labels: list[np.ndarray], voxel_mm3: float) -> dict:
    """Per-tissue Wasserstein distance (mL) between generated and training label-map volume distributions."""
    gen = [tissue_volumes_ml(s["labels"], voxel_mm3) for s in samples]
    ref = [tissue_volumes_ml(lab, voxel_mm3) for lab in train_labels]
    return {
        lab.key: round(float(wasserstein_distance([g[lab.key] for g in gen], [r[lab.key] for r in ref])), 4)
        for lab in LABELS
    }


def lesion_components(samples: list[dict], train_labels: list[np.ndarray]) -> dict:
    """Per lesion type, the median number of connected components (26-connected) where the lesion is present,
    generated vs training. Why: volume matching reshapes lesions (shrinking can split one, growing can merge
    several); this says whether the delivered lesions keep the training data's make-up. MONAI has no counter."""

    def counts(maps: list[np.ndarray], code: int) -> list[int]:
        return [int(ndimage.label(m == code, structure=NEIGHBOURS_26)[1]) for m in maps if (m == code).any()]

    out = {}
    for key, code in zip(CONDITION_KEYS, LESION_CODES, strict=True):
        gen, ref = counts([s["labels"] for s in samples], code), counts(train_labels, code)
        out[key] = {
            "generated": float(np.median(gen)) if gen else None,
            "training": float(np.median(ref)) if ref else None,
            "n_generated": len(gen),
            "n_training": len(ref),
        }
    return out


def ms_ssim_diversity(samples: list[dict]) -> dict:
    """1 - mean MS-SSIM between consecutive pairs of generated PV maps (higher = more diverse)."""
    if len(samples) < 2:
        return {"ms_ssim_mean": None, "diversity": None, "pairs": 0}
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=5, weights=(0.3, 0.3, 0.4))
    vals = []
    for a, b in zip(samples[:-1], samples[1:], strict=True):
        vals.append(float(metric(torch.from_numpy(a["pv"])[None], torch.from_numpy(b["pv"])[None]).mean()))
    mean = float(np.mean(vals))
    return {"ms_ssim_mean": round(mean, 4), "diversity": round(1.0 - mean, 4), "pairs": len(vals)}


def evaluation_requests(sampler, items: list[dict], voxel_mm3: float, n: int) -> list[dict]:
    """Conditioning requests from held-out subjects' lesion volumes, clipped into the trained range."""
    sampler.load()
    space = sampler.space
    reqs = []
    for item in items:
        vols = pv_condition_ml(load_nifti(item["pv"], "partial-volume map")[0], voxel_mm3)
        req = {}
        for k, v in zip(CONDITION_KEYS, vols, strict=True):
            r = space.ranges[k]
            req[k] = 0.0 if (v <= 0.05 or r is None) else float(np.clip(v, r[0], r[1]))
        try:
            space.check_combination(req)
        except InputError:
            req = dict.fromkeys(CONDITION_KEYS)  # an unseen combination: draw one instead
        reqs.append(req)
    return [reqs[i % len(reqs)] for i in range(n)] if reqs else [dict.fromkeys(CONDITION_KEYS)] * n


# what each sample's record keeps in the evaluation JSON
SAMPLE_FIELDS = (
    "id",
    "seed",
    "requested",
    "achieved",
    "sampled_achieved",
    "raw_achieved",
    "volume_matching",
    "retries",
    "verified",
)


def sampling_summary(samples: list[dict], seconds: float) -> dict:
    """The sampler's settings and its cost, verification rate and retries over `samples`."""
    return {
        "sampler": samples[0]["sampler"],
        "steps": samples[0]["steps"],
        "guidance_scale": samples[0]["guidance_scale"],
        "num_samples": len(samples),
        "mean_time_s": round(seconds / len(samples), 3),
        "verified_rate": round(float(np.mean([s["verified"] for s in samples])), 4),
        "mean_retries": round(float(np.mean([s["retries"] for s in samples])), 3),
    }


def print_summary(result: dict) -> None:
    print("reconstruction Dice:", result["reconstruction_dice"])
    for k, m in result["conditioning"].items():
        print(f"{k}: {m}")
    print("volume Wasserstein (mL):", result["volume_wasserstein_ml"])
    print(
        "lesion components (median, generated vs training):",
        {k: (v["generated"], v["training"]) for k, v in result["lesion_components"].items()},
    )
    print("diversity:", result["diversity"], "| sampling:", result["sampling"])


def evaluate(
    sampler,
    autoencoder,
    autoencoder_path: str,
    datalist: str,
    output_file: str,
    profile: str = "default",
    device="cpu",
    num_samples: int = 20,
    seed: int = 1000,
    eval_split: str = "validation",
    limit: int | None = None,
    train_limit: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Run every evaluation, print a summary and save it as JSON (refuses to overwrite unless asked)."""
    out_path = Path(output_file)
    if out_path.exists() and not overwrite:
        raise InputError(f"output_file {str(out_path)!r} exists; accepted: a new path or --overwrite true")
    prof = get_profile(profile)
    eval_items = load_datalist(datalist, eval_split, ("pv",), limit)
    train_items = load_datalist(datalist, "training", ("pv",), train_limit)
    sampler.load()
    t0 = time.perf_counter()
    result: dict[str, Any] = {"profile": prof.name, "datalist": str(datalist), "split": eval_split}
    result["reconstruction_dice"] = reconstruction_dice(autoencoder, autoencoder_path, eval_items, device)
    t1 = time.perf_counter()
    samples = []
    for i, req in enumerate(evaluation_requests(sampler, eval_items, prof.voxel_mm3, num_samples)):
        samples.extend(sampler(num_samples=1, seed=seed + i, **req))
    t2 = time.perf_counter()
    result["conditioning"] = conditioning_metrics(samples)
    train_labels = training_label_maps(train_items)
    result["volume_wasserstein_ml"] = volume_wasserstein(samples, train_labels, prof.voxel_mm3)
    result["lesion_components"] = lesion_components(samples, train_labels)
    result["diversity"] = ms_ssim_diversity(samples)
    result["sampling"] = sampling_summary(samples, t2 - t1)
    result["samples"] = [{k: s[k] for k in SAMPLE_FIELDS if k in s} for s in samples]
    result["time_s"] = {
        "reconstruction": round(t1 - t0, 1),
        "sampling": round(t2 - t1, 1),
        "total": round(time.perf_counter() - t0, 1),
    }
    save_json(out_path, result)
    print_summary(result)
    print(f"saved {out_path}")
    return result
