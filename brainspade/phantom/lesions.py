"""Procedural pathologies as partial-volume maps on a subject's tissue maps.

Maps are (10, X, Y, Z) in label-table order. WMH replace white matter (periventricular caps/rims and
deep punctate lesions that grow confluent with load); a tumour has a necrotic core, an enhancing rim,
mass effect on its neighbours, and oedema that spreads along white matter.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..labels import LABEL_CODES
from ..profiles import Profile
from .anatomy import grid_mm
from .deform import smooth_noise

BG, CSF, GM, WM, DGM, BS = (LABEL_CODES[k] for k in ("background", "csf", "gm", "wm", "dgm", "brainstem"))
WMH, TUM, OED, ENH = (LABEL_CODES[k] for k in ("wmh", "tumour", "oedema", "enhancing"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def add_wmh(
    pv: np.ndarray, ventricles: np.ndarray, rng: np.random.Generator, profile: Profile, target_ml: float
) -> None:
    """Insert WMH of about `target_ml` into white matter, in place."""
    vox = profile.spacing_mm
    dist = ndi.distance_transform_edt(ventricles < 0.5) * vox  # mm to the ventricles
    noise = smooth_noise(rng, profile.shape, coarse=10)
    load = np.clip(target_ml / 40.0, 0, 1)
    peri = np.exp(-dist / (4.0 + 10.0 * load))
    # caps at the frontal and occipital horns: ventricle ends in y
    mm = grid_mm(profile)
    vy = mm[1][ventricles > 0.5]
    if vy.size:
        lo, hi = np.percentile(vy, [5, 95])
        cap = np.exp(-np.minimum(np.abs(mm[1] - lo), np.abs(mm[1] - hi)) / 12.0)
        peri = peri * (0.6 + 0.8 * cap)
    deep = np.zeros(profile.shape, np.float32)
    wm = pv[WM]
    candidates = np.argwhere(wm > 0.8)
    n_deep = rng.poisson(2 + 25 * load) if candidates.size else 0
    for idx in candidates[rng.integers(0, len(candidates), n_deep)] if n_deep else []:
        radius = rng.uniform(1.5, 3.5 + 3 * load)
        d = np.sqrt(sum((mm[i] - mm[i][tuple(idx)]) ** 2 for i in range(3)))
        deep = np.maximum(deep, _sigmoid((radius - d) / (0.4 * vox)))
    field = np.maximum(peri * (0.75 + 0.25 * noise), 0.9 * deep)
    wm_vox = wm > 0.3
    voxels = target_ml * 1000.0 / profile.voxel_mm3
    if not wm_vox.any() or voxels <= 0:
        return
    frac = np.clip(voxels / max(float(wm[wm_vox].sum()), 1.0), 1e-5, 0.5)
    thr = np.quantile(field[wm_vox], 1 - frac)
    wmh = _sigmoid((field - thr) / (0.03 * max(float(field.max()), 1e-3))) * wm
    pv[WMH] += wmh
    pv[WM] -= wmh


def tumour_sites(pv: np.ndarray, profile: Profile) -> np.ndarray:
    """Voxel indices where a tumour may be centred: cerebral white matter off the midline."""
    mm = grid_mm(profile)
    ok = (pv[WM] + pv[GM] > 0.8) & (np.abs(mm[0]) > 15) & (mm[2] > -10) & (mm[2] < 55)
    return np.argwhere(ok)


def add_tumour(
    pv: np.ndarray, rng: np.random.Generator, profile: Profile, radius_mm: float, necrotic: bool, oedema_mm: float, push
) -> dict:
    """Insert a tumour (in place) with mass effect; `push(centre, radius)` warps the existing maps."""
    sites = tumour_sites(pv, profile)
    idx = sites[rng.integers(len(sites))]
    mm = grid_mm(profile)
    centre = mm[(slice(None), *idx)].astype(np.float32)
    pv[:] = push(pv, centre, radius_mm)
    rel = mm - centre.reshape(3, 1, 1, 1)
    r = np.sqrt((rel**2).sum(0))
    irregular = 1.0 + 0.18 * smooth_noise(rng, profile.shape, coarse=8)
    r_eff = r / irregular
    edge = 0.5 * profile.spacing_mm
    brain = 1.0 - pv[BG]
    whole = _sigmoid((radius_mm - r_eff) / edge) * brain
    rim = rng.uniform(0.25, 0.45) * radius_mm
    core = _sigmoid((radius_mm - rim - r_eff) / edge) * whole if necrotic else whole
    enh = whole - core if necrotic else np.zeros_like(whole)
    keep = 1.0 - whole / np.maximum(brain, 1e-6)
    for c in range(1, pv.shape[0]):
        pv[c] *= keep
    pv[TUM] += core
    pv[ENH] += enh
    # oedema follows white matter: reach grows where the smoothed WM fraction is high
    wm_smooth = ndi.gaussian_filter(pv[WM] + pv[WMH], sigma=2.0 / profile.spacing_mm)
    reach = radius_mm + oedema_mm * (0.3 + 0.7 * wm_smooth) * (1 + 0.2 * smooth_noise(rng, profile.shape, 8))
    o_field = _sigmoid((reach - r_eff) / (1.5 * edge)) * (r_eff > radius_mm * 0.8)
    oed_wm = o_field * pv[WM]
    oed_gm = 0.3 * o_field * pv[GM]
    pv[WM] -= oed_wm
    pv[GM] -= oed_gm
    pv[OED] += oed_wm + oed_gm
    return {"centre_mm": centre.round(1).tolist(), "radius_mm": round(float(radius_mm), 1), "necrotic": bool(necrotic)}
