"""Trim each requested lesion of a sampled label map to the requested volume, within the verification bounds.

Why: the diffusion model follows volume requests only approximately (after a CPU-scale training, achieved tumour
parts scatter around the request), and verification can only choose the closest of a few samples. This step then
moves each lesion's boundary along the model's own lesion probability (smoothed, so the boundary stays compact)
until its voxel count equals the request. It only trims: a lesion further off than the verification bounds
(x0.5-x2) or absent is left as sampled (and verification reports it), no lesion is created, and no voxel outside
the brain becomes lesion. Tumour parts are matched inner to outer (core, enhancing, oedema), each taking voxels only
from tissue and from parts not matched yet, so every matched volume stays exact. MONAI has no such operation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from brainspade.labels import CONDITION_KEYS, LESION_CODES, pv_to_int

# inner to outer: a growing core takes enhancing voxels, which the enhancing step then takes back from oedema
_ORDER = ("tumour_ml", "enhancing_ml", "oedema_ml", "wmh_ml")


def _relabel(pv: np.ndarray, labels: np.ndarray, flat_idx: np.ndarray, new: np.ndarray | int) -> None:
    """Give the voxels `flat_idx` the labels `new`: the old label's fraction moves to the new label (partial volumes
    elsewhere in the voxel are kept); voxels where that is not enough for `pv_to_int` become one-hot."""
    coords = np.unravel_index(flat_idx, labels.shape)
    old = labels[coords].astype(np.int64)
    new = np.broadcast_to(np.asarray(new, dtype=np.int64), old.shape)
    pv[(new, *coords)] += pv[(old, *coords)]
    pv[(old, *coords)] = 0.0
    labels[coords] = new


def match_lesion_volumes(pv: np.ndarray, requested_ml: Mapping[str, float], voxel_mm3: float, brain: np.ndarray,
                         min_ratio: float = 0.5, max_ratio: float = 2.0, sigma: float = 1.0) -> tuple[np.ndarray, dict]:
    """-> (pv with matched lesions, {key: 'matched' | 'absent' | 'too far off (x<ratio>)' | 'not requested'}).

    `brain`: where lesions may grow (the sampler's brain mask). Ratios are achieved / requested, as in verification.
    """
    pv = pv.astype(np.float32, copy=True)
    labels = pv_to_int(pv).astype(np.int64)
    code_of = dict(zip(CONDITION_KEYS, LESION_CODES))
    voxel_ml = voxel_mm3 / 1000.0
    unrequested = [code_of[k] for k in CONDITION_KEYS if not requested_ml.get(k)]
    # decided on the sampled map, before anything moves: lesions left as sampled are never taken from or given to
    status, targets = {}, {}
    for key in _ORDER:
        req = float(requested_ml.get(key) or 0.0)
        n, target = int((labels == code_of[key]).sum()), max(1, int(round(req / voxel_ml)))
        if req <= 0:
            status[key] = "not requested"
        elif n == 0:
            status[key] = "absent"
        elif not min_ratio <= n / target <= max_ratio:
            status[key] = f"too far off (x{n / target:.2f})"
        else:
            targets[key] = target
    done = [code_of[k] for k in CONDITION_KEYS if requested_ml.get(k) and k not in targets]
    for key, target in targets.items():
        code = code_of[key]
        current = labels == code
        n = int(current.sum())
        score = ndimage.gaussian_filter(pv[code], sigma)
        if target > n:  # grow into the most lesion-like tissue (or later tumour part) voxels
            free = brain & ~current & ~np.isin(labels, done + unrequested)
            cand = np.flatnonzero(free)
            take = cand[np.argsort(-score.ravel()[cand], kind="stable")[: target - n]]
            _relabel(pv, labels, take, code)
        elif target < n:  # give the least lesion-like voxels to their most likely other label
            cand = np.flatnonzero(current)
            give = cand[np.argsort(score.ravel()[cand], kind="stable")[: n - target]]
            allowed = np.ones(len(pv), dtype=bool)
            allowed[[code, *done, *unrequested]] = False
            frac = pv.reshape(len(pv), -1)[:, give]
            new = np.flatnonzero(allowed)[frac[allowed].argmax(0)]
            _relabel(pv, labels, give, new)
        done.append(code)
        status[key] = "matched"
    # fractions moved so that pv_to_int gives `labels`; where the 0.3 lesion rule still disagrees, one-hot
    off = np.flatnonzero(pv_to_int(pv).ravel() != labels.ravel())
    if len(off):
        flat = pv.reshape(len(pv), -1)
        flat[:, off] = 0.0
        flat[labels.ravel()[off], off] = 1.0
    return pv, {k: status[k] for k in CONDITION_KEYS}
