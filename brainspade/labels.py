"""The one label table of the project: integer codes, names, and the 10-channel partial-volume form.

Integer form: (X, Y, Z) ints 0..9. Partial-volume (PV) form: (10, X, Y, Z) floats, channel k = fraction of
the voxel occupied by label k, channels summing to 1. The lesion labels and the conditioning ids
(`wmh_ml`, ...) are derived from this table, never spelled out elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Label:
    code: int
    name: str
    key: str  # short machine name
    lesion: bool = False


LABELS: tuple[Label, ...] = (
    Label(0, "background", "background"),
    Label(1, "cerebrospinal fluid", "csf"),
    Label(2, "grey matter", "gm"),
    Label(3, "white matter", "wm"),
    Label(4, "deep grey matter", "dgm"),
    Label(5, "brainstem", "brainstem"),
    Label(6, "white-matter hyperintensity", "wmh", lesion=True),
    Label(7, "tumour core (non-enhancing/necrotic)", "tumour", lesion=True),
    Label(8, "oedema", "oedema", lesion=True),
    Label(9, "enhancing tumour", "enhancing", lesion=True),
)
NUM_LABELS = len(LABELS)
LABEL_CODES = {lab.key: lab.code for lab in LABELS}
LABEL_NAMES = {lab.code: lab.name for lab in LABELS}
LESIONS: tuple[str, ...] = tuple(lab.key for lab in LABELS if lab.lesion)
LESION_CODES: tuple[int, ...] = tuple(lab.code for lab in LABELS if lab.lesion)
TUMOUR_PARTS: tuple[str, ...] = ("tumour", "oedema", "enhancing")
# Conditioning ids users type on the command line, in millilitres, in a fixed order.
CONDITION_KEYS: tuple[str, ...] = tuple(f"{k}_ml" for k in LESIONS)


def foreground_keys(exclude: Sequence[str] = ()) -> list[str]:
    """Keys of every label but background, less `exclude` (e.g. the labels a training set never shows)."""
    return [lab.key for lab in LABELS[1:] if lab.key not in set(exclude)]


def per_label(default: float = 1.0, **by_key: float) -> list[float]:
    """One value per label code, in code order: `default`, or the value given by key (`per_label(1, wmh=2)`).
    Per-label lists in configs (crop ratios, loss weights) are written this way, never as bare lists."""
    unknown = set(by_key) - set(LABEL_CODES)
    if unknown:
        raise InputError(f"unknown label key(s) {sorted(unknown)}; accepted: {', '.join(LABEL_CODES)}")
    return [float(by_key.get(lab.key, default)) for lab in LABELS]


def check_int_labels(labels: np.ndarray, what: str = "label map") -> np.ndarray:
    """Reject values outside the table; return the labels as int16."""
    arr = np.asarray(labels)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or infinite values; accepted: integer labels 0..{NUM_LABELS - 1}")
    rounded = np.rint(arr)
    if np.any(np.abs(arr - rounded) > 1e-3):
        raise InputError(
            f"{what} has non-integer values; accepted: integer labels 0..{NUM_LABELS - 1} "
            f"or a {NUM_LABELS}-channel partial-volume map"
        )
    bad = np.setdiff1d(np.unique(rounded), np.arange(NUM_LABELS))
    if bad.size:
        raise InputError(
            f"{what} has label values {bad[:10].astype(int).tolist()} outside the label table; "
            f"accepted: 0..{NUM_LABELS - 1} ({', '.join(lab.key for lab in LABELS)})"
        )
    return rounded.astype(np.int16)


def int_to_pv(labels: np.ndarray) -> np.ndarray:
    """Integer map (X, Y, Z) -> one-hot partial-volume map (10, X, Y, Z) float32."""
    lab = check_int_labels(labels)
    return (np.arange(NUM_LABELS).reshape(-1, *([1] * lab.ndim)) == lab[None]).astype(np.float32)


def normalise_pv(pv: np.ndarray) -> np.ndarray:
    """Clip negatives and rescale so channels sum to 1 (empty voxels become background)."""
    pv = np.clip(np.asarray(pv, dtype=np.float32), 0.0, None)
    total = pv.sum(0, keepdims=True)
    empty = total[0] <= 1e-6
    pv = pv / np.maximum(total, 1e-6)
    pv[0][empty] = 1.0
    return pv


# a partial-volume map's channels must sum to 1 per voxel within this (uint8 storage rounds each of 10 channels
# by up to 1/510)
PV_SUM_TOLERANCE = 0.05


def check_pv(pv: np.ndarray, what: str = "partial-volume map") -> np.ndarray:
    arr = np.asarray(pv, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[0] != NUM_LABELS:
        raise InputError(f"{what} has shape {tuple(arr.shape)}; accepted: ({NUM_LABELS}, X, Y, Z)")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or infinite values")
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise InputError(
            f"{what} has values outside [0, 1] ({arr.min():.3g}..{arr.max():.3g}); accepted: fractions in [0, 1]"
        )
    total = arr.sum(0)
    off = np.abs(total - 1.0) > PV_SUM_TOLERANCE
    if off.any():
        raise InputError(
            f"{what} has channels that do not sum to 1 in {int(off.sum())} voxels (sums "
            f"{float(total.min()):.3g}..{float(total.max()):.3g}); accepted: {NUM_LABELS} fractions summing "
            f"to 1 per voxel (within {PV_SUM_TOLERANCE}), background included"
        )
    return normalise_pv(arr)


def pv_to_int(pv: np.ndarray) -> np.ndarray:
    """Partial-volume map (10, X, Y, Z) -> integer map (argmax) int16.

    Lesion channels win a voxel once they hold at least 0.3 of it: small lesions would otherwise
    vanish in a plain argmax at 2 mm, and lesion presence is what users ask for.
    """
    arr = np.asarray(pv)
    lab = arr.argmax(0).astype(np.int16)
    lesion = arr[list(LESION_CODES)]
    strongest = lesion.argmax(0)
    win = lesion.max(0) >= 0.3
    lab[win] = np.asarray(LESION_CODES, dtype=np.int16)[strongest[win]]
    return lab


def lesion_volumes_ml(pv_or_labels: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    """Lesion volumes in mL keyed by CONDITION_KEYS, from a PV map (sum of fractions) or integer map."""
    arr = np.asarray(pv_or_labels)
    out = {}
    for key, code in zip(CONDITION_KEYS, LESION_CODES, strict=True):
        vox = float(arr[code].sum()) if arr.ndim == 4 else float((arr == code).sum())
        out[key] = vox * voxel_mm3 / 1000.0
    return out


def tissue_volumes_ml(pv_or_labels: np.ndarray, voxel_mm3: float) -> dict[str, float]:
    """Volume of every label in mL, keyed by label key."""
    arr = np.asarray(pv_or_labels)
    out = {}
    for lab in LABELS:
        vox = float(arr[lab.code].sum()) if arr.ndim == 4 else float((arr == lab.code).sum())
        out[lab.key] = vox * voxel_mm3 / 1000.0
    return out
