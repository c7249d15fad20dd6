"""Profiles: the grid every bundle works on, in MNI152 space (RAS), defined once.

`default` (2 mm, 96^3) trains on a 2-core CPU in hours; `paper` is the reference's scale for GPUs.
Every side is divisible by 32 (autoencoder x4, diffusion UNet x8 on the latent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

# Centre of the grid in MNI mm: the centre of the MNI152 brain's bounding box.
MNI_BRAIN_CENTRE_MM = (0.0, -18.0, 7.0)


@dataclass(frozen=True)
class Profile:
    name: str
    spacing_mm: float
    shape: tuple[int, int, int]

    @property
    def voxel_mm3(self) -> float:
        return float(self.spacing_mm**3)

    @property
    def affine(self) -> np.ndarray:
        """RAS voxel-to-MNI-mm affine with the grid centred on the brain."""
        aff = np.diag([self.spacing_mm] * 3 + [1.0])
        centre_vox = (np.asarray(self.shape, dtype=float) - 1) / 2
        aff[:3, 3] = np.asarray(MNI_BRAIN_CENTRE_MM) - self.spacing_mm * centre_vox
        return aff


PROFILES: dict[str, Profile] = {
    "default": Profile("default", 2.0, (96, 96, 96)),
    "paper": Profile("paper", 1.5, (128, 160, 128)),
    # for tests only: the real code paths on a grid small enough for CI seconds
    "tiny": Profile("tiny", 6.0, (32, 32, 32)),
}


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise InputError(f"unknown profile {name!r}; accepted: {', '.join(PROFILES)}")
    return PROFILES[name]
