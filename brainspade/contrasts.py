"""MRI contrasts the project renders and synthesises, with per-tissue intensity priors.

Priors are mean relative intensities (white matter ~ reference) per label for each contrast, taken
from the usual appearance of 1.5/3 T clinical scans: CSF dark on T1/FLAIR and bright on T2; WMH and
oedema bright on T2/FLAIR; enhancing rim bright on T1 post-contrast; necrotic core dark on T1.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError

CONTRASTS: tuple[str, ...] = ("t1", "t2", "flair", "t1ce")

# label key -> mean intensity per contrast (background 0). Order of keys follows labels.LABELS.
INTENSITY_PRIORS: dict[str, dict[str, float]] = {
    "t1": {
        "background": 0.0,
        "csf": 0.25,
        "gm": 0.62,
        "wm": 0.90,
        "dgm": 0.70,
        "brainstem": 0.80,
        "wmh": 0.68,
        "tumour": 0.35,
        "oedema": 0.55,
        "enhancing": 0.60,
    },
    "t2": {
        "background": 0.0,
        "csf": 1.00,
        "gm": 0.55,
        "wm": 0.38,
        "dgm": 0.48,
        "brainstem": 0.45,
        "wmh": 0.78,
        "tumour": 0.90,
        "oedema": 0.82,
        "enhancing": 0.66,
    },
    "flair": {
        "background": 0.0,
        "csf": 0.10,
        "gm": 0.62,
        "wm": 0.48,
        "dgm": 0.55,
        "brainstem": 0.52,
        "wmh": 0.95,
        "tumour": 0.60,
        "oedema": 0.92,
        "enhancing": 0.75,
    },
    "t1ce": {
        "background": 0.0,
        "csf": 0.25,
        "gm": 0.62,
        "wm": 0.88,
        "dgm": 0.70,
        "brainstem": 0.78,
        "wmh": 0.66,
        "tumour": 0.32,
        "oedema": 0.55,
        "enhancing": 1.00,
    },
}


def check_contrasts(contrast: str | Sequence[str]) -> list[str]:
    """Normalise one contrast or several ("t1", "t1,flair", ["t1", "t2"]) to a checked list."""
    items = contrast.split(",") if isinstance(contrast, str) else list(contrast)
    names = [str(c).strip().lower() for c in items if str(c).strip()]
    if not names:
        raise InputError(f"no contrast given; accepted: {', '.join(CONTRASTS)}")
    bad = [c for c in names if c not in CONTRASTS]
    if bad:
        raise InputError(f"unknown contrast {bad[0]!r}; accepted: {', '.join(CONTRASTS)}")
    return list(dict.fromkeys(names))
