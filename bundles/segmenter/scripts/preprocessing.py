"""The segmenter's one input chain, and the domain randomisation that makes the model scanner-agnostic.

`input_transforms` (load, RAS, profile spacing) and `intensity_transforms` (the normalisation) are the only
definition of what the network sees; `train.yaml`, `evaluate.yaml` and `inference.yaml` all build their
preprocessing from them, the training config putting its random augmentation between the two, so training and
inference cannot drift apart (tests/test_segmenter_preprocessing.py feeds one volume through both).

Normalisation: intensities are scaled so that the 0.5th percentile of the whole volume maps to 0 and the 99.5th
to 1 (clipped). A skull-stripped scan's exactly-zero background stays 0, a noisy background stays near 0, and the
brain lands in [0, 1] whatever the scanner's units. (The earlier z-score inside the non-zero region put a zero
background at the brain's mean minus ~3 SD on training data with noise and at 0 on skull-stripped data: the
model labelled a real skull-stripped brain as background.)

`augmentation_transforms` is the SynthSeg recipe on our label maps, from MONAI's random transforms where MONAI has
one. MONAI has no transform that draws an image from labels (`RandLabelToIntensityd`, transforms.py), none that
simulates thick slices along one random axis (`RandThickSliced`: RandSimulateLowResolution zooms all axes by one
factor) and none that zeroes the background as skull stripping does (`RandSkullStripd`); those three are here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    Spacingd,
    Transform,
)
from monai.utils import convert_to_dst_type, convert_to_tensor

from brainspade.errors import InputError

from .transforms import RandLabelToIntensityd

# percentiles of the whole volume mapped to 0 and 1 (see module docstring)
LOWER_PERCENTILE, UPPER_PERCENTILE = 0.5, 99.5


def input_transforms(
    keys: Sequence[str], spacing: Sequence[float], label_key: str | None = None, soft_keys: Sequence[str] = ()
) -> list:
    """Load, reorient to RAS and resample to the profile spacing (labels nearest-neighbour).

    `keys` are loaded; `label_key`, if among them, is resampled nearest and stored as uint8. `soft_keys` are
    multi-channel maps on the label's grid (a phantom's partial volumes, `pv`): loaded when an entry has them,
    resampled linearly and kept as float16 (ten channels per volume are held in the training cache).
    """
    keys = list(keys)
    soft = [k for k in soft_keys if k not in keys]
    all_keys = keys + soft
    modes = ["nearest" if k == label_key else "bilinear" for k in all_keys]
    chain = [
        LoadImaged(keys=all_keys, image_only=True, allow_missing_keys=True),
        EnsureChannelFirstd(keys=all_keys, allow_missing_keys=True),
        CheckImaged(keys=[k for k in keys if k != label_key]),
        Orientationd(
            keys=all_keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")), allow_missing_keys=True
        ),
        SetAsided(prefixes=[f"{k}_" for k in all_keys]),
        Spacingd(keys=all_keys, pixdim=list(spacing), mode=modes, allow_missing_keys=True),
        SetAsided(prefixes=[f"{k}_" for k in all_keys], restore=True),
    ]
    if label_key in keys:
        chain.append(EnsureTyped(keys=label_key, dtype=torch.uint8, allow_missing_keys=True))
    if soft:
        chain.append(EnsureTyped(keys=soft, dtype=torch.float16, allow_missing_keys=True))
    return chain


class CheckImaged(MapTransform):
    """Refuse what the network cannot segment, inside the data path, so every client gets the same clear error:
    the CLI checks files before it writes anything (scripts/inference.py), but MONAI Label and other clients
    hand the bundle its transforms directly. A 4D series would otherwise fail deep inside the UNet with a
    channel mismatch, and a NaN volume would come back silently all background."""

    def __init__(self, keys: Sequence[str] = ("image",)) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        for key in self.key_iterator(data):
            img = data[key]
            name = str(getattr(img, "meta", {}).get("filename_or_obj", key))
            if img.ndim != 4 or img.shape[0] != 1:
                raise InputError(
                    f"image {name!r} has {img.shape[0]} volumes (shape {tuple(img.shape[1:])}); accepted: "
                    "one 3D volume (split 4D series into 3D volumes first)"
                )
            if not bool(torch.isfinite(torch.as_tensor(img)).all()):
                raise InputError(f"image {name!r} holds NaN or infinite values; accepted: finite intensities")
            if not bool(torch.as_tensor(img).any()):
                raise InputError(f"image {name!r} is empty (all zeros); accepted: a brain MRI volume")
        return data


class ScalePercentilesd(MapTransform):
    """Map the `lower`/`upper` percentiles of the whole volume to 0/1 and clip: the mapping of MONAI's
    `ScaleIntensityRangePercentilesd(b_min=0, b_max=1, clip=True)`, which takes 166 ms on a 96^3 volume where
    NumPy's percentile takes 7 ms; run once per training draw, that difference was half the augmentation time.
    tests/test_segmenter_preprocessing.py checks the two agree."""

    def __init__(
        self, keys: Sequence[str] = ("image",), lower: float = LOWER_PERCENTILE, upper: float = UPPER_PERCENTILE
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.lower, self.upper = float(lower), float(upper)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            arr = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
            lo, hi = np.percentile(arr.numpy(), [self.lower, self.upper])
            scaled = ((arr - float(lo)) / max(float(hi - lo), 1e-8)).clamp_(0.0, 1.0)
            d[key] = convert_to_dst_type(scaled, img, dtype=torch.float32)[0]
        return d


def intensity_transforms(image_key: str = "image") -> list:
    """The normalisation every image gets last, in training and at inference."""
    return [
        ScalePercentilesd(keys=[image_key]),
        EnsureTyped(keys=image_key, dtype=torch.float32, allow_missing_keys=True),
    ]


class SetAsided(Transform):
    """Move entries named `<prefix>*` that are not dicts out of the way of MONAI's Spacingd (and back with
    `restore=True`). Spacingd calls `.update()` on every `image_*` entry as if it were a meta dict; MONAI Label's
    infer task puts `image_path` (a string) in the data, and inference crashed on it."""

    STASH = "_set_aside"

    def __init__(self, prefixes: Sequence[str], restore: bool = False) -> None:
        self.prefixes, self.restore = tuple(prefixes), restore

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.restore:
            d.update(d.pop(self.STASH, {}))
            return d
        aside = {
            k: v
            for k, v in d.items()
            if isinstance(k, str) and k.startswith(self.prefixes) and not isinstance(v, Mapping)
        }
        for k in aside:
            del d[k]
        if aside:
            d[self.STASH] = aside
        return d


class RandThickSliced(RandomizableTransform, MapTransform):
    """Simulate an acquisition with thick slices along one random axis (and coarser in-plane voxels).

    The image is blurred with the slice profile, sampled at the acquired resolution and interpolated back to the
    working grid: what a 5 mm axial scan looks like once resampled to 2 mm. Thicknesses are in mm; `spacing_mm`
    is the working grid's voxel size (thicknesses at or below it do nothing); `axes` are those the slices may
    be thick along (2 = axial in RAS).
    """

    def __init__(
        self,
        keys: Sequence[str] = ("image",),
        spacing_mm: float = 2.0,
        thickness_mm: Sequence[float] = (1.0, 6.0),
        in_plane_mm: Sequence[float] = (1.0, 3.0),
        prob: float = 0.5,
        axes: Sequence[int] = (0, 1, 2),
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.spacing_mm, self.thickness_mm, self.in_plane_mm = (
            float(spacing_mm),
            tuple(thickness_mm),
            tuple(in_plane_mm),
        )
        self.axes = tuple(int(a) for a in axes)
        self.resolution = np.ones(3)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        res = np.full(3, self.R.uniform(*self.in_plane_mm))
        res[self.axes[self.R.randint(len(self.axes))]] = self.R.uniform(*self.thickness_mm)
        self.resolution = res

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        factors = np.maximum(self.resolution / self.spacing_mm, 1.0)
        if np.all(factors < 1.05):
            return d
        for key in self.key_iterator(d):
            img = d[key]
            x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)[None]  # (1, C, X, Y, Z)
            shape = x.shape[2:]
            low = [max(2, int(round(s / f))) for s, f in zip(shape, factors, strict=True)]
            # area averaging is the slice profile (a box of the slice thickness); trilinear brings it back
            x = F.interpolate(F.adaptive_avg_pool3d(x, low), size=shape, mode="trilinear", align_corners=False)[0]
            d[key] = convert_to_dst_type(x, img, dtype=torch.float32)[0]
        return d


class RandSkullStripd(RandomizableTransform, MapTransform):
    """Set the image to exactly 0 outside the brain (label 0), as skull-stripped data has it."""

    def __init__(self, image_key: str = "image", label_key: str = "label", prob: float = 0.5) -> None:
        MapTransform.__init__(self, [image_key], allow_missing_keys=False)
        RandomizableTransform.__init__(self, prob)
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            d[self.image_key] = d[self.image_key] * (torch.as_tensor(d[self.label_key]) > 0)
        return d


def augmentation_transforms(
    spacing_mm: float,
    dr_prob: float = 0.3,
    skull_strip_prob: float = 0.5,
    dr_prior_prob: float = 0.0,
    soft_targets: bool = False,
    early_noise_prob: float = 0.0,
    image_key: str = "image",
    label_key: str = "label",
    pv_key: str = "pv",
) -> list:
    """Random geometry, contrast and acquisition for every training volume (whole volume, before the crop).

    `dr_prob`: chance that an entry's rendered image is replaced by one drawn from its label map with random
    per-label intensities (entries without an image always are; entries with partial volumes under `pv_key` are
    drawn from those); `dr_prior_prob` of those draws take a random contrast's tissue priors, widely jittered, as
    their means (`RandLabelToIntensityd`). `skull_strip_prob`: chance of an exactly-zero
    background. Probabilities and ranges were chosen to span the test domains: the style-b renderer (gamma,
    linear bias, 2-3x thicker slices), real skull-stripped 1 mm scans, and 5 mm axial scans. `soft_targets`: the
    partial-volume maps stay and move with the label (bilinear) for `PartialVolumeTargetd` after the crop.
    `early_noise_prob`: chance of zero-mean noise added before the blur and the thick-slice resampling, so that it
    comes out spatially correlated, as a coarser acquisition's noise does once resampled to the working grid. Tried
    against the 1.5 mm model's false brain in noisy 2 mm backgrounds, it did not pin it; reading in windows of the
    training patch did (docs/README.md, *Windows of the training patch*). Off by default.
    """
    keys, modes = [image_key, label_key], ["bilinear", "nearest"]
    if soft_targets:
        keys, modes = keys + [pv_key], modes + ["bilinear"]
    return [
        RandLabelToIntensityd(
            label_key=label_key,
            image_key=image_key,
            pv_key=pv_key,
            prior_prob=dr_prior_prob,
            std_range=(0.0, 0.1),
            background_zero_prob=0.5,
            always=True,
            prob=dr_prob,
            keep_pv=soft_targets,
        ),
        RandAffined(
            keys=keys,
            prob=0.8,
            rotate_range=[0.26] * 3,
            scale_range=[0.12] * 3,
            shear_range=[0.05] * 3,
            translate_range=[6] * 3,
            mode=modes,
            padding_mode="zeros",
            allow_missing_keys=True,
        ),
        RandBiasFieldd(keys=image_key, prob=0.6, coeff_range=(0.0, 0.4)),
        RandGaussianNoised(keys=image_key, prob=early_noise_prob, mean=0.0, std=0.06, sample_std=True),
        RandGaussianSmoothd(keys=image_key, prob=0.3, sigma_x=(0.2, 1.0), sigma_y=(0.2, 1.0), sigma_z=(0.2, 1.0)),
        RandThickSliced(keys=[image_key], spacing_mm=spacing_mm, prob=0.5),
        RandGaussianNoised(keys=image_key, prob=0.5, mean=0.0, std=0.05, sample_std=True),
        RandSkullStripd(image_key=image_key, label_key=label_key, prob=skull_strip_prob),
        RandAdjustContrastd(keys=image_key, prob=0.5, gamma=(0.6, 1.6)),
        RandFlipd(keys=keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
    ]


# the test conditions the shipped model is held to (configs/evaluate.yaml `test_condition`): the test volumes as
# rendered, skull-stripped to an exactly-zero background, and re-acquired as 5 mm axial slices
TEST_CONDITIONS = ("as_rendered", "zero_background", "thick_axial_5mm")


def condition_transforms(condition: str, spacing_mm: float, image_key: str = "image", label_key: str = "label") -> list:
    """Deterministic degradations of a test volume, applied between the input chain and the normalisation."""
    if condition == "as_rendered":
        return []
    if condition == "zero_background":
        return [RandSkullStripd(image_key=image_key, label_key=label_key, prob=1.0)]
    if condition == "thick_axial_5mm":
        return [
            RandThickSliced(
                keys=[image_key],
                spacing_mm=spacing_mm,
                thickness_mm=(5.0, 5.0),
                in_plane_mm=(spacing_mm, spacing_mm),
                prob=1.0,
                axes=(2,),
            )
        ]
    raise InputError(f"unknown test_condition {condition!r}; accepted: {', '.join(TEST_CONDITIONS)}")


def test_transforms(spacing: Sequence[float], condition: str = "as_rendered") -> list:
    """A labelled test volume as inference would read it, after the degradation `condition`."""
    return (
        input_transforms(["image", "label"], spacing, label_key="label")
        + condition_transforms(condition, float(spacing[0]))
        + intensity_transforms()
    )
