"""Datalist loading with clear errors, and the lesion volumes used as conditioning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from brainspade.errors import InputError
from brainspade.labels import CONDITION_KEYS, lesion_volumes_ml


def load_datalist(
    path: str | os.PathLike, key: str = "training", required: tuple[str, ...] = ("pv",), limit: int | None = None
) -> list[dict]:
    """Items of `key` in a phantom/real datalist JSON, paths resolved against the JSON's folder."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"datalist {str(p)!r} does not exist; accepted: a datalist.json written by "
            "`python -m brainspade.phantom` or in the same format"
        )
    try:
        items = load_decathlon_datalist(str(p), is_segmentation=True, data_list_key=key, base_dir=str(p.parent))
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"datalist {str(p)!r} has no usable {key!r} list ({exc})") from None
    if not items:
        raise InputError(f"datalist {str(p)!r} has an empty {key!r} list")
    for item in items:
        for r in required:
            if r not in item or not os.path.isfile(str(item[r])):
                raise InputError(
                    f"datalist item {item.get('id', '?')!r} lacks a readable {r!r} file "
                    f"({item.get(r)!r}); accepted: paths relative to the datalist folder"
                )
    return items[:limit] if limit else items


def pv_condition_ml(pv: np.ndarray, voxel_mm3: float) -> np.ndarray:
    """Lesion volumes (mL, CONDITION_KEYS order) of a PV map: sum of the lesion fractions."""
    vols = lesion_volumes_ml(pv, voxel_mm3)
    return np.array([vols[k] for k in CONDITION_KEYS], dtype=np.float64)
