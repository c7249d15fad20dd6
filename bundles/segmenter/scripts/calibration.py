"""Label-prior calibration: one offset per label added to the network's log-probabilities, fitted on validation data.

Why: the network learns on heavily augmented volumes (blur, thick slices, noise, random contrasts), so on a clean
scan its label priors are off. Measured with 0.4.1 on the 15 validation subjects of `data/phantoms/default` (all
four contrasts): it labels CSF at 0.83x and WM at 0.89x their true volumes and GM at 1.10x, and on the real MNI152 T1
it puts the GM/WM boundary at a WM fraction of 0.67 (the reference's is 0.5). Adding a constant per label to the
log-probabilities before the argmax is the Bayes correction for a changed label prior (logit adjustment); it moves
each boundary without retraining, and with offsets of 0 it is the network unchanged. MONAI has no such transform or
fitting step, so both are here: `OffsetFitter` finds the offsets that maximise the mean Dice over the labels,
pooled over a validation set, by coordinate ascent on a grid; `ClassOffsetInferer` applies them at inference.

The offsets belong to one set of weights: the file records the weights' SHA-256, and `read_class_offsets` applies
them only to those weights (other weights, e.g. `--ckpt_path` of a new run, are read without offsets, with a
warning), so a retrained model never inherits another model's calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from brainspade.errors import InputError
from brainspade.io import load_json, save_json
from brainspade.sharding import file_sha256

from .train_utils import check_fits

logger = logging.getLogger(__name__)

FORMAT = "brainspade-segmenter-class-offsets-1"


class ClassOffsetInferer(Inferer):
    """`inferer`'s scores plus one offset per label (channel); `offsets=None` returns them unchanged. Applied to
    log-probabilities (or logits: a softmax is unchanged by a constant per voxel, so both shift the same way)."""

    def __init__(self, inferer: Inferer, offsets: Sequence[float] | None = None) -> None:
        super().__init__()
        self.inferer = inferer
        self.offsets = None if offsets is None else torch.as_tensor(list(offsets), dtype=torch.float32)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        scores = self.inferer(inputs, network, *args, **kwargs)
        if self.offsets is None:
            return scores
        if scores.shape[1] != len(self.offsets):
            raise InputError(
                f"the class offsets hold {len(self.offsets)} labels and the network gives {scores.shape[1]}; "
                "refit them for these weights (configs/calibrate.yaml) or pass --class_offsets_path null"
            )
        shape = (1, -1) + (1,) * (scores.ndim - 2)
        return scores + self.offsets.to(device=scores.device, dtype=scores.dtype).view(shape)


class OffsetFitter:
    """Collects (log-probabilities, labels) of validation volumes and fits per-label offsets.

    A voxel whose two best scores differ by more than `margin` keeps its label under any offsets within
    ±margin/2, so it is counted once (`add`); the others are kept, subsampled to `max_voxels` in `fit`, and
    re-labelled for each candidate. The offsets are given relative to the background's (only differences
    matter), so its own is 0."""

    def __init__(self, num_labels: int, margin: float = 3.0, max_voxels: int = 2_000_000, seed: int = 0) -> None:
        self.num_labels, self.margin, self.max_voxels, self.seed = int(num_labels), float(margin), int(max_voxels), seed
        self.fixed = np.zeros((3, self.num_labels), np.float64)  # true positives, predicted, reference counts
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.volumes = 0

    def _counts(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        k = self.num_labels
        return np.stack(
            [
                np.bincount(label[pred == label], minlength=k)[:k],
                np.bincount(pred, minlength=k)[:k],
                np.bincount(label, minlength=k)[:k],
            ]
        ).astype(np.float64)

    def add(self, log_probs: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor) -> None:
        """One volume: scores (num_labels, *spatial) and integer labels (*spatial) on the same grid."""
        scores = torch.as_tensor(log_probs).float().reshape(self.num_labels, -1).cpu().numpy()
        lab = torch.as_tensor(label).reshape(-1).cpu().numpy().astype(np.int64)
        if lab.size != scores.shape[1]:
            raise InputError(f"labels of {lab.size} voxels for scores of {scores.shape[1]}: not the same grid")
        top2 = np.partition(scores, self.num_labels - 2, axis=0)[-2:]
        uncertain = (top2[1] - top2[0]) < self.margin
        self.fixed += self._counts(scores[:, ~uncertain].argmax(0), lab[~uncertain])
        self.scores.append(scores[:, uncertain].astype(np.float16))
        self.labels.append(lab[uncertain].astype(np.uint8))
        self.volumes += 1

    def fit(self, grid: Sequence[float] | None = None, rounds: int = 4) -> dict:
        """Offsets maximising the mean pooled Dice over labels 1.. (those present), with the Dice before and after."""
        if not self.volumes:
            raise InputError("no validation volumes to fit class offsets on")
        grid = np.round(np.arange(-1.5, 1.51, 0.1), 2) if grid is None else np.asarray(grid, np.float32)
        scores = np.concatenate(self.scores, axis=1) if self.scores else np.zeros((self.num_labels, 0), np.float16)
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.uint8)
        scale = 1.0
        if labels.size > self.max_voxels:
            keep = np.random.default_rng(self.seed).choice(labels.size, self.max_voxels, replace=False)
            scale = labels.size / self.max_voxels
            scores, labels = scores[:, keep], labels[keep]
        scores = scores.astype(np.float32)
        labels = labels.astype(np.int64)

        def dice(offsets: np.ndarray) -> np.ndarray:
            tp, pred, ref = self.fixed + scale * self._counts((scores + offsets[:, None]).argmax(0), labels)
            return 2 * tp / np.maximum(pred + ref, 1)

        present = (self.fixed[2] + scale * np.bincount(labels, minlength=self.num_labels)) > 0
        present[0] = False

        def objective(offsets: np.ndarray) -> float:
            return float(dice(offsets)[present].mean()) if present.any() else 0.0

        offsets = np.zeros(self.num_labels, np.float32)
        best = before = objective(offsets)
        # the background is searched too (moving it moves every other label against it at once, which a
        # one-label step cannot do), then taken back to 0: only differences between offsets change the argmax
        searched = [0] + [int(k) for k in np.flatnonzero(present)]
        for _ in range(int(rounds)):
            moved = False
            for k in searched:
                for value in grid:
                    trial = offsets.copy()
                    trial[k] = value
                    score = objective(trial)
                    if score > best + 1e-6:
                        best, offsets, moved = score, trial, True
            if not moved:
                break
        offsets = np.round(offsets - offsets[0], 3)
        d0, d1 = dice(np.zeros(self.num_labels, np.float32)), dice(offsets)
        return {
            "offsets": [round(float(v), 3) for v in offsets],
            "mean_dice_before": round(before, 4),
            "mean_dice_after": round(best, 4),
            "dice_before": [round(float(v), 4) if p else None for v, p in zip(d0, present, strict=True)],
            "dice_after": [round(float(v), 4) if p else None for v, p in zip(d1, present, strict=True)],
            "volumes": self.volumes,
        }


def read_class_offsets(
    path: str | Path | None, ckpt_path: str | Path, num_labels: int | None = None
) -> list[float] | None:
    """The offsets in `path` if they were fitted for the weights in `ckpt_path`; None if there is no file (or
    `path` is null/empty) or they belong to other weights (with a warning). A malformed file, or one with another
    number of labels than `num_labels`, is an InputError."""
    if path in (None, "", "null", "none", "None"):
        return None
    p = Path(path)
    if not p.is_file():
        return None
    data = load_json(p, "class offsets file")
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("offsets"), list):
        raise InputError(f"{p} is not a class offsets file (format {FORMAT}, written by configs/calibrate.yaml)")
    try:
        offsets = [float(v) for v in data["offsets"]]
    except (TypeError, ValueError):
        raise InputError(f"{p}: offsets must be numbers") from None
    if not all(np.isfinite(offsets)):
        raise InputError(f"{p}: offsets must be finite numbers")
    if num_labels is not None and len(offsets) != int(num_labels):
        raise InputError(f"{p} holds {len(offsets)} offsets for a network of {num_labels} labels")
    if not Path(ckpt_path).is_file() or data.get("weights_sha256") != file_sha256(ckpt_path):
        logger.warning("class offsets in %s were fitted for other weights than %s: not applied", p, ckpt_path)
        return None
    return offsets


def calibrate(
    network: torch.nn.Module,
    inferer: Inferer,
    dataset: Sequence[dict],
    ckpt_path: str | Path,
    output_path: str | Path,
    num_labels: int,
    device: torch.device,
    fitted_on: str,
    overwrite: bool = False,
) -> dict:
    """Run `network` (the weights in `ckpt_path`) through `inferer` on every (image, label) of `dataset`, fit the
    offsets and write them with the weights' hash to `output_path` (atomically; an existing file only with
    `overwrite`)."""
    out = Path(output_path)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite true to replace it")
    if Path(ckpt_path).resolve() == out.resolve():
        raise InputError("output_path is the weights file: inputs are never outputs")
    check_fits(ckpt_path, network, "weights")  # readable, and load into `network` exactly
    network.eval()
    fitter = OffsetFitter(num_labels)
    with torch.no_grad():
        for i, item in enumerate(dataset):
            image = torch.as_tensor(item["image"])[None].float().to(device)
            scores = torch.log_softmax(inferer(image, network).float(), dim=1)[0]
            fitter.add(scores, torch.as_tensor(item["label"])[0])
            logger.info("calibration volume %d/%d", i + 1, len(dataset))
    result = {"format": FORMAT, **fitter.fit(), "weights_sha256": file_sha256(ckpt_path), "fitted_on": fitted_on}
    save_json(out, result)
    logger.info(
        "class offsets %s: mean Dice %.4f -> %.4f on %d volumes, written to %s",
        result["offsets"],
        result["mean_dice_before"],
        result["mean_dice_after"],
        result["volumes"],
        out,
    )
    return result
