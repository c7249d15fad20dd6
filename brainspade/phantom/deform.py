"""Random smooth deformations that turn the one MNI152 brain into many plausible subjects.

Written with scipy rather than MONAI's Rand3DElastic because the same sampled field must move five
tissue maps and later lesion maps identically, and ventricle expansion needs a field centred on the
ventricles, which MONAI's transforms do not offer.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..profiles import Profile
from .anatomy import VENTRICLE_CENTRE, grid_mm


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 6) -> np.ndarray:
    """Band-limited noise with unit spread: random values on a coarse grid, linearly upsampled and
    Gaussian-smoothed (10x cheaper than a cubic zoom at 96^3, same look)."""
    small = rng.standard_normal((coarse,) * len(shape)).astype(np.float32)
    zoom = [s / coarse for s in shape]
    field = ndi.zoom(small, zoom, order=1, mode="nearest", grid_mode=True)[tuple(slice(0, s) for s in shape)]
    field = ndi.gaussian_filter(field, sigma=[z / 2.5 for z in zoom], mode="nearest")
    return field / max(float(field.std()), 1e-6)


def random_sampling_grid(
    rng: np.random.Generator,
    profile: Profile,
    elastic_mm: float = 3.0,
    rot_deg: float = 5.0,
    scale: float = 0.05,
    shift_mm: float = 3.0,
    ventricle_expand: float = 0.0,
) -> np.ndarray:
    """Voxel coordinates (3, X, Y, Z) to sample the template at: affine + elastic + ventricle term."""
    mm = grid_mm(profile)
    centre = np.asarray(VENTRICLE_CENTRE, np.float32).reshape(3, 1, 1, 1)
    rel = mm - centre
    angles = np.deg2rad(rng.uniform(-rot_deg, rot_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    lin = rot @ np.diag(1 + rng.uniform(-scale, scale, 3))
    src = np.einsum("ij,jxyz->ixyz", lin.astype(np.float32), rel) + rng.uniform(-shift_mm, shift_mm, (3, 1, 1, 1))
    for i in range(3):
        src[i] += elastic_mm * smooth_noise(rng, profile.shape)
    if ventricle_expand:
        # sample closer to the ventricle centre near it: the ventricles appear larger (atrophy-like)
        weight = np.exp(-np.sum((rel / np.array([22, 30, 18], np.float32).reshape(3, 1, 1, 1)) ** 2, 0))
        src *= 1.0 - ventricle_expand * weight  # src is still relative to the centre here
    src += centre
    inv = np.linalg.inv(profile.affine).astype(np.float32)
    return np.einsum("ij,jxyz->ixyz", inv[:3, :3], src) + inv[:3, 3].reshape(3, 1, 1, 1)


def warp(maps: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample every channel of (C, X, Y, Z) at voxel coordinates (3, X, Y, Z)."""
    return np.stack([ndi.map_coordinates(m, coords, order=order, mode="constant", cval=0.0) for m in maps])


def radial_push(profile: Profile, centre_mm: np.ndarray, radius_mm: float, strength: float) -> np.ndarray:
    """Sampling coordinates for mass effect: tissue near `centre` is pushed outwards by a tumour."""
    mm = grid_mm(profile)
    rel = mm - centre_mm.reshape(3, 1, 1, 1)
    r = np.sqrt((rel**2).sum(0))
    shrink = 1.0 - strength * np.exp(-((r / (1.8 * radius_mm)) ** 2))
    src = centre_mm.reshape(3, 1, 1, 1) + rel * shrink
    inv = np.linalg.inv(profile.affine).astype(np.float32)
    return np.einsum("ij,jxyz->ixyz", inv[:3, :3], src.astype(np.float32)) + inv[:3, 3].reshape(3, 1, 1, 1)
