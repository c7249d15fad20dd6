"""Evaluation of the label LDM: autoencoder reconstruction, conditioning accuracy, realism, diversity, each figure for
the network alone (no volume matching, no retries) and for the delivered maps (the sampler's default settings) side
by side, with the training maps' own figure where one applies.

Metrics come from MONAI (`compute_dice`, `MultiScaleSSIMMetric`) and SciPy (`spearmanr`, `wasserstein_distance`,
`ndimage.label`, `binary_fill_holes`, `distance_transform_edt`); this module arranges the data for them and defines
the anatomy figures MONAI has no metric for (enclosed background, lesions outside the parenchyma, tumour nesting).
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
from brainspade.labels import CONDITION_KEYS, LABEL_CODES, LABELS, LESION_CODES, int_to_pv, pv_to_int, tissue_volumes_ml
from brainspade.profiles import get_profile

from .calibration import reconstruction_logits
from .data import load_datalist, pv_condition_ml
from .lesion_cleanup import enclosed_background
from .volume_matching import NEIGHBOURS_26, PRESENCE_FRACTION
from .weights import load_weights


def reconstruct(autoencoder, autoencoder_path: str, items: list[dict], device):
    """Yield (pv, softmax(decode(encode(pv)))) per subject: the autoencoder alone, as every sample passes through it."""
    load_weights(autoencoder, autoencoder_path, "autoencoder", "cpu", "autoencoder weights")
    for pv, logits in reconstruction_logits(autoencoder, items, device):
        yield pv, torch.softmax(torch.from_numpy(logits), 0).numpy()


def reconstruction_figures(
    autoencoder, autoencoder_path: str, items: list[dict], device, voxel_mm3: float, train_labels: list[np.ndarray]
) -> dict:
    """What the autoencoder alone does to the maps (the ceiling of the diffusion model, which draws in its latent
    space), on held-out subjects: Dice per label of argmax(reconstruction) vs the subject's labels (mean where
    present); per label the mean volume change, reconstructed minus true, in SDs of the true volumes across the
    subjects (`volume_bias_sd`: a systematic inflation the network inherits); per lesion type Spearman and median
    relative error of reconstructed vs true volumes; the reconstructions' tissue volumes against the training
    maps (W1 / SD) and their anatomy figures, as for the samples."""
    scores, true_vols, rec_vols, records = [], [], [], []
    for pv, rec in reconstruct(autoencoder, autoencoder_path, items, device):
        labels, rec_labels = pv_to_int(pv), pv_to_int(rec)
        y_pred, y = torch.from_numpy(int_to_pv(rec_labels))[None], torch.from_numpy(int_to_pv(labels))[None]
        scores.append(compute_dice(y_pred, y, include_background=True, ignore_empty=True)[0].numpy())
        true_vols.append(tissue_volumes_ml(labels, voxel_mm3))
        rec_vols.append(tissue_volumes_ml(rec_labels, voxel_mm3))
        records.append(anatomy_record(rec, rec_labels, voxel_mm3))
    arr = np.stack(scores)
    dice = {
        lab.key: (None if np.all(np.isnan(arr[:, lab.code])) else round(float(np.nanmean(arr[:, lab.code])), 4))
        for lab in LABELS
    }
    bias = {}
    for lab in LABELS:
        t, r = np.array([v[lab.key] for v in true_vols]), np.array([v[lab.key] for v in rec_vols])
        bias[lab.key] = round(float(np.mean(r - t) / t.std()), 4) if t.std() > 0 else None
    lesions = {}
    for key, lab in zip(CONDITION_KEYS, (LABELS[c] for c in LESION_CODES), strict=True):
        t, r = np.array([v[lab.key] for v in true_vols]), np.array([v[lab.key] for v in rec_vols])
        pos = t > 0
        rho, err = _agreement(t[pos], r[pos])
        lesions[key] = {"spearman": rho, "median_rel_error": err, "n_present": int(pos.sum())}
    ref = [tissue_volumes_ml(lab, voxel_mm3) for lab in train_labels]
    return {
        "dice": dice,
        "volume_bias_sd": bias,
        "lesions": lesions,
        "tissue_w1_over_sd": tissue_volume_distance(rec_vols, ref),
        **anatomy_figures(records),
        "n_subjects": len(items),
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


# the healthy labels (background, CSF, the four parenchyma tissues) and the tissues whose volumes are compared
HEALTHY_CODES = tuple(lab.code for lab in LABELS if not lab.lesion)
TISSUES = ("csf", "gm", "wm", "dgm", "brainstem")
OUTSIDE_PARENCHYMA = (LABEL_CODES["background"], LABEL_CODES["csf"])
# tumour parts from the inside out: core, enhancing rim, oedema
NESTING_ORDER = tuple(LABEL_CODES[k] for k in ("tumour", "enhancing", "oedema"))


def enclosed_background_ml(labels: np.ndarray, voxel_mm3: float) -> float:
    """Background enclosed by the brain (mL): `lesion_cleanup.enclosed_background`, the rule the sampler fills."""
    return float(enclosed_background(labels).sum()) * voxel_mm3 / 1000.0


def lesion_voxels_outside_parenchyma(pv: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """-> (lesion voxels lying outside the parenchyma, lesion voxels) of one map.

    The tissue under a lesion voxel (integer label WMH, core, oedema or enhancing) is its most abundant healthy
    partial-volume fraction (background, CSF, GM, WM, DGM, brainstem); where the voxel holds no healthy fraction
    (all < 1e-3 in total), the label of the nearest non-lesion voxel (Euclidean). Outside the parenchyma = that
    tissue is background or CSF: lesions drawn in the ventricles or the CSF spaces."""
    lesion = np.isin(labels, LESION_CODES)
    n = int(lesion.sum())
    if n == 0:
        return 0, 0
    healthy = pv[list(HEALTHY_CODES)][:, lesion]
    under = np.asarray(HEALTHY_CODES)[healthy.argmax(0)]
    bare = healthy.sum(0) < 1e-3
    if bare.any():
        idx = ndimage.distance_transform_edt(lesion, return_distances=False, return_indices=True)
        under = np.where(bare, labels[tuple(idx)][lesion], under)
    return int(np.isin(under, OUTSIDE_PARENCHYMA).sum()), n


def tumour_nested(labels: np.ndarray) -> bool | None:
    """Whether the tumour parts of a map are nested, core inside enhancing inside oedema; None without a tumour.

    Depth of a tumour voxel = its Euclidean distance (voxels) to the nearest voxel outside the tumour (core, enhancing
    and oedema together). Nested = the median depths of the parts present never increase outwards: core >= enhancing
    >= oedema. A core at the tumour's edge (e.g. straddling a ventricle) or oedema inside the rim fails; the rule
    needs no complete shell (the training phantoms' oedema follows white matter and leaves the rim bare elsewhere)."""
    tumour = np.isin(labels, NESTING_ORDER)
    if not tumour.any():
        return None
    depth = ndimage.distance_transform_edt(tumour)
    med = [float(np.median(depth[labels == c])) for c in NESTING_ORDER if (labels == c).any()]
    return all(a >= b for a, b in zip(med[:-1], med[1:], strict=True))


def tissue_volume_distance(gen: list[dict], ref: list[dict]) -> dict:
    """Per tissue (CSF, GM, WM, DGM, brainstem): Wasserstein-1 between generated and training volumes (mL), divided
    by the training volumes' SD (None where that SD is 0). Inputs: `tissue_volumes_ml` dicts."""
    out = {}
    for key in TISSUES:
        g, r = [v[key] for v in gen], [v[key] for v in ref]
        sd = float(np.std(r))
        out[key] = None if sd == 0 or not g else round(float(wasserstein_distance(g, r)) / sd, 4)
    return out


def anatomy_record(pv: np.ndarray, labels: np.ndarray, voxel_mm3: float) -> tuple:
    """One map's (enclosed background mL, lesion voxels outside the parenchyma, lesion voxels, tumour nested)."""
    out, n = lesion_voxels_outside_parenchyma(pv, labels)
    return enclosed_background_ml(labels, voxel_mm3), out, n, tumour_nested(labels)


def anatomy_figures(records: list[tuple]) -> dict:
    """From `anatomy_record`s: enclosed background (mL per map: mean and max), the share of lesion voxels outside
    the parenchyma (pooled over the maps) and the tumour nesting rate (over the maps with a tumour)."""
    enclosed = [r[0] for r in records]
    outside, lesion = sum(r[1] for r in records), sum(r[2] for r in records)
    nested = [r[3] for r in records if r[3] is not None]
    return {
        "enclosed_background_ml": round(float(np.mean(enclosed)), 4) if enclosed else None,
        "enclosed_background_ml_max": round(float(np.max(enclosed)), 4) if enclosed else None,
        "lesion_outside_parenchyma": round(outside / lesion, 4) if lesion else None,
        "tumour_nested_rate": round(float(np.mean(nested)), 4) if nested else None,
        "n_tumour_maps": len(nested),
    }


def training_reference(train_items: list[dict], voxel_mm3: float) -> tuple[list[np.ndarray], dict]:
    """Integer label maps of the training subjects and their anatomy figures (each map read once; the partial
    volumes are not kept)."""
    labels, records = [], []
    for item in train_items:
        pv = load_nifti(item["pv"], "partial-volume map")[0]
        labels.append(pv_to_int(pv))
        records.append(anatomy_record(pv, labels[-1], voxel_mm3))
    return labels, anatomy_figures(records)


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
    "match_mode",
    "retries",
    "verified",
)
# the two samplings compared, on the same requests and seeds: the network alone (no volume matching, no retries;
# the clean-up stays) and the maps the sampler delivers with its settings (verification, retries, trim)
VARIANTS = {"network_alone": {"match_volumes": False, "max_retries": 0}, "delivered": {}}
CONDITIONING_FIGURES = ("spearman", "median_rel_error", "presence_rate", "false_lesion_rate_raw", "false_lesion_rate")
ANATOMY_FIGURES = ("enclosed_background_ml", "lesion_outside_parenchyma", "tumour_nested_rate")


def sampling_summary(samples: list[dict], seconds: float) -> dict:
    """The sampler's settings and its cost, verification rate and retries over `samples`."""
    return {
        "sampler": samples[0]["sampler"],
        "steps": samples[0]["steps"],
        "guidance_scale": samples[0]["guidance_scale"],
        "match_mode": samples[0].get("match_mode"),
        "num_samples": len(samples),
        "mean_time_s": round(seconds / len(samples), 3),
        "verified_rate": round(float(np.mean([s["verified"] for s in samples])), 4),
        "mean_retries": round(float(np.mean([s["retries"] for s in samples])), 3),
    }


def sample_figures(samples: list[dict], train_labels: list[np.ndarray], voxel_mm3: float, seconds: float) -> dict:
    """Every figure of one sampling: conditioning, tissue volumes against the training maps, anatomy, lesion
    pieces, diversity, cost."""
    gen = [tissue_volumes_ml(s["labels"], voxel_mm3) for s in samples]
    ref = [tissue_volumes_ml(lab, voxel_mm3) for lab in train_labels]
    return {
        "conditioning": conditioning_metrics(samples),
        "tissue_w1_over_sd": tissue_volume_distance(gen, ref),
        "volume_wasserstein_ml": volume_wasserstein(samples, train_labels, voxel_mm3),
        **anatomy_figures([anatomy_record(s["pv"], s["labels"], voxel_mm3) for s in samples]),
        "lesion_components": lesion_components(samples, train_labels),
        "diversity": ms_ssim_diversity(samples),
        "sampling": sampling_summary(samples, seconds),
    }


def side_by_side(result: dict) -> dict:
    """{figure: {'network_alone': v, 'delivered': v[, 'autoencoder': v][, 'training': v]}} for every figure the
    targets name; `autoencoder` is the reconstructions' own figure (held-out maps through the autoencoder alone: the
    ceiling the network draws under), where one applies."""
    rec = result["reconstruction"]
    rows: dict[str, dict] = {}
    for key in CONDITION_KEYS:
        for fig in CONDITIONING_FIGURES:
            rows[f"{key} {fig}"] = {v: result[v]["conditioning"][key][fig] for v in VARIANTS}
            if fig in rec["lesions"][key]:
                rows[f"{key} {fig}"]["autoencoder"] = rec["lesions"][key][fig]
    for key in TISSUES:
        rows[f"{key} volume W1/SD"] = {
            **{v: result[v]["tissue_w1_over_sd"][key] for v in VARIANTS},
            "autoencoder": rec["tissue_w1_over_sd"][key],
        }
    for fig in ANATOMY_FIGURES:
        rows[fig] = {
            **{v: result[v][fig] for v in VARIANTS},
            "autoencoder": rec[fig],
            "training": result["training"][fig],
        }
    for fig in ("verified_rate", "mean_retries", "mean_time_s"):
        rows[fig] = {v: result[v]["sampling"][fig] for v in VARIANTS}
    return rows


SUMMARY_COLUMNS = {
    "network_alone": "network alone",
    "delivered": "delivered",
    "autoencoder": "autoencoder",
    "training": "training",
}


def print_summary(result: dict) -> None:
    print("reconstruction Dice:", result["reconstruction_dice"])
    print("reconstruction volume bias (SD):", result["reconstruction"]["volume_bias_sd"])
    print(f"{'figure':<40}" + "".join(f"{title:>15}" for title in SUMMARY_COLUMNS.values()))
    for name, row in result["side_by_side"].items():
        cells = [row.get(k) for k in SUMMARY_COLUMNS]
        print(f"{name:<40}" + "".join(f"{'-' if c is None else c:>15}" for c in cells))


def draw(sampler, requests: list[dict], seed: int, **settings) -> tuple[list[dict], float]:
    """One sample per request (seed + its index), with `settings` over the sampler's; -> (samples, seconds)."""
    t0 = time.perf_counter()
    samples = [s for i, req in enumerate(requests) for s in sampler(num_samples=1, seed=seed + i, **req, **settings)]
    return samples, time.perf_counter() - t0


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
    """Run every evaluation for the network alone and the delivered maps, print them side by side and save them as
    JSON (refuses to overwrite unless asked)."""
    out_path = Path(output_file)
    if out_path.exists() and not overwrite:
        raise InputError(f"output_file {str(out_path)!r} exists; accepted: a new path or --overwrite true")
    prof = get_profile(profile)
    eval_items = load_datalist(datalist, eval_split, ("pv",), limit)
    train_items = load_datalist(datalist, "training", ("pv",), train_limit)
    sampler.load()
    t0 = time.perf_counter()
    result: dict[str, Any] = {"profile": prof.name, "datalist": str(datalist), "split": eval_split}
    train_labels, result["training"] = training_reference(train_items, prof.voxel_mm3)
    result["reconstruction"] = reconstruction_figures(
        autoencoder, autoencoder_path, eval_items, device, prof.voxel_mm3, train_labels
    )
    result["reconstruction_dice"] = result["reconstruction"]["dice"]
    requests = evaluation_requests(sampler, eval_items, prof.voxel_mm3, num_samples)
    result["samples"], result["time_s"] = {}, {"reconstruction_and_training_maps": round(time.perf_counter() - t0, 1)}
    for name, settings in VARIANTS.items():
        samples, seconds = draw(sampler, requests, seed, **settings)
        result[name] = sample_figures(samples, train_labels, prof.voxel_mm3, seconds)
        result["samples"][name] = [{k: s[k] for k in SAMPLE_FIELDS if k in s} for s in samples]
        result["time_s"][name] = round(seconds, 1)
        del samples  # partial-volume maps: 35 MB each at the default profile
    result["side_by_side"] = side_by_side(result)
    result["time_s"]["total"] = round(time.perf_counter() - t0, 1)
    save_json(out_path, result)
    print_summary(result)
    print(f"saved {out_path}")
    return result
