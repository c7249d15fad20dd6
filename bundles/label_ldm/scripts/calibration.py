"""Volume calibration of the autoencoder's decoder: one offset per label added to the decoder's output logits (the
bias of its last convolution), fitted so that on the training maps each label's reconstructed volume (the integer
map the sampler delivers, `brainspade.labels.pv_to_int`) equals its true volume.

Why: the shipped decoder was trained with a class-weighted Dice-focal loss, which rewards recall on the small
classes. Its maps inflate them: encoding and decoding held-out maps, with no diffusion model involved, gives CSF
+4.3 SD, deep grey matter +7.9 SD and WMH x2.3 in volume, and every sampled map inherits this. A fine-tune of the
decoder with an unweighted cross-entropy was unstable at this network size (after 200 iterations deep grey matter
and brainstem had swapped most of their voxels). A per-label offset moves only where classes tie, changes neither
the latent space (the diffusion model trained on it stays valid) nor the decoder's features, and is fitted in a
minute. MONAI has no calibration of this kind, hence this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainspade.errors import InputError
from brainspade.io import load_nifti
from brainspade.labels import LABELS, NUM_LABELS, pv_to_int

from .data import load_datalist
from .weights import export_autoencoder, load_weights, unwrap


@torch.no_grad()
def reconstruction_logits(autoencoder: torch.nn.Module, items: list[dict], device="cpu"):
    """Yield (pv, decoder logits as a float32 array) per subject: decode(encode(pv)) from the latent mean, which
    the sampler's latents stand for. The one encode/decode loop of the calibration and the evaluation."""
    ae = unwrap(autoencoder).to(device).eval()
    for item in items:
        pv, _ = load_nifti(item["pv"], "partial-volume map")
        z_mu, _ = ae.encode(torch.from_numpy(pv)[None].to(device))
        yield pv, ae.decode(z_mu)[0].float().cpu().numpy()


def decoder_logits(
    autoencoder: torch.nn.Module, items: list[dict], device="cpu"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(decoder logits as float16, true integer map) per subject, held in memory for the fit."""
    return [(lg.astype(np.float16), pv_to_int(pv)) for pv, lg in reconstruction_logits(autoencoder, items, device)]


def label_volumes(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Voxels per label of the integer map of softmax(logits + offsets)."""
    z = logits.astype(np.float32) + offsets.astype(np.float32)[:, None, None, None]
    z -= z.max(0, keepdims=True)
    p = np.exp(z)
    p /= p.sum(0, keepdims=True)
    return np.bincount(pv_to_int(p).ravel(), minlength=NUM_LABELS)


def fit_label_offsets(pairs: list[tuple[np.ndarray, np.ndarray]], iterations: int, step: float = 1.0) -> dict:
    """Offsets (one per label, background fixed at 0) with which the pooled reconstructed volume of each label
    matches its pooled true volume: a fixed-point iteration, offset_c += step * log(true_c / reconstructed_c).
    -> {"offsets", "true_voxels", "before_voxels", "after_voxels", "iterations"}."""
    if not pairs:
        raise InputError(
            "volume calibration needs at least one training map; accepted: a datalist with a training split"
        )
    true = sum(np.bincount(lab.ravel(), minlength=NUM_LABELS) for _, lab in pairs).astype(np.float64)
    offsets = np.zeros(NUM_LABELS)
    before = None
    for _ in range(int(iterations)):
        rec = sum(label_volumes(lg, offsets) for lg, _ in pairs).astype(np.float64)
        before = rec if before is None else before
        offsets += step * np.where(true > 0, np.log((true + 1.0) / (rec + 1.0)), 0.0)
        offsets -= offsets[0]  # softmax ignores a common shift: anchor the background
    after = sum(label_volumes(lg, offsets) for lg, _ in pairs).astype(np.float64)
    return {
        "offsets": offsets,
        "true_voxels": true,
        "before_voxels": before,
        "after_voxels": after,
        "iterations": int(iterations),
    }


def apply_label_offsets(autoencoder: torch.nn.Module, offsets) -> torch.nn.Module:
    """Add the offsets to the bias of the decoder's last convolution (MONAI AutoencoderKL: decoder.blocks[-1])."""
    conv = unwrap(autoencoder).decoder.blocks[-1].conv
    with torch.no_grad():
        conv.bias += torch.as_tensor(np.asarray(offsets), dtype=conv.bias.dtype, device=conv.bias.device)
    return autoencoder


def calibrate_autoencoder(
    autoencoder: torch.nn.Module,
    autoencoder_path: str,
    datalist: str,
    output_path: str,
    version: str,
    profile: str,
    limit: int | None,
    iterations: int,
    device="cpu",
) -> dict:
    """Fit the label offsets on (the first `limit` of) the training maps, add them to the decoder and export the
    autoencoder to `output_path` (never over its input). Prints and returns the per-label volumes before and after."""
    if Path(output_path).resolve() == Path(autoencoder_path).resolve():
        raise InputError(f"output_path {output_path!r} is the input weights file; accepted: another path")
    load_weights(autoencoder, autoencoder_path, "autoencoder", "cpu", "autoencoder weights")
    items = load_datalist(datalist, "training", ("pv",), limit)
    fit = fit_label_offsets(decoder_logits(autoencoder, items, device), iterations)
    apply_label_offsets(autoencoder, fit["offsets"])
    export_autoencoder(autoencoder, output_path, version, profile)
    report = {
        lab.key: {
            "offset": round(float(fit["offsets"][lab.code]), 4),
            "volume_ratio_before": _ratio(fit["before_voxels"], fit["true_voxels"], lab.code),
            "volume_ratio_after": _ratio(fit["after_voxels"], fit["true_voxels"], lab.code),
        }
        for lab in LABELS
    }
    for key, row in report.items():
        print(
            f"{key:<11} offset {row['offset']:+.3f}  volume / true {row['volume_ratio_before']} -> "
            f"{row['volume_ratio_after']}"
        )
    return {"labels": report, "subjects": len(items), "iterations": fit["iterations"], "output_path": str(output_path)}


def _ratio(volumes: np.ndarray, true: np.ndarray, code: int) -> float | None:
    return round(float(volumes[code] / true[code]), 4) if true[code] > 0 else None
