"""Real data in: a MONAI datalist of NIfTI images/labels, validated, mapped onto our label table,
reoriented to RAS, resampled to the profile grid and z-scored inside the brain.

Validation happens up front (every entry, before any training starts) so a bad datalist fails with
the entry and the problem, not with a shape error deep inside a network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import InputError
from .io import load_json
from .labels import LABEL_CODES, NUM_LABELS
from .profiles import get_profile

# Source label value -> our code. Extend with a user JSON {"source_value": our_code}.
LABEL_MAPPINGS: dict[str, dict[int, int]] = {
    "identity": {i: i for i in range(NUM_LABELS)},
    # BraTS 2021: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing (2023+ uses 3 for enhancing)
    "brats": {
        0: 0,
        1: LABEL_CODES["tumour"],
        2: LABEL_CODES["oedema"],
        3: LABEL_CODES["enhancing"],
        4: LABEL_CODES["enhancing"],
    },
    # WMH segmentation challenge: 1 WMH, 2 other pathology (not in our table: left as background)
    "wmh_challenge": {0: 0, 1: LABEL_CODES["wmh"], 2: 0},
}


def get_label_mapping(mapping: str | Mapping) -> dict[int, int]:
    if isinstance(mapping, Mapping):
        table = {int(k): int(v) for k, v in mapping.items()}
    elif mapping in LABEL_MAPPINGS:
        table = dict(LABEL_MAPPINGS[mapping])
    elif str(mapping).endswith(".json"):
        table = {int(k): int(v) for k, v in load_json(mapping, "label mapping").items()}
    else:
        raise InputError(f"unknown label mapping {mapping!r}; accepted: {', '.join(LABEL_MAPPINGS)} or a JSON file")
    bad = [v for v in table.values() if not 0 <= v < NUM_LABELS]
    if bad:
        raise InputError(f"label mapping targets {bad} outside the label table 0..{NUM_LABELS - 1}")
    return table


def load_checked_datalist(
    path: str | Path,
    key: str = "training",
    keys: Sequence[str] = ("image", "label"),
    mapping: str | Mapping | None = None,
    check_geometry: bool = True,
) -> list[dict]:
    """Read a MONAI datalist and check every entry; return entries with absolute paths.

    Checks: JSON and list present; each entry has `keys`; files exist and are NIfTI; no duplicate
    entries; image and label of an entry share shape and affine; label values are in `mapping`.
    """
    p = Path(path)
    data = load_json(p, "datalist")
    if not isinstance(data, dict) or key not in data:
        found = list(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"datalist {str(p)!r} has no {key!r} list (found: {found}); accepted: a MONAI datalist "  # noqa: B907 (JSON example)
            f'{{"{key}": [{{"image": ..., "label": ...}}, ...]}}'
        )
    entries = data[key]
    if not isinstance(entries, list) or not entries:
        raise InputError(f"datalist {str(p)!r}: {key!r} must be a non-empty list of entries")
    table = get_label_mapping(mapping) if mapping is not None else None
    out, seen = [], {}
    for i, entry in enumerate(entries):
        name = f"datalist {p.name} entry {i}" + (
            f" ({entry.get('id')})" if isinstance(entry, dict) and entry.get("id") else ""
        )
        if not isinstance(entry, dict):
            raise InputError(f"{name} is not an object; accepted: {{{', '.join(repr(k) for k in keys)}: path}}")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise InputError(f"{name} lacks key {missing[0]!r}; required keys: {', '.join(keys)}")
        resolved = dict(entry)
        for k in keys:
            if not isinstance(entry[k], str):
                raise InputError(f"{name}: {k!r} must be a file path string")
            f = Path(entry[k]) if Path(entry[k]).is_absolute() else p.parent / entry[k]
            if not f.is_file():
                raise InputError(f"{name}: {k} file {str(f)!r} does not exist")
            resolved[k] = str(f.resolve())
        sig = tuple(resolved[k] for k in keys)
        if sig in seen:
            raise InputError(f"{name} duplicates entry {seen[sig]}; each subject may appear once")
        seen[sig] = i
        if check_geometry:
            _check_geometry(name, resolved, keys, table)
        out.append(resolved)
    return out


def _header(name: str, key: str, path: str):
    try:
        return nib.load(path)
    except Exception as exc:
        raise InputError(f"{name}: {key} file {path!r} is not a readable NIfTI ({type(exc).__name__})") from None


def _check_geometry(name: str, entry: dict, keys: Sequence[str], table: dict[int, int] | None) -> None:
    imgs = {k: _header(name, k, entry[k]) for k in keys}
    ref_key = keys[0]
    ref = imgs[ref_key]
    if (
        len(ref.shape) < 3
        or min(ref.shape[:3]) < 2
        or (len(ref.shape) > 3 and ref.shape[3] > 1 and "label" not in ref_key)
    ):
        raise InputError(f"{name}: {ref_key} has shape {tuple(ref.shape)}; accepted: a 3D volume")
    for k, img in imgs.items():
        if tuple(img.shape[:3]) != tuple(ref.shape[:3]):
            raise InputError(
                f"{name}: {k} shape {tuple(img.shape[:3])} differs from {ref_key} shape "
                f"{tuple(ref.shape[:3])}; image and label must share one grid"
            )
        if not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise InputError(f"{name}: {k} affine differs from {ref_key} affine; image and label must share one grid")
    if table is not None and "label" in imgs:
        values = np.unique(np.asarray(imgs["label"].dataobj))
        unknown = [v for v in values.tolist() if int(round(v)) not in table or abs(v - round(v)) > 1e-3]
        if unknown:
            raise InputError(
                f"{name}: label values {unknown[:8]} are not in the label mapping "
                f"(accepted values: {sorted(table)})"
            )


def real_data_transforms(
    profile: str = "default",
    image_keys: Sequence[str] = ("image",),
    label_key: str | None = "label",
    mapping: str | Mapping = "identity",
):
    """MONAI transforms: load, map labels, RAS, profile spacing, crop/pad to profile shape, z-score in brain."""
    from monai import transforms as mt

    prof = get_profile(profile)
    keys = [*image_keys] + ([label_key] if label_key else [])
    modes = ["bilinear"] * len(image_keys) + (["nearest"] if label_key else [])
    xs = [mt.LoadImaged(keys, ensure_channel_first=True, image_only=True)]
    if label_key:
        table = get_label_mapping(mapping)
        src, dst = zip(*sorted(table.items()), strict=True)
        xs.append(mt.MapLabelValued(label_key, orig_labels=list(src), target_labels=list(dst)))
    xs += [
        mt.Orientationd(keys, axcodes="RAS"),
        mt.Spacingd(keys, pixdim=(prof.spacing_mm,) * 3, mode=modes),
        mt.ResizeWithPadOrCropd(keys, spatial_size=prof.shape),
        mt.NormalizeIntensityd(list(image_keys), nonzero=True, channel_wise=True),
        mt.EnsureTyped(keys, track_meta=True),
    ]
    return mt.Compose(xs)
