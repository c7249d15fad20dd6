"""PNG previews: axial/coronal/sagittal slices of images with a label overlay (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io import atomic_write
from .labels import LABELS, NUM_LABELS

# one colour per label code (background transparent)
LABEL_COLOURS = np.array(
    [
        [0, 0, 0],
        [0.35, 0.55, 1.0],
        [0.55, 0.8, 0.4],
        [0.95, 0.95, 0.85],
        [0.95, 0.6, 0.2],
        [0.7, 0.45, 0.85],
        [1.0, 1.0, 0.0],
        [1.0, 0.1, 0.1],
        [0.1, 0.95, 0.95],
        [1.0, 0.3, 0.85],
    ]
)


def _slices(vol: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of a RAS volume, oriented for display (anterior/superior up)."""
    x, y, z = centre
    return [np.rot90(vol[:, :, z]), np.rot90(vol[:, y, :]), np.rot90(vol[x, :, :])]


def lesion_centre(labels: np.ndarray) -> list[int]:
    """Slice through the largest lesion if any, else through the brain's centre."""
    lesion = labels >= min(lab.code for lab in LABELS if lab.lesion)
    pts = np.argwhere(lesion) if lesion.any() else np.argwhere(labels > 0)
    if not len(pts):
        return [s // 2 for s in labels.shape]
    return [int(v) for v in np.median(pts, 0)]


def save_preview(
    path: str | Path, images: dict[str, np.ndarray], labels: np.ndarray, title: str = "", alpha: float = 0.45
) -> Path:
    """One row per image (its slices, then the same slices with the label overlay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = lesion_centre(labels)
    lab_slices = _slices(labels.astype(int), centre)
    rows = max(1, len(images))
    fig, axes = plt.subplots(rows, 6, figsize=(12, 2.1 * rows + 0.4), squeeze=False)
    for r, (name, img) in enumerate(images.items()):
        lo, hi = np.percentile(img, [1, 99.5])
        for c, (sl, lab) in enumerate(zip(_slices(img, centre), lab_slices, strict=True)):
            for k, overlay in enumerate((False, True)):
                ax = axes[r, c * 2 + k]
                ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi)
                if overlay:
                    rgba = np.zeros((*lab.shape, 4))
                    rgba[..., :3] = LABEL_COLOURS[np.clip(lab, 0, NUM_LABELS - 1)]
                    rgba[..., 3] = np.where(lab > 0, alpha, 0)
                    ax.imshow(rgba)
                ax.set_axis_off()
        axes[r, 0].set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()

    return _save_figure(fig, path)


def save_montage(
    path: str | Path, rows: list[tuple[str, dict[str, np.ndarray], np.ndarray]], alpha: float = 0.45
) -> Path:
    """One row per subject: an axial slice through its lesion for every contrast, then the labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(r[1]) for r in rows) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.9 * ncol, 1.9 * len(rows) + 0.3), squeeze=False)
    for r, (title, images, labels) in enumerate(rows):
        z = lesion_centre(labels)[2]
        for c, (name, img) in enumerate(images.items()):
            lo, hi = np.percentile(img, [1, 99.5])
            axes[r, c].imshow(np.rot90(img[:, :, z]), cmap="gray", vmin=lo, vmax=hi)
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        lab = np.rot90(labels[:, :, z].astype(int))
        axes[r, -1].imshow(LABEL_COLOURS[np.clip(lab, 0, NUM_LABELS - 1)])
        if r == 0:
            axes[r, -1].set_title("labels", fontsize=9)
        axes[r, 0].set_ylabel(title, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()

    return _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically, then free it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    finally:
        plt.close(fig)
