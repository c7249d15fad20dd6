"""label_ldm volume matching: every present requested lesion is brought to the request, exactly, inside the brain (full);
the default final trim does so only within +-25 % of the sampled volume and otherwise leaves the map as sampled."""

from __future__ import annotations

import numpy as np
import pytest
from label_ldm_helpers import BUNDLE
from scipy import ndimage

from brainspade.bundle import load_scripts
from brainspade.labels import CONDITION_KEYS, LABEL_CODES, int_to_pv, lesion_volumes_ml, pv_to_int

scripts = load_scripts(BUNDLE, "label_ldm_scripts")
VOXEL_MM3 = 8.0  # 2 mm: 125 voxels per mL


def _tumour_phantom(shape=(40, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """White-matter ball (the brain) holding a tumour: core inside enhancing rim inside oedema; WMH blob aside."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    r = np.sqrt(((grid - np.array([20, 20, 20])[:, None, None, None]) ** 2).sum(0))
    r_wmh = np.sqrt(((grid - np.array([20, 30, 20])[:, None, None, None]) ** 2).sum(0))
    lab = np.zeros(shape, dtype=np.int16)
    lab[r < 18] = LABEL_CODES["wm"]
    lab[r < 9] = LABEL_CODES["oedema"]
    lab[r < 5] = LABEL_CODES["enhancing"]
    lab[r < 3] = LABEL_CODES["tumour"]
    lab[r_wmh < 3] = LABEL_CODES["wmh"]
    pv = int_to_pv(lab).astype(np.float32)
    # soft lesion probabilities: what a decoder gives, so boundaries can move along them
    soft = np.exp(-np.maximum(r - 4.0, 0) / 2.0) * 0.2
    pv[LABEL_CODES["tumour"]] += soft
    pv /= pv.sum(0, keepdims=True)
    return pv, lab > 0


def _matched(status: dict, key: str) -> bool:
    return status[key].startswith("matched (sampled x")


def test_lesions_are_matched_exactly_and_stay_in_the_brain():
    pv, brain = _tumour_phantom()
    before = lesion_volumes_ml(pv_to_int(pv), VOXEL_MM3)
    req = {
        "wmh_ml": before["wmh_ml"] * 0.6,
        "tumour_ml": before["tumour_ml"] * 1.7,
        "oedema_ml": before["oedema_ml"] * 1.3,
        "enhancing_ml": before["enhancing_ml"] * 0.8,
    }
    out, status = scripts.match_lesion_volumes(pv, req, VOXEL_MM3, brain)
    after = lesion_volumes_ml(pv_to_int(out), VOXEL_MM3)
    assert all(_matched(status, k) for k in req), status
    assert status["tumour_ml"] == "matched (sampled x0.59)"  # the sampled size, as verification measures it
    for k, v in req.items():  # exact to the voxel
        assert abs(after[k] - v) <= VOXEL_MM3 / 1000 / 2 + 1e-9, (k, after[k], v)
    lab = pv_to_int(out)
    assert not np.isin(lab[~brain], [6, 7, 8, 9]).any()
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)  # still partial volumes
    assert (out >= 0).all()
    # the core grew outwards from where it was: still one compact component around the centre
    assert ndimage.label(lab == LABEL_CODES["tumour"])[1] == 1 and lab[20, 20, 20] == LABEL_CODES["tumour"]


def test_far_off_lesions_are_matched_too_compactly_and_only_into_their_tissue():
    pv, brain = _tumour_phantom()
    before = pv_to_int(pv)
    vols = lesion_volumes_ml(before, VOXEL_MM3)
    # WMH x4 larger than sampled (grows far beyond its soft boundary), tumour core shrunk to a fifth
    req = {
        "wmh_ml": vols["wmh_ml"] * 4.0,
        "tumour_ml": vols["tumour_ml"] / 5.0,
        "oedema_ml": vols["oedema_ml"] * 1.5,
        "enhancing_ml": vols["enhancing_ml"] * 0.6,
    }
    out, status = scripts.match_lesion_volumes(pv, req, VOXEL_MM3, brain)
    assert all(_matched(status, k) for k in req), status
    after = pv_to_int(out)
    got = lesion_volumes_ml(after, VOXEL_MM3)
    for k, v in req.items():
        assert got[k] == pytest.approx(v, abs=VOXEL_MM3 / 1000 / 2 + 1e-9), k
    wmh, core = after == LABEL_CODES["wmh"], after == LABEL_CODES["tumour"]
    assert ndimage.label(wmh)[1] == 1 and ndimage.label(core)[1] == 1  # grown shell by shell, shrunk to the centre
    assert core[20, 20, 20] and wmh[20, 30, 20]
    # WMH grows only into white matter: the voxels it gained were white matter, never a tumour part
    gained = wmh & (before != LABEL_CODES["wmh"])
    assert gained.any() and (before[gained] == LABEL_CODES["wm"]).all()
    assert not np.isin(after[~brain], [6, 7, 8, 9]).any()


def test_shrinking_separate_spots_keeps_each_spot():
    """WMH come as many spots: shrinking erodes each towards its own centre, the faint one as much as the bright."""
    shape = (30, 30, 30)
    lab = np.full(shape, LABEL_CODES["wm"], dtype=np.int16)
    lab[4:9, 4:9, 4:9] = LABEL_CODES["wmh"]
    lab[18:23, 18:23, 18:23] = LABEL_CODES["wmh"]
    pv = int_to_pv(lab).astype(np.float32)
    pv[LABEL_CODES["wmh"], 18:23, 18:23, 18:23] = 0.4  # a faint spot (still WMH by the 0.3 rule)
    pv[LABEL_CODES["wm"], 18:23, 18:23, 18:23] = 0.6
    n = int((lab == LABEL_CODES["wmh"]).sum())
    out, status = scripts.match_lesion_volumes(pv, {"wmh_ml": n / 3 * VOXEL_MM3 / 1000}, VOXEL_MM3, lab > 0)
    wmh = pv_to_int(out) == LABEL_CODES["wmh"]
    assert status["wmh_ml"].startswith("matched") and abs(int(wmh.sum()) - round(n / 3)) <= 1
    assert ndimage.label(wmh)[1] == 2 and wmh[6, 6, 6] and wmh[20, 20, 20]  # both spots, each around its centre
    assert min(int(wmh[:12].sum()), int(wmh[12:].sum())) >= wmh.sum() / 3  # the faint spot shrank as much


def test_absent_lesions_are_not_created_and_walled_in_growth_is_reported():
    pv, brain = _tumour_phantom()
    pv[LABEL_CODES["wmh"]] = 0
    pv /= pv.sum(0, keepdims=True)
    _, status = scripts.match_lesion_volumes(pv, {"wmh_ml": 2.0}, VOXEL_MM3, brain)
    assert status["wmh_ml"] == "absent" and status["tumour_ml"] == "not requested"
    # a lesion drawn at under a fifth of its request is not grown from its few voxels: left as sampled
    pv, brain = _tumour_phantom()
    before = pv_to_int(pv)
    wmh_ml = lesion_volumes_ml(before, VOXEL_MM3)["wmh_ml"]
    out, status = scripts.match_lesion_volumes(pv, {"wmh_ml": wmh_ml * 6.0}, VOXEL_MM3, brain)
    assert status["wmh_ml"] == "not drawn (sampled x0.17)"
    assert ((pv_to_int(out) == LABEL_CODES["wmh"]) == (before == LABEL_CODES["wmh"])).all()
    # a core asked to grow where it cannot (its enhancing rim was requested as 0, so it may not take those voxels)
    # stops and says how many voxels it lacks
    lab = pv_to_int(pv)
    core_ml = lesion_volumes_ml(lab, VOXEL_MM3)["tumour_ml"]
    out, status = scripts.match_lesion_volumes(pv, {"tumour_ml": core_ml * 3, "enhancing_ml": 0.0}, VOXEL_MM3, brain)
    n_core = int((lab == LABEL_CODES["tumour"]).sum())
    assert status["tumour_ml"] == f"short by {2 * n_core} voxels (sampled x0.33)"
    assert ((pv_to_int(out) == LABEL_CODES["tumour"]) == (lab == LABEL_CODES["tumour"])).all()
    assert not np.isin(pv_to_int(out)[~brain], [6, 7, 8, 9]).any()


def test_trim_bounds_are_a_quarter_of_the_sampled_volume():
    lo, hi = scripts.volume_matching.trim_bounds(0.25)
    assert lo == pytest.approx(0.8) and hi == pytest.approx(4 / 3)  # request = sampled x1.25 .. x0.75


def test_trim_moves_lesions_within_the_tolerance_and_leaves_maps_further_off_as_sampled():
    pv, brain = _tumour_phantom()
    before = pv_to_int(pv)
    vols = lesion_volumes_ml(before, VOXEL_MM3)
    trim = scripts.volume_matching.trim_lesion_volumes
    # every lesion within +-25 % of its sampled volume: each is brought to the request, to the voxel
    near = {"wmh_ml": vols["wmh_ml"] * 1.2, "tumour_ml": vols["tumour_ml"] * 0.8, "oedema_ml": vols["oedema_ml"]}
    out, status, within = trim(pv, {**near, "enhancing_ml": vols["enhancing_ml"] * 1.1}, VOXEL_MM3, brain)
    got = lesion_volumes_ml(pv_to_int(out), VOXEL_MM3)
    assert within and all(status[k].startswith("trimmed (sampled x") for k in CONDITION_KEYS), status
    for k, v in near.items():
        assert got[k] == pytest.approx(v, abs=VOXEL_MM3 / 1000 / 2 + 1e-9), k
    # the core asked at x2 of what was drawn (sampled x0.50): nothing moves, the status says which lesion is off
    req = {**near, "tumour_ml": vols["tumour_ml"] * 2.0, "enhancing_ml": 0.0}
    out, status, within = trim(pv, req, VOXEL_MM3, brain)
    assert not within and np.array_equal(out, pv)
    assert status["tumour_ml"] == "outside +-25 % (sampled x0.50)" and status["enhancing_ml"] == "not requested"
    assert status["wmh_ml"].startswith("left as sampled (sampled x0.8")
    # a requested lesion the network did not draw: absent, never created
    pv[LABEL_CODES["wmh"]] = 0
    pv /= pv.sum(0, keepdims=True)
    out, status, within = trim(pv, {"wmh_ml": 1.0}, VOXEL_MM3, brain)
    assert not within and status["wmh_ml"] == "absent" and not (pv_to_int(out) == LABEL_CODES["wmh"]).any()
    # a wider tolerance trims what +-25 % refuses
    pv, brain = _tumour_phantom()
    _, status, within = trim(pv, {"wmh_ml": vols["wmh_ml"] * 1.5}, VOXEL_MM3, brain, 0.6)
    assert within and status["wmh_ml"].startswith("trimmed (sampled x0.6")  # x1.5 is past +-25 %, within +-60 %
