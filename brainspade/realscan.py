"""The real scan every model is tested on: nilearn's MNI152 2009 T1 (skull-stripped, 1 mm, RAS) and its own
grey/white-matter probability maps as the reference, shipped with nilearn (nothing is downloaded).

`write_mni_t1(path, variant)` writes the scan as shipped or re-saved the ways users' scans arrive (another
orientation, another spacing, thick slices); `tissue_dice(labels, affine)` scores a segmentation of it, on the
segmentation's own grid, against the template's tissue maps (and `boundary_profile` says where it puts the GM/WM
boundary): a voxel is GM (WM) where the GM (WM) probability is
at least 0.5 and above the other. The template has no deep-grey-matter or brainstem map (our label table does),
so voxels inside the project's deep-grey and brainstem regions (brainspade.phantom.anatomy) are left out.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from .labels import LABEL_CODES

VARIANTS = ("ras_1mm", "reoriented", "resampled", "thick_axial")
# variant -> (axis order of the re-saved array, flipped axes, voxel size in mm)
_LAYOUT = {
    "ras_1mm": ((0, 1, 2), (), (1.0, 1.0, 1.0)),
    "reoriented": ((2, 0, 1), (0, 2), (1.0, 1.0, 1.0)),  # SLP-like: axes permuted and flipped, same voxels
    "resampled": ((0, 1, 2), (1,), (1.4, 1.2, 1.6)),  # anisotropic, non-profile spacing
    "thick_axial": ((0, 1, 2), (), (1.0, 1.0, 5.0)),  # 5 mm axial slices
}


def _template(kind: str, resolution: int = 1) -> nib.Nifti1Image:
    from nilearn import datasets

    loader = {
        "t1": datasets.load_mni152_template,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
    }[kind]
    return loader(resolution=resolution)


def _resample(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    shape,
    order: int = 1,
    prefilter_mm: np.ndarray | None = None,
) -> np.ndarray:
    src = data
    if prefilter_mm is not None:  # slice profile: average over each new voxel's extent before sampling
        sigma = np.sqrt(np.maximum(np.asarray(prefilter_mm, float) ** 2 - 1.0, 0) / 12.0)  # box of the new voxel
        src = ndi.gaussian_filter(data, sigma=sigma)
    idx = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    m = np.linalg.inv(src_affine) @ dst_affine
    coords = m[:3, :3] @ idx + m[:3, 3:4]
    return ndi.map_coordinates(src, coords, order=order, mode="constant", cval=0.0).reshape(shape)


def write_mni_t1(path: str | Path, variant: str = "ras_1mm") -> Path:
    """Write the MNI152 2009 T1 as a user's scan would arrive: see VARIANTS."""
    if variant not in _LAYOUT:
        raise ValueError(f"unknown variant {variant!r}; accepted: {', '.join(VARIANTS)}")
    order, flips, voxel = _LAYOUT[variant]
    img = _template("t1")
    data, affine = np.asarray(img.dataobj, np.float32), img.affine.astype(np.float64)
    if voxel != (1.0, 1.0, 1.0):
        extent = np.asarray(data.shape) * np.abs(np.diag(affine)[:3])
        shape = np.maximum(np.round(extent / np.asarray(voxel)).astype(int), 2)
        new = affine.copy()
        new[:3, :3] = affine[:3, :3] @ np.diag(np.asarray(voxel) / np.abs(np.diag(affine)[:3]))
        # the new grid covers the same extent: its first voxel centre sits half a new voxel in
        new[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((np.asarray(voxel) - 1.0) / 2.0)
        data = _resample(data, affine, new, shape, prefilter_mm=np.asarray(voxel)).astype(np.float32)
        data[data < 0] = 0  # skull-stripped: the background stays exactly zero
        affine = new
    for ax in flips:
        data = np.flip(data, axis=ax)
        flip = np.eye(4)
        flip[ax, ax], flip[ax, 3] = -1, data.shape[ax] - 1
        affine = affine @ flip
    data = np.transpose(data, order)
    perm = np.eye(4)[list(order) + [3]].T  # new voxel index i_new = i_old[order]
    affine = affine @ perm
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(out))
    return out


def reference_tissue(affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """(reference labels, scored mask) on the grid (affine, shape): labels 2 = GM, 3 = WM, 0 = neither, from
    the template's probability maps; the mask leaves out the deep-grey and brainstem regions."""
    gm, wm, scored = _grid_maps(affine, shape)
    return _reference_labels(gm, wm), scored


def _reference_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    ref = np.zeros(gm.shape, np.uint8)
    ref[(gm >= 0.5) & (gm > wm)] = LABEL_CODES["gm"]
    ref[(wm >= 0.5) & (wm > gm)] = LABEL_CODES["wm"]
    return ref


def _scored_mask(affine: np.ndarray, shape) -> np.ndarray:
    """Outside the project's deep-grey and brainstem regions, which the template has no map of."""
    from .phantom.anatomy import BRAINSTEM, DEEP_GREY, soft_ellipsoid

    affine = np.asarray(affine, np.float64)
    idx = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1)
    mm = (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape).astype(np.float32)
    excluded = np.zeros(tuple(shape), bool)
    for centre, axes in DEEP_GREY:
        for side in (1, -1):
            excluded |= soft_ellipsoid(mm, (side * centre[0], *centre[1:]), axes) > 0.5
    for centre, axes in BRAINSTEM:
        excluded |= soft_ellipsoid(mm, centre, axes) > 0.5
    return ~excluded


def tissue_dice(labels: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """GM and WM Dice of a segmentation of the MNI152 T1 (any grid), against the template's tissue maps."""
    labels = np.asarray(labels)
    gm, wm, scored = _grid_maps(affine, labels.shape)
    return _dice(labels, _reference_labels(gm, wm), scored)


def _dice(labels: np.ndarray, ref: np.ndarray, scored: np.ndarray) -> dict[str, float]:
    out = {}
    for key in ("gm", "wm"):
        code = LABEL_CODES[key]
        p, r = (labels == code) & scored, (ref == code) & scored
        denom = int(p.sum()) + int(r.sum())
        out[key] = round(2.0 * int((p & r).sum()) / denom, 4) if denom else float("nan")
    return out


def _grid_maps(affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(GM map, WM map, scored mask) on the grid: what every score of a segmentation is measured against."""
    return (*_tissue_maps(affine, shape), _scored_mask(affine, shape))


def _tissue_maps(affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    gm_img, wm_img = _template("gm"), _template("wm")
    affine = np.asarray(affine, np.float64)
    gm = _resample(np.asarray(gm_img.dataobj, np.float32), gm_img.affine, affine, shape)
    wm = _resample(np.asarray(wm_img.dataobj, np.float32), wm_img.affine, affine, shape)
    return gm, wm


def boundary_profile(labels: np.ndarray, affine: np.ndarray, bins: int = 10) -> dict:
    """Where a segmentation of the MNI152 T1 puts the GM/WM boundary: among tissue voxels (gm + wm >= 0.5 in the
    template, inside the scored mask), the share labelled WM per bin of the WM fraction wm / (gm + wm), and the
    fraction at which that share crosses one half (linear between bin centres; the reference's own is 0.5). A
    Dice says how much is wrong; this says which way the boundary moved."""
    labels = np.asarray(labels)
    return _profile(labels, *_grid_maps(affine, labels.shape), bins)


def tissue_scores(labels: np.ndarray, affine: np.ndarray, bins: int = 10) -> dict:
    """`tissue_dice` and `boundary_profile` together, from one resampling of the template's maps (the quality
    report scores four grids; each resampling of the 1 mm maps costs seconds)."""
    labels = np.asarray(labels)
    gm, wm, scored = _grid_maps(affine, labels.shape)
    return {**_dice(labels, _reference_labels(gm, wm), scored), **_profile(labels, gm, wm, scored, bins)}


def _profile(labels: np.ndarray, gm: np.ndarray, wm: np.ndarray, scored: np.ndarray, bins: int) -> dict:
    tissue = ((gm + wm) >= 0.5) & scored
    frac = wm[tissue] / np.maximum(gm[tissue] + wm[tissue], 1e-6)
    is_wm = labels[tissue] == LABEL_CODES["wm"]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(frac, edges) - 1, 0, bins - 1)
    share = [float(is_wm[which == b].mean()) if (which == b).any() else float("nan") for b in range(bins)]
    centres = 0.5 * (edges[:-1] + edges[1:])
    crossing = float("nan")
    for b in range(bins - 1):
        lo, hi = share[b], share[b + 1]
        if lo < 0.5 <= hi:
            crossing = float(centres[b] + (0.5 - lo) / (hi - lo) * (centres[b + 1] - centres[b]))
            break
    return {"wm_share_per_bin": [round(v, 3) for v in share], "boundary_wm_fraction": round(crossing, 3)}


def segmentation_dice(seg_path: str | Path) -> dict[str, float]:
    """`tissue_dice` of a segmentation file (e.g. `<name>_seg.nii.gz` written by the segmenter's inference)."""
    img = nib.load(str(seg_path))
    return tissue_dice(np.asarray(img.dataobj), img.affine)
