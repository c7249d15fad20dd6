"""The user's grid and the model's: a user's label map or reference scan, checked and mapped onto the profile grid.

The generator only sees the profile grid (RAS, profile spacing, profile shape); a user's label file keeps its own
grid, so the images made for it go back onto that grid with the inverse of the same MONAI transforms.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from brainspade.errors import InputError
from brainspade.io import check_resampled_size, load_nifti
from brainspade.labels import NUM_LABELS, check_int_labels, check_pv, int_to_pv, normalise_pv, pv_to_int

MIN_SIDE = 4  # a label map thinner than this is not a brain volume


def load_checked(path: str, what: str, accepted: str, spacing_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """brainspade.io.load_nifti, with what this option accepts added where its message does not say it; with
    `spacing_mm`, also refuses a grid too large once resampled to it (before resampling allocates it)."""
    try:
        data, affine = load_nifti(path, what)
        if spacing_mm is not None:
            check_resampled_size(data.shape, affine, spacing_mm, f"{what} {str(path)!r}")
        return data, affine
    except InputError as exc:
        msg = str(exc)
        if "accepted" in msg:
            raise
        raise InputError(f"{msg}; accepted: {accepted}") from None


def _brain_of_pv(x):
    return x[:1] < 0.5  # brain = voxels that are not mostly background


def _nonzero(x):
    return x > 0


def model_grid_transforms(profile, select_fn):
    """User grid -> model grid: RAS, profile spacing, crop to the brain, pad/crop to the profile shape.

    All MONAI invertible transforms, so the image made on the model grid goes back with `.inverse`.
    Bilinear resampling of (one-hot) partial volumes keeps boundary fractions; padding is empty (zeros).
    """
    from monai import transforms as mt

    return mt.Compose(
        [
            mt.Orientation(axcodes="RAS"),
            mt.Spacing(pixdim=(profile.spacing_mm,) * 3, mode="bilinear", padding_mode="zeros"),
            mt.CropForeground(select_fn=select_fn, margin=2, allow_smaller=True),
            mt.ResizeWithPadOrCrop(spatial_size=profile.shape),
        ]
    )


class LabelFile:
    """A user's label map (integer codes or 10-channel partial volumes), checked and mapped onto the model grid.

    `pv_model` (10, *profile.shape) is what the generator sees; `to_user_grid(image)` maps a model-grid image
    back onto the user's grid and affine; `labels`/`affine` are the user's own.
    """

    def __init__(self, path: str, profile):
        from monai.data import MetaTensor

        data, affine = load_checked(
            path,
            "label_file",
            f"finite integer labels 0..{NUM_LABELS - 1} or {NUM_LABELS}-channel partial volumes in [0, 1]",
            profile.spacing_mm,
        )
        what = f"label_file {str(path)!r}"
        if data.ndim == 4 and data.shape[0] == 1:
            data = data[0]
        if data.ndim == 3:
            self.labels = check_int_labels(data, what)
            pv = int_to_pv(self.labels)
        else:
            pv = check_pv(data, what)
            self.labels = pv_to_int(pv)
        if min(self.labels.shape) < MIN_SIDE:
            raise InputError(
                f"{what} has shape {tuple(self.labels.shape)}; accepted: a 3D label volume with every "
                f"side >= {MIN_SIDE} voxels"
            )
        if not (pv[0] < 0.5).any():
            raise InputError(f"{what} holds background only; accepted: a brain label map (codes 1..9)")
        self.affine = affine
        self.voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
        self.pv_user = pv
        self._xform = model_grid_transforms(profile, _brain_of_pv)
        pv_t = self._xform(MetaTensor(torch.from_numpy(pv), affine=torch.as_tensor(affine)))
        self._affine_model = pv_t.affine.clone()
        self._ops = copy.deepcopy(list(pv_t.applied_operations))
        self.pv_model = normalise_pv(pv_t.numpy())

    def to_user_grid(self, image: np.ndarray) -> np.ndarray:
        """(X, Y, Z) model-grid image -> image on the user's grid (same shape as the user's label map)."""
        from monai.data import MetaTensor

        img = MetaTensor(
            torch.as_tensor(image, dtype=torch.float32)[None],
            affine=self._affine_model.clone(),
            applied_operations=copy.deepcopy(self._ops),
        )  # inverse pops from them
        arr = np.asarray(self._xform.inverse(img)[0].cpu().numpy(), dtype=np.float32)
        if arr.shape != self.labels.shape:  # MONAI restores the original shape; guard against silent mismatch
            raise RuntimeError(f"inverse resampling gave shape {arr.shape}, expected {self.labels.shape}")
        return arr


def load_style_image(path: str, profile) -> torch.Tensor:
    """Reference scan -> (1, 1, *shape) tensor on the model grid, brain intensities scaled so p99 = 1."""
    from monai.data import MetaTensor

    data, affine = load_checked(path, "style_image", "one finite 3D MRI volume (.nii/.nii.gz)", profile.spacing_mm)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3 or min(data.shape) < MIN_SIDE:
        raise InputError(f"style_image {str(path)!r} has shape {tuple(data.shape)}; accepted: one 3D MRI volume")
    img = MetaTensor(torch.from_numpy(data[None]), affine=torch.as_tensor(affine))
    img = model_grid_transforms(profile, _nonzero)(img)
    arr = img.numpy()[0]
    brain = arr[arr > 0]
    if brain.size < 100:
        raise InputError(
            f"style_image {str(path)!r} has (almost) no non-zero voxels; accepted: a skull-stripped "
            "brain MRI with background 0"
        )
    arr = np.clip(arr, 0, None) / float(np.percentile(brain, 99))
    return torch.from_numpy(arr.astype(np.float32))[None, None]
