"""Healthy MNI152 2009 anatomy on a profile grid, as 5 tissue partial-volume maps.

nilearn ships the MNI152 2009 T1 template and its grey/white-matter probability maps (no download).
CSF is what the filled brain envelope holds beyond GM+WM. Deep grey matter and brainstem have no
shipped map, so they are carved from GM/WM with soft ellipsoids placed at their MNI152 coordinates
(caudate, putamen/pallidum, thalamus; brainstem from the midbrain down to the medulla).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from ..profiles import Profile

TISSUES = ("csf", "gm", "wm", "dgm", "brainstem")  # label codes 1..5

# (centre MNI mm, semi-axes mm) of deep grey nuclei, both hemispheres mirrored in x.
DEEP_GREY = (
    ((12.0, 12.0, 10.0), (6.0, 12.0, 9.0)),  # caudate head/body
    ((24.0, 2.0, 0.0), (7.0, 14.0, 9.0)),  # putamen + pallidum
    ((11.0, -18.0, 6.0), (8.0, 11.0, 8.0)),  # thalamus
)
BRAINSTEM = (
    ((0.0, -26.0, -12.0), (10.0, 11.0, 10.0)),
    ((0.0, -32.0, -34.0), (11.0, 11.0, 16.0)),
    ((0.0, -40.0, -52.0), (8.0, 9.0, 10.0)),
)
# Lateral ventricles: the CSF inside this box is ventricular (used for WMH and ventricle variation).
VENTRICLE_BOX = ((-30.0, 30.0), (-45.0, 32.0), (-4.0, 32.0))
VENTRICLE_CENTRE = (0.0, -8.0, 14.0)


def grid_mm(profile: Profile) -> np.ndarray:
    """MNI mm coordinates of every voxel of the profile grid, shape (3, X, Y, Z)."""
    idx = np.indices(profile.shape, dtype=np.float32).reshape(3, -1)
    mm = profile.affine[:3, :3] @ idx + profile.affine[:3, 3:4]
    return mm.reshape(3, *profile.shape).astype(np.float32)


def soft_ellipsoid(mm: np.ndarray, centre, axes, edge: float = 0.25) -> np.ndarray:
    d = np.sqrt(sum(((mm[i] - centre[i]) / axes[i]) ** 2 for i in range(3)))
    return (1.0 / (1.0 + np.exp(np.clip((d - 1.0) / edge, -30, 30)))).astype(np.float32)


@lru_cache(maxsize=2)
def _templates(resolution: int):
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_template(resolution=resolution)
    wm = datasets.load_mni152_wm_template(resolution=resolution)
    return (
        np.asarray(t1.dataobj, np.float32),
        np.asarray(gm.dataobj, np.float32),
        np.asarray(wm.dataobj, np.float32),
        t1.affine,
    )


def resample_to(data: np.ndarray, src_affine: np.ndarray, profile: Profile, order: int = 1) -> np.ndarray:
    idx = np.indices(profile.shape, dtype=np.float32).reshape(3, -1)
    m = np.linalg.inv(src_affine) @ profile.affine
    src = m[:3, :3] @ idx + m[:3, 3:4]
    return ndi.map_coordinates(data, src, order=order, mode="constant", cval=0.0).reshape(profile.shape)


@lru_cache(maxsize=4)
def mni_anatomy(profile: Profile) -> np.ndarray:
    """(5, X, Y, Z) float32 partial volumes of csf, gm, wm, dgm, brainstem; cached per profile."""
    resolution = 1 if profile.spacing_mm < 2 else 2
    _, gm_t, wm_t, aff = _templates(resolution)
    gm = np.clip(resample_to(gm_t, aff, profile), 0, 1)
    wm = np.clip(resample_to(wm_t, aff, profile), 0, 1)
    tissue = gm + wm
    vox = profile.spacing_mm
    envelope = ndi.binary_fill_holes(ndi.binary_closing(tissue > 0.15, iterations=max(1, round(4 / vox))))
    envelope = ndi.gaussian_filter(envelope.astype(np.float32), sigma=1.0 / vox)
    csf = np.clip(envelope - tissue, 0, 1)
    mm = grid_mm(profile)
    dgm_w = np.zeros(profile.shape, np.float32)
    for centre, axes in DEEP_GREY:
        for side in (1, -1):
            dgm_w = np.maximum(dgm_w, soft_ellipsoid(mm, (side * centre[0], *centre[1:]), axes))
    bs_w = np.zeros(profile.shape, np.float32)
    for centre, axes in BRAINSTEM:
        bs_w = np.maximum(bs_w, soft_ellipsoid(mm, centre, axes))
    brainstem = bs_w * tissue
    dgm = dgm_w * (1 - bs_w) * (gm + 0.5 * wm)
    gm = gm * (1 - bs_w) * (1 - dgm_w)
    wm = wm * (1 - bs_w) * (1 - 0.5 * dgm_w)
    maps = np.stack([csf, gm, wm, dgm, brainstem]).astype(np.float32)
    total = maps.sum(0)
    maps /= np.maximum(total, 1.0)  # never more than one voxel's worth
    return maps


def ventricle_weight(profile: Profile) -> np.ndarray:
    mm = grid_mm(profile)
    w = np.ones(profile.shape, np.float32)
    for i, (lo, hi) in enumerate(VENTRICLE_BOX):
        w *= ((mm[i] > lo) & (mm[i] < hi)).astype(np.float32)
    return w
