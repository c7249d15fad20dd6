"""Write a phantom dataset (NIfTI, true MNI affine) and its MONAI datalist JSON."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..contrasts import CONTRASTS
from ..errors import InputError
from ..io import save_json, save_nifti
from ..labels import pv_to_int
from ..profiles import get_profile
from .subject import PATHOLOGIES, STYLES, generate_subject

SPLITS = ("training", "validation", "test")


def _write_subject(job: tuple) -> dict:
    out, seed, index, profile, pathology, style, contrasts = job
    sid = f"sub-{index:04d}"
    prof = get_profile(profile)
    folder = Path(out) / sid
    s = generate_subject(seed, index, prof, pathology, style, contrasts)
    rec = {"id": sid, "label": f"{sid}/{sid}_label.nii.gz", "pv": f"{sid}/{sid}_pv.nii.gz"}
    save_nifti(folder / f"{sid}_label.nii.gz", pv_to_int(s["pv"]), prof.affine, dtype=np.int16)
    save_nifti(folder / f"{sid}_pv.nii.gz", s["pv"], prof.affine, pv_uint8=True)
    for c, img in s["images"].items():
        save_nifti(folder / f"{sid}_{c}.nii.gz", img, prof.affine)
        rec[c] = f"{sid}/{sid}_{c}.nii.gz"
    rec.update({"style": style, "pathology": pathology, "seed": [int(seed), int(index)]})
    rec.update({k: round(v, 4) for k, v in s["volumes"].items()})
    return rec


def _pathology_plan(n: int, pathologies: Sequence[str], rng: np.random.Generator) -> list[str]:
    plan = [pathologies[i % len(pathologies)] for i in range(n)]
    rng.shuffle(plan)
    return plan


def generate_dataset(
    output_dir: str | Path,
    num_subjects: int = 100,
    profile: str = "default",
    seed: int = 0,
    pathologies: Sequence[str] = PATHOLOGIES,
    style: str = "a",
    contrasts: Sequence[str] = CONTRASTS,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    workers: int | None = None,
    first_index: int = 0,
) -> Path:
    """Generate `num_subjects` subjects (balanced over `pathologies`) and return the datalist path.

    Deterministic given `seed`: subject i uses the stream (seed, first_index + i) in any process.
    """
    if num_subjects < 1:
        raise InputError(f"num_subjects must be >= 1 (got {num_subjects})")
    bad = [p for p in pathologies if p not in PATHOLOGIES]
    if bad:
        raise InputError(f"unknown pathology {bad[0]!r}; accepted: {', '.join(PATHOLOGIES)}")
    if style not in STYLES:
        raise InputError(f"unknown style {style!r}; accepted: {', '.join(STYLES)}")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
        raise InputError(f"split must be three fractions summing to 1 (got {list(split)})")
    prof = get_profile(profile)
    out = Path(output_dir)
    datalist = out / "datalist.json"
    if datalist.exists():
        raise InputError(f"{datalist} already exists; accepted: a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    plan = _pathology_plan(num_subjects, list(pathologies), np.random.default_rng([seed, 10**9]))
    jobs = [(str(out), seed, first_index + i, prof.name, plan[i], style, tuple(contrasts)) for i in range(num_subjects)]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            records = pool.map(_write_subject, jobs, chunksize=1)
    else:
        records = [_write_subject(j) for j in jobs]
    n_train = int(round(split[0] * num_subjects))
    n_val = int(round(split[1] * num_subjects))
    parts = {
        SPLITS[0]: records[:n_train],
        SPLITS[1]: records[n_train : n_train + n_val],
        SPLITS[2]: records[n_train + n_val :],
    }
    meta = {
        "profile": prof.name,
        "spacing_mm": prof.spacing_mm,
        "shape": list(prof.shape),
        "affine": prof.affine.tolist(),
        "contrasts": list(contrasts),
        "style": style,
        "seed": seed,
        "generator": "brainspade.phantom",
        **parts,
    }
    return save_json(datalist, meta)


def write_montage(datalist: str | Path, png: str | Path, per_pathology: int = 1) -> Path:
    """PNG of the first subject(s) of each pathology in a written dataset, every contrast."""
    from ..io import load_json, load_nifti
    from ..preview import save_montage

    meta = load_json(datalist, "datalist")
    root = Path(datalist).parent
    entries = meta["training"] + meta["validation"] + meta["test"]
    rows = []
    for pathology in PATHOLOGIES:
        for e in [e for e in entries if e["pathology"] == pathology][:per_pathology]:
            labels = load_nifti(root / e["label"], "label")[0].astype(int)
            images = {c: load_nifti(root / e[c])[0] for c in meta["contrasts"]}
            rows.append((f"{e['id']} {pathology} ({e['style']})", images, labels))
    return save_montage(png, rows)
