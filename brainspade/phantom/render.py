"""Render MRI contrasts from partial-volume maps (the phantom's "scanner").

Style "a" is the training scanner: per-tissue priors with small subject jitter, smooth multiplicative
bias, isotropic blur, Rician noise. Style "b" is an independently parameterised held-out domain:
gamma-warped contrast, a linear+sinusoidal bias, thick-slice (anisotropic) blur, Gaussian noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..contrasts import INTENSITY_PRIORS
from ..labels import LABELS
from .deform import smooth_noise


def _mix(pv: np.ndarray, means: np.ndarray) -> np.ndarray:
    return np.tensordot(means.astype(np.float32), pv, axes=1)


def render(pv: np.ndarray, contrast: str, rng: np.random.Generator, style: str = "a") -> np.ndarray:
    """One contrast image (X, Y, Z) float32, brain 99th percentile ~1, background ~0 + noise."""
    prior = np.array([INTENSITY_PRIORS[contrast][lab.key] for lab in LABELS], np.float32)
    shape = pv.shape[1:]
    if style == "a":
        means = prior * (1 + rng.normal(0, 0.05, prior.shape))
        img = _mix(pv, means) * (1 + 0.04 * smooth_noise(rng, shape, coarse=24))
        bias = np.exp(0.15 * smooth_noise(rng, shape, coarse=4))
        img = ndi.gaussian_filter(img * bias, sigma=rng.uniform(0.3, 0.7))
        sigma = rng.uniform(0.01, 0.03)
        img = np.sqrt((img + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    elif style == "b":
        gamma = rng.uniform(0.7, 1.4)
        means = np.clip(prior + rng.normal(0, 0.08, prior.shape), 0.02, None) ** gamma
        means[0] = 0.0
        img = _mix(pv, means) * (1 + 0.08 * smooth_noise(rng, shape, coarse=32))
        axis = rng.integers(3)
        ramp = np.linspace(-1, 1, shape[axis]).reshape([-1 if i == axis else 1 for i in range(3)])
        bias = 1 + rng.uniform(-0.25, 0.25) * ramp + 0.08 * np.sin(rng.uniform(2, 5) * ramp)
        sig = [rng.uniform(0.2, 0.5)] * 3
        sig[rng.integers(3)] = rng.uniform(1.0, 1.6)  # thick slices along one axis
        img = ndi.gaussian_filter(img * bias, sigma=sig)
        img = img + rng.normal(0, rng.uniform(0.015, 0.04), shape)
    else:
        raise ValueError(f"unknown render style {style!r}; accepted: a, b")
    brain = pv[0] < 0.5
    scale = np.percentile(img[brain], 99) if brain.any() else 1.0
    return (img / max(float(scale), 1e-6)).astype(np.float32)
