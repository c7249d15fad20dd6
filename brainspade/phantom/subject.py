"""One phantom subject: deformed anatomy, chosen pathology, partial volumes, rendered contrasts."""

from __future__ import annotations

import numpy as np

from ..contrasts import CONTRASTS
from ..labels import NUM_LABELS, lesion_volumes_ml, normalise_pv
from ..profiles import Profile, get_profile
from .anatomy import mni_anatomy, ventricle_weight
from .deform import radial_push, random_sampling_grid, warp
from .lesions import CSF, add_tumour, add_wmh
from .render import render

PATHOLOGIES = ("healthy", "wmh", "tumour", "both")
STYLES = ("a", "b")


def _rng(seed: int, index: int) -> np.random.Generator:
    """Per-subject stream: the same subject whatever the worker count or order."""
    return np.random.default_rng([int(seed), int(index)])


def generate_subject(
    seed: int,
    index: int,
    profile: str | Profile = "default",
    pathology: str = "both",
    style: str = "a",
    contrasts=CONTRASTS,
) -> dict:
    """Return {"pv": (10,X,Y,Z), "images": {contrast: (X,Y,Z)}, "volumes": {...}, "params": {...}}."""
    if pathology not in PATHOLOGIES:
        raise ValueError(f"unknown pathology {pathology!r}; accepted: {', '.join(PATHOLOGIES)}")
    prof = get_profile(profile)
    rng = _rng(seed, index)
    anatomy = mni_anatomy(prof)
    expand = rng.uniform(0.0, 0.25)
    coords = random_sampling_grid(rng, prof, ventricle_expand=expand)
    tissue = warp(anatomy, coords)
    pv = np.zeros((NUM_LABELS, *prof.shape), np.float32)
    pv[1:6] = tissue
    # cortical atrophy: grey matter next to CSF thins into CSF
    atrophy = rng.uniform(0.0, 0.3)
    from scipy import ndimage as ndi

    near_csf = np.clip(ndi.gaussian_filter(pv[CSF], 1.0) * 2, 0, 1)
    moved = atrophy * near_csf * pv[2]
    pv[2] -= moved
    pv[CSF] += moved
    pv[0] = np.clip(1 - pv[1:].sum(0), 0, 1)
    params: dict = {"ventricle_expand": round(float(expand), 3), "atrophy": round(float(atrophy), 3)}
    if pathology in ("tumour", "both"):
        radius = rng.uniform(7.0, 22.0)

        def push(maps, centre, r):
            return normalise_pv(warp(maps, radial_push(prof, centre, r, strength=rng.uniform(0.25, 0.5))))

        params["tumour"] = add_tumour(
            pv, rng, prof, radius, necrotic=bool(rng.random() < 0.85), oedema_mm=rng.uniform(4.0, 28.0), push=push
        )
    if pathology in ("wmh", "both"):
        target = float(np.exp(rng.uniform(np.log(1.0), np.log(45.0))))
        ventricles = pv[CSF] * ventricle_weight(prof)
        add_wmh(pv, ventricles, rng, prof, target)
        params["wmh_target_ml"] = round(target, 2)
    pv = normalise_pv(pv)
    images = {c: render(pv, c, rng, style) for c in contrasts}
    return {"pv": pv, "images": images, "volumes": lesion_volumes_ml(pv, prof.voxel_mm3), "params": params}
