"""The transforms MONAI does not provide.

`RandLabelToIntensityd`: SynthSeg-style domain randomisation draws a whole new image from a label map
(a random mean and spread per label), or from partial-volume maps where an entry has them. MONAI's random
intensity transforms (RandBiasFieldd, RandGaussianNoised, RandGaussianSmoothd, RandAdjustContrastd,
RandSimulateLowResolutiond) all modify an existing image; none maps labels to random intensities, so this one
does, and the configs chain MONAI's transforms after it for bias, blur, gamma, resolution and noise.

`PartialVolumeTargetd`: the training target as soft labels, a voxel's tissue fractions where the entry has
partial-volume maps and the one-hot label elsewhere. MONAI's AsDiscreted one-hot encodes a label, but nothing
swaps in a second map per entry, so this one does.

`SaveSegmentationd`: writes `<name>_seg.nii.gz` on the input's grid plus `<name>_volumes.json` (mL per
label). MONAI's SaveImaged writes in place (a killed run leaves a truncated file) and has no volume
report, so this writer goes through brainspade.io's temp-file-then-rename.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

from brainspade.contrasts import CONTRASTS, INTENSITY_PRIORS
from brainspade.io import atomic_write, safe_id, save_json
from brainspade.labels import LABELS, NUM_LABELS


class RandLabelToIntensityd(RandomizableTransform, MapTransform):
    """Draw `image_key` from `label_key` (integer labels, channel-first) with random per-label Gaussians.

    Applied to entries that have no `image_key` (domain-randomisation entries of the datalist) or, with
    `always=True`, to every entry. Background keeps intensity 0 with probability `background_zero_prob`
    (skull-stripped data), else gets a random level like any other label.

    An entry holding partial-volume maps under `pv_key` (one channel per label, summing to 1) is drawn from them
    instead: each voxel mixes the labels' random means and spreads by its fractions, as a scanner's voxel
    averages the tissues inside it. Drawn from hard labels, every boundary is a step; the 2 mm model trained so
    placed the real MNI152 T1's GM/WM boundary where the template's WM fraction is 0.68, not 0.5, and further
    into the WM the lower the GM/WM contrast. The maps are dropped once used, unless `keep_pv` (soft targets).

    With probability `prior_prob` the means are not uniform but a random contrast's tissue priors
    (`brainspade.contrasts.INTENSITY_PRIORS`), each label's scaled by a log-normal factor of spread `prior_jitter`:
    images that look like a T1, T2, FLAIR or T1ce whose tissue contrasts stray far from the renderer's (whose
    per-tissue jitter is 5 %). Uniform means alone give realistic tissue orderings rarely; the real MNI152 T1 sits
    where the renderer never goes (CSF darker and GM nearer WM than the T1 priors). Fine-tunes with both did not
    move that boundary (measured: docs/README.md, "Where the boundary lies"), so the shipped recipe has neither.
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        mean_range: Sequence[float] = (0.0, 1.0),
        std_range: Sequence[float] = (0.0, 0.08),
        background_zero_prob: float = 0.8,
        num_labels: int = NUM_LABELS,
        always: bool = False,
        prob: float = 1.0,
        pv_key: str | None = "pv",
        prior_prob: float = 0.0,
        prior_jitter: float = 0.3,
        keep_pv: bool = False,
    ) -> None:
        MapTransform.__init__(self, [label_key], allow_missing_keys=False)
        RandomizableTransform.__init__(self, prob)
        self.label_key, self.image_key, self.pv_key = label_key, image_key, pv_key
        self.mean_range, self.std_range = tuple(mean_range), tuple(std_range)
        self.background_zero_prob, self.num_labels, self.always = background_zero_prob, num_labels, always
        self.prior_prob, self.prior_jitter = float(prior_prob), float(prior_jitter)
        self.keep_pv = bool(keep_pv)  # the maps stay for the soft training targets (PartialVolumeTargetd)
        self.priors = np.array([[INTENSITY_PRIORS[c][lab.key] for lab in LABELS] for c in CONTRASTS], np.float32)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        pv = (d.get if self.keep_pv else d.pop)(self.pv_key, None) if self.pv_key else None
        if self.image_key in d and not self.always:
            return d
        self.randomize(None)
        if not self._do_transform and self.image_key in d:
            return d
        lab = d[self.label_key]
        if self.R.rand() < self.prior_prob and self.num_labels == self.priors.shape[1]:
            jitter = np.exp(self.R.normal(0.0, self.prior_jitter, self.num_labels))
            means = (self.priors[self.R.randint(len(self.priors))] * jitter).astype(np.float32)
        else:
            means = self.R.uniform(*self.mean_range, self.num_labels).astype(np.float32)
        stds = self.R.uniform(*self.std_range, self.num_labels).astype(np.float32)
        if self.R.rand() < self.background_zero_prob:
            means[0] = stds[0] = 0.0
        # torch's generator, seeded from this transform's state: 4x faster than NumPy's normal draw at 96^3
        gen = torch.Generator().manual_seed(int(self.R.randint(2**31 - 1)))
        if pv is not None:
            frac = convert_to_tensor(pv, dtype=torch.float32, track_meta=False)
            if frac.shape[0] != self.num_labels or frac.shape[1:] != tuple(lab.shape[1:]):
                raise ValueError(
                    f"partial volumes {tuple(frac.shape)} do not match {self.num_labels} labels on the label grid "
                    f"{tuple(lab.shape[1:])}"
                )
            mean_map = torch.tensordot(torch.from_numpy(means), frac, dims=1)[None]
            std_map = torch.tensordot(torch.from_numpy(stds), frac, dims=1)[None]
            img = mean_map + std_map * torch.randn(tuple(mean_map.shape), generator=gen)
        else:
            idx = torch.as_tensor(lab).long().clamp(0, self.num_labels - 1)
            noise = torch.randn(tuple(idx.shape), generator=gen)
            img = torch.from_numpy(means)[idx] + torch.from_numpy(stds)[idx] * noise
        if isinstance(lab, MetaTensor):
            img = MetaTensor(img, affine=lab.affine.clone(), meta=dict(lab.meta))
        d[self.image_key] = img
        return d


class PartialVolumeTargetd(MapTransform):
    """Replace `label_key` (integer labels, channel-first) by soft targets: the entry's partial-volume maps under
    `pv_key` (renormalised to sum 1, then dropped) where it has them, else the label one-hot encoded.

    The 2 mm phantom labels are the argmax of their partial volumes, so a model trained on them learns each
    boundary voxel as whichever tissue holds the most of it, and on the real MNI152 T1 it put the GM/WM boundary
    where the WM fraction is 0.58-0.68, not 0.5 (docs/README.md, "Where the boundary lies"). Cross-entropy
    against the fractions is lowest where the predicted probabilities are the fractions, so the probabilities
    inference resamples to the input's grid carry them. Every target of a batch has `num_labels` float channels.
    """

    def __init__(self, label_key: str = "label", pv_key: str = "pv", num_labels: int = NUM_LABELS) -> None:
        MapTransform.__init__(self, [label_key], allow_missing_keys=False)
        self.label_key, self.pv_key, self.num_labels = label_key, pv_key, num_labels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        lab = d[self.label_key]
        pv = d.pop(self.pv_key, None)
        if pv is not None:
            frac = convert_to_tensor(pv, dtype=torch.float32, track_meta=False).clamp_min(0.0)
            if frac.shape != (self.num_labels, *lab.shape[1:]):
                raise ValueError(f"partial volumes {tuple(frac.shape)} do not match the label {tuple(lab.shape)}")
            # resampled maps (bilinear affine, zero padding) no longer sum to 1 everywhere: outside is background
            frac[0] += (1.0 - frac.sum(0)).clamp_min(0.0)
            target = frac / frac.sum(0, keepdim=True)
        else:
            idx = convert_to_tensor(lab, track_meta=False).long().clamp(0, self.num_labels - 1)[0]
            target = torch.nn.functional.one_hot(idx, self.num_labels).permute(3, 0, 1, 2).float()
        if isinstance(lab, MetaTensor):
            target = MetaTensor(target, affine=lab.affine.clone(), meta=dict(lab.meta))
        d[self.label_key] = target
        return d


def voxel_volume_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


class SaveSegmentationd(MapTransform):
    """Write `<output_dir>/<name>_seg.nii.gz` (uint8 labels on the grid of `pred`'s affine) and
    `<name>_volumes.json` atomically. `pred` must be the inverted (input-grid) argmax; `name_key` names it."""

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | Path = ".",
        name_key: str = "name",
        image_key: str = "image",
    ) -> None:
        super().__init__(keys)
        self.output_dir, self.name_key, self.image_key = Path(output_dir), name_key, image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            arr = np.asarray(torch.as_tensor(pred).detach().cpu().numpy())
            if arr.ndim == 4:
                arr = arr[0]
            labels = np.rint(arr).astype(np.uint8)
            ref = d.get(self.image_key)
            affine = np.asarray((pred.affine if isinstance(pred, MetaTensor) else ref.affine).cpu(), dtype=np.float64)
            name = safe_id(str(d[self.name_key]))
            img = nib.Nifti1Image(labels, affine)
            meta = pred.meta if isinstance(pred, MetaTensor) else {}
            code = int(np.asarray(meta.get("sform_code", 1)).reshape(-1)[0]) if "sform_code" in meta else 1
            img.header.set_sform(affine, code=code or 1)
            img.header.set_qform(affine, code=code or 1)
            img.header.set_xyzt_units("mm")
            vox_ml = voxel_volume_ml(affine)
            counts = np.bincount(labels.reshape(-1), minlength=NUM_LABELS)
            vols = {lab.key: round(float(counts[lab.code]) * vox_ml, 4) for lab in LABELS}
            outputs = [self.output_dir / f"{name}_seg.nii.gz", self.output_dir / f"{name}_volumes.json"]
            try:
                atomic_write(outputs[0], lambda tmp: nib.save(img, tmp))
                save_json(
                    outputs[1],
                    {
                        "id": name,
                        "unit": "mL",
                        "voxel_ml": vox_ml,
                        "volumes_ml": vols,
                        "brain_ml": round(sum(v for k, v in vols.items() if k != "background"), 4),
                        "labels": {lab.key: lab.code for lab in LABELS},
                        "shape": list(labels.shape),
                        "affine": affine.tolist(),
                    },
                )
            except OSError as exc:  # disk full, quota: an image's results are both written or neither
                for path in outputs:
                    path.unlink(missing_ok=True)
                # inside the evaluator's loop, so the one-line error is given here (an exception would reach the
                # user as Ignite's traceback)
                print(
                    f"error: cannot write {name}'s results into {str(self.output_dir)!r} "
                    f"({exc.strerror or exc}); nothing of {name} was kept; accepted: a folder with free space",
                    file=sys.stderr,
                    flush=True,
                )
                raise SystemExit(2) from None
        return d
