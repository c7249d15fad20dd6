"""The shipped segmenter on a real scan: nilearn's MNI152 2009 T1 (1 mm, skull-stripped), as shipped and re-saved
the ways users' scans arrive, segmented through configs/inference.yaml and scored against the template's own
grey/white-matter maps (brainspade.realscan)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from _segmenter_helpers import BUNDLE, INFER, run_bundle
from scipy import ndimage as ndi

from brainspade.realscan import (
    boundary_profile,
    reference_tissue,
    segmentation_dice,
    tissue_dice,
    tissue_scores,
    write_mni_t1,
)

# a regression guard under what the shipped weights measure (segmenter 0.3.0: GM 0.846-0.852, WM 0.807-0.818 over
# the variants, docs/quality.md); the target of issue 14 is 0.85, not yet met
MIN_TISSUE_DICE = 0.80


@pytest.mark.parametrize("variant", ["ras_1mm", "reoriented", "resampled"])
def test_shipped_segmenter_reads_the_real_mni152_t1(variant, tmp_path):
    scan = write_mni_t1(tmp_path / f"mni_{variant}.nii.gz", variant)
    out = tmp_path / "seg"
    run_bundle(INFER, bundle_root=str(BUNDLE), input_image=str(scan), output_dir=str(out))
    seg = nib.load(str(out / f"mni_{variant}_seg.nii.gz"))
    src = nib.load(str(scan))
    # the output lies on the input's own grid, whatever its orientation and spacing
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    dice = segmentation_dice(out / f"mni_{variant}_seg.nii.gz")
    assert dice["gm"] >= MIN_TISSUE_DICE and dice["wm"] >= MIN_TISSUE_DICE, dice
    # the brain is labelled as brain and the zero background as background
    volumes = json.loads((out / f"mni_{variant}_volumes.json").read_text())["volumes_ml"]
    assert 1600 < sum(v for k, v in volumes.items() if k != "background") < 2300, volumes  # template: 1940 mL


def test_boundary_profile_finds_where_a_segmentation_puts_the_gm_wm_boundary(tmp_path):
    scan = nib.load(str(write_mni_t1(tmp_path / "mni_ras.nii.gz", "ras_1mm")))
    ref, _ = reference_tissue(scan.affine, scan.shape)
    own = boundary_profile(ref, scan.affine)
    # the reference itself: no WM below a WM fraction of one half, all of it above, the crossing at 0.5
    assert own["wm_share_per_bin"][:4] == [0.0] * 4 and own["wm_share_per_bin"][-4:] == [1.0] * 4
    assert abs(own["boundary_wm_fraction"] - 0.5) <= 0.05
    # WM grown by one voxel into the GM: the boundary moves to a lower WM fraction
    grown = ref.copy()
    grown[ndi.binary_dilation(ref == 3) & (ref == 2)] = 3
    assert boundary_profile(grown, scan.affine)["boundary_wm_fraction"] < own["boundary_wm_fraction"] - 0.05
    # both figures from one resampling of the maps are the two functions' own
    assert tissue_scores(grown, scan.affine) == {
        **tissue_dice(grown, scan.affine),
        **boundary_profile(grown, scan.affine),
    }
