"""Bring each requested lesion of a sampled label map to the requested volume, to the voxel.

Why: the diffusion model follows volume requests only approximately. Its autoencoder alone already caps how well
volumes rank (decode(encode(x)) of held-out phantoms: tumour-core Spearman 0.71-0.77, small WMH drawn several times
too large; docs/README.md), and verification can only choose the closest of a few samples. So, in the kept sample,
each requested lesion's boundary moves along the model's own lesion probability (smoothed, so it stays compact):

- too large: the least lesion-like voxels (relative to the peak of their own connected part, so that separate WMH
  spots each shrink rather than the faintest vanishing) go to their next most likely allowed label;
- too small: the lesion grows shell by shell (one voxel of dilation at a time, so it stays connected and compact)
  into the most lesion-like voxels of the tissue it may occupy: white matter for WMH, parenchyma or a tumour part
  not matched yet for tumour parts. It never grows outside the brain, into CSF, or into a lesion already matched.

An absent lesion is never created, nor one drawn at under a fifth of its request grown (PRESENCE_FRACTION;
verification reports both). Tumour parts are matched inner to outer (core,
enhancing, oedema), so a growing core may take enhancing voxels that the enhancing step then takes back from
oedema, and every matched volume stays exact. The status records the sampled size (x achieved / requested).
MONAI has no such operation.

By default this is a final trim (`trim_lesion_volumes`, the sampler's `match_mode: trim`): a lesion's volume may move
by at most `tolerance` (0.25: +-25 %) of its sampled volume; the sampler resamples a map further off (bounded retries)
and delivers one still outside as sampled, unverified. `match_mode: full` is the whole edit, whatever the ratio.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from brainspade.labels import CONDITION_KEYS, LABEL_CODES, LESION_CODES, pv_to_int

# inner to outer: a growing core takes enhancing voxels, which the enhancing step then takes back from oedema
_ORDER = ("tumour_ml", "enhancing_ml", "oedema_ml", "wmh_ml")
# what counts as one lesion piece, here, in the sampler's speck rule and in the evaluation's piece count
NEIGHBOURS_26 = np.ones((3, 3, 3), dtype=bool)
# below this share of its request a lesion counts as not drawn (the evaluation's presence rule): matching leaves it
# as sampled rather than growing most of it from a few voxels
PRESENCE_FRACTION = 0.2
_PARENCHYMA = tuple(LABEL_CODES[k] for k in ("gm", "wm", "dgm", "brainstem"))
# healthy tissue each lesion type may grow into (lesion labels not matched yet are added per step)
_GROWS_INTO = {
    "wmh_ml": (LABEL_CODES["wm"],),
    "tumour_ml": _PARENCHYMA,
    "enhancing_ml": _PARENCHYMA,
    "oedema_ml": _PARENCHYMA,
}


def _relabel(pv: np.ndarray, labels: np.ndarray, flat_idx: np.ndarray, new: np.ndarray | int) -> None:
    """Give the voxels `flat_idx` the labels `new`: the old label's fraction moves to the new label (partial volumes
    elsewhere in the voxel are kept); voxels where that is not enough for `pv_to_int` become one-hot."""
    coords = np.unravel_index(flat_idx, labels.shape)
    old = labels[coords].astype(np.int64)
    new = np.broadcast_to(np.asarray(new, dtype=np.int64), old.shape)
    pv[(new, *coords)] += pv[(old, *coords)]
    pv[(old, *coords)] = 0.0
    labels[coords] = new


def _grow(
    pv: np.ndarray,
    labels: np.ndarray,
    code: int,
    need: int,
    score: np.ndarray,
    free_labels: list[int],
    brain: np.ndarray,
) -> int:
    """Grow lesion `code` by `need` voxels, one dilation shell at a time, taking each shell's most lesion-like
    voxels among `free_labels` inside `brain`. -> voxels still missing (0 unless the lesion is walled in)."""
    struct = ndimage.generate_binary_structure(3, 1)
    while need > 0:
        shell = ndimage.binary_dilation(labels == code, struct) & brain & np.isin(labels, free_labels)
        cand = np.flatnonzero(shell)
        if len(cand) == 0:
            break
        take = cand if len(cand) <= need else cand[np.argsort(-score.ravel()[cand], kind="stable")[:need]]
        _relabel(pv, labels, take, code)
        need -= len(take)
    return need


def _least_lesion_like(lesion: np.ndarray, score: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the `count` lesion voxels with the lowest score relative to their own connected part's peak,
    so that separate lesions (WMH spots) each shrink towards their centre instead of the faintest ones vanishing."""
    comp, n = ndimage.label(lesion, structure=NEIGHBOURS_26)
    peak = np.asarray(ndimage.maximum(score, comp, index=np.arange(1, n + 1)))
    cand = np.flatnonzero(lesion)
    rel = score.ravel()[cand] / np.maximum(peak[comp.ravel()[cand] - 1], 1e-12)
    return cand[np.argsort(rel, kind="stable")[:count]]


def match_lesion_volumes(
    pv: np.ndarray, requested_ml: Mapping[str, float], voxel_mm3: float, brain: np.ndarray, sigma: float = 1.0
) -> tuple[np.ndarray, dict]:
    """-> (pv with matched lesions, {key: 'matched (sampled x<ratio>)' | 'absent' | 'not drawn (sampled x<ratio>)'
    (under PRESENCE_FRACTION of the request) | 'not requested' | 'short by <n> voxels (sampled x<ratio>)'}).

    `brain`: where lesions may grow (the sampler's brain mask). Ratios are sampled / requested, as in verification.
    """
    pv = pv.astype(np.float32, copy=True)
    labels = pv_to_int(pv).astype(np.int64)
    code_of = dict(zip(CONDITION_KEYS, LESION_CODES, strict=True))
    voxel_ml = voxel_mm3 / 1000.0
    unrequested = [code_of[k] for k in CONDITION_KEYS if not requested_ml.get(k)]
    # decided on the sampled map, before anything moves: lesions left as sampled are never taken from or given to
    status, targets = {}, {}
    for key in _ORDER:
        req = float(requested_ml.get(key) or 0.0)
        if req <= 0:
            status[key] = "not requested"
        else:
            n, target = int((labels == code_of[key]).sum()), max(1, int(round(req / voxel_ml)))
            if n == 0:
                status[key] = "absent"
            elif n < PRESENCE_FRACTION * target:
                status[key] = f"not drawn (sampled x{n / target:.2f})"
            else:
                targets[key] = target
    done = [code_of[k] for k in CONDITION_KEYS if requested_ml.get(k) and k not in targets]
    for key, target in targets.items():
        code = code_of[key]
        current = labels == code
        n = int(current.sum())
        ratio = f"sampled x{n / target:.2f}"
        score = ndimage.gaussian_filter(pv[code], sigma)
        short = 0
        if target > n:
            later = [code_of[k] for k in targets if code_of[k] not in done and k != key]
            short = _grow(pv, labels, code, target - n, score, [*_GROWS_INTO[key], *later], brain)
        elif target < n:  # give the least lesion-like voxels to their most likely other label
            give = _least_lesion_like(current, score, n - target)
            allowed = np.ones(len(pv), dtype=bool)
            allowed[[code, *done, *unrequested]] = False
            frac = pv.reshape(len(pv), -1)[:, give]
            new = np.flatnonzero(allowed)[frac[allowed].argmax(0)]
            _relabel(pv, labels, give, new)
        done.append(code)
        status[key] = f"short by {short} voxels ({ratio})" if short else f"matched ({ratio})"
    # fractions moved so that pv_to_int gives `labels`; where the 0.3 lesion rule still disagrees, one-hot
    off = np.flatnonzero(pv_to_int(pv).ravel() != labels.ravel())
    if len(off):
        flat = pv.reshape(len(pv), -1)
        flat[:, off] = 0.0
        flat[labels.ravel()[off], off] = 1.0
    return pv, {k: status[k] for k in CONDITION_KEYS}


def trim_bounds(tolerance: float) -> tuple[float, float]:
    """(lo, hi) of sampled / requested volume within which trimming moves a lesion by at most `tolerance` of its
    sampled volume: the request r lies in [(1 - tol) v, (1 + tol) v] of the sampled v, so v / r lies in
    [1 / (1 + tol), 1 / (1 - tol)] (0.25: 0.8 to 1.333)."""
    tol = float(tolerance)
    return 1.0 / (1.0 + tol), 1.0 / (1.0 - tol)


def trim_lesion_volumes(
    pv: np.ndarray, requested_ml: Mapping[str, float], voxel_mm3: float, brain: np.ndarray, tolerance: float = 0.25
) -> tuple[np.ndarray, dict, bool]:
    """-> (pv, status, within). When every requested lesion is drawn within `trim_bounds(tolerance)` of its request,
    each is brought to the request (`match_lesion_volumes`; its status reads 'trimmed (sampled x<ratio>)'); otherwise
    the map is returned as sampled, each requested lesion's status 'outside +-<tol> % (sampled x<ratio>)' or
    'left as sampled (sampled x<ratio>)', an absent one 'absent', and `within` is False."""
    lo, hi = trim_bounds(tolerance)
    labels = pv_to_int(pv)
    code_of = dict(zip(CONDITION_KEYS, LESION_CODES, strict=True))
    voxel_ml = voxel_mm3 / 1000.0
    ratios = {}
    for key in CONDITION_KEYS:
        req = float(requested_ml.get(key) or 0.0)
        if req > 0:
            ratios[key] = int((labels == code_of[key]).sum()) / max(1, int(round(req / voxel_ml)))
    if all(lo <= r <= hi for r in ratios.values()):
        out, status = match_lesion_volumes(pv, requested_ml, voxel_mm3, brain)
        return out, {k: v.replace("matched (", "trimmed (", 1) for k, v in status.items()}, True
    pct = f"{100 * float(tolerance):g} %"
    status = {}
    for key in CONDITION_KEYS:
        r = ratios.get(key)
        if r is None:
            status[key] = "not requested"
        elif r == 0:
            status[key] = "absent"
        else:
            status[key] = f"{'left as sampled' if lo <= r <= hi else f'outside +-{pct}'} (sampled x{r:.2f})"
    return pv.astype(np.float32, copy=True), status, False
