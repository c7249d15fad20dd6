"""Clean-up after sampling, before volume matching: lesions the model drew outside the brain or as small detached
specks of tumour are given back to the tissue around them, requested-absent lesions removed, and background the
brain encloses (holes) given to the tissue around each hole."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from brainspade.labels import CONDITION_KEYS, LABEL_CODES, LABELS, LESION_CODES, TUMOUR_PARTS, pv_to_int

from .volume_matching import NEIGHBOURS_26

TUMOUR_PART_CODES = [LABEL_CODES[k] for k in TUMOUR_PARTS]
HEALTHY_FILL = [lab.code for lab in LABELS if not lab.lesion and lab.key != "background"]  # CSF .. brainstem


def tumour_specks(labels: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Voxels of the small detached pieces of tumour parts: 26-connected pieces of core/enhancing/oedema that each
    hold less than `fraction` of the sample's tumour voxels (the largest piece is always kept)."""
    comp, n = ndimage.label(np.isin(labels, TUMOUR_PART_CODES), structure=NEIGHBOURS_26)
    if n < 2:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(comp.ravel())[1:]
    small = (sizes < fraction * sizes.sum()) & (np.arange(n) != np.argmax(sizes))
    return np.isin(comp, np.flatnonzero(small) + 1)


def brain_mask(pv: np.ndarray) -> np.ndarray:
    """Brain = largest connected region whose dominant label is tissue or lesion (not background, not CSF),
    holes filled (ventricles), dilated by one voxel (partial-volume rim)."""
    lab = pv.argmax(0)
    tissue = (lab != LABEL_CODES["background"]) & (lab != LABEL_CODES["csf"])
    comp, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(lab.shape, dtype=bool)
    largest = comp == (np.argmax(np.bincount(comp.ravel())[1:]) + 1)
    return ndimage.binary_dilation(ndimage.binary_fill_holes(largest), iterations=1)


def clean_lesions(pv: np.ndarray, requested_ml: Mapping[str, float], voxel_mm3: float) -> tuple[np.ndarray, dict]:
    """No lesion outside the brain (its fraction returns to background); no lesion type the user set to 0 and no
    small detached speck of tumour parts (their fractions go to the voxel's dominant healthy tissue, white matter
    if none).

    Why the tumour rule: the training tumours are one connected piece (core, enhancing rim and oedema; 31 of the
    37 default training tumours, the rest with a small detached oedema island), while the network scatters specks
    of tumour parts around its tumour(s) (median 4.5 core and 12.5 oedema pieces per sample, measured; most of
    them 1-250 voxels). Pieces holding under 5 % of the sample's tumour voxels are removed, with the partial-volume
    fractions around them (outside a one-voxel rim of the pieces kept); substantial pieces stay as drawn (the
    network sometimes draws two tumours: verification and volume matching see both).
    """
    pv = pv.copy()
    outside = ~brain_mask(pv)
    removed_out = 0.0
    for code in LESION_CODES:
        m = pv[code] * outside
        removed_out += float(m.sum())
        pv[0] += m
        pv[code] -= m
    healthy = pv[1:6]
    target = np.where(healthy.sum(0) > 1e-3, healthy.argmax(0) + 1, LABEL_CODES["wm"])

    def to_healthy(code: int, where: np.ndarray | None = None) -> float:
        frac = pv[code].copy() if where is None else pv[code] * where
        pv[code] -= frac
        for t in np.unique(target[frac > 0]):
            sel = target == t
            pv[t][sel] += frac[sel]
        return float(frac.sum())

    removed_unreq = sum(
        to_healthy(code)
        for key, code in zip(CONDITION_KEYS, LESION_CODES, strict=True)
        if requested_ml.get(key, 1.0) == 0
    )
    lab = pv_to_int(pv)
    specks = tumour_specks(lab)
    removed_specks = 0.0
    if specks.any():
        kept = np.isin(lab, TUMOUR_PART_CODES) & ~specks
        away = ~ndimage.binary_dilation(kept, iterations=1)
        removed_specks = sum(to_healthy(code, away) for code in TUMOUR_PART_CODES)
    ml = voxel_mm3 / 1000.0
    return pv, {
        "removed_outside_brain_ml": round(removed_out * ml, 4),
        "removed_unrequested_ml": round(removed_unreq * ml, 4),
        "removed_tumour_specks_ml": round(removed_specks * ml, 4),
    }


def enclosed_background(labels: np.ndarray) -> np.ndarray:
    """Background voxels not connected to the outside of the volume: `binary_fill_holes(labels != background)` less
    the brain itself (SciPy's default, face connectivity). In a rendered image these are black holes in the head."""
    brain = labels != LABEL_CODES["background"]
    return ndimage.binary_fill_holes(brain) & ~brain


def fill_enclosed_background(pv: np.ndarray, voxel_mm3: float) -> tuple[np.ndarray, float]:
    """Background voxels the brain encloses (not connected to the outside through faces: the rule
    `enclosed_background`, which the evaluation measures) get their background fraction moved to the healthy label (CSF to
    brainstem) most common on each hole's face-neighbours; returns the new maps and the filled volume (mL).

    Why: the training maps enclose no background, while the network draws a few mL per map (2.2 mL mean on the
    validation requests with the 0.2.0 weights, mostly in the ventricles), which a renderer shows as black holes."""
    lab = pv_to_int(pv)
    holes, n = ndimage.label(enclosed_background(lab))
    if n == 0:
        return pv, 0.0
    pv = pv.copy()
    background = LABEL_CODES["background"]
    for i, box in enumerate(ndimage.find_objects(holes), start=1):
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        hole = holes[box] == i
        ring = ndimage.binary_dilation(hole) & ~hole
        around = np.bincount(lab[box][ring], minlength=pv.shape[0])
        healthy = around[HEALTHY_FILL]  # a hole is missing tissue or CSF, never lesion (WMH line the ventricles)
        fill = HEALTHY_FILL[int(healthy.argmax())] if healthy.any() else int(around.argmax())
        region = pv[(slice(None), *box)]
        region[fill][hole] += region[background][hole]
        region[background][hole] = 0.0
    return pv, round(float((holes > 0).sum()) * voxel_mm3 / 1000.0, 4)
