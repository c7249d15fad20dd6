import numpy as np
import pytest

from brainspade import CONTRASTS, PROFILES, check_contrasts, get_profile
from brainspade.errors import InputError
from brainspade.labels import (
    CONDITION_KEYS,
    LABELS,
    LESION_CODES,
    NUM_LABELS,
    check_int_labels,
    check_pv,
    int_to_pv,
    lesion_volumes_ml,
    normalise_pv,
    pv_to_int,
)


def test_label_table_codes_are_the_documented_ones():
    assert [lab.key for lab in LABELS] == [
        "background",
        "csf",
        "gm",
        "wm",
        "dgm",
        "brainstem",
        "wmh",
        "tumour",
        "oedema",
        "enhancing",
    ]
    assert [lab.code for lab in LABELS] == list(range(10)) and NUM_LABELS == 10
    assert LESION_CODES == (6, 7, 8, 9)
    assert CONDITION_KEYS == ("wmh_ml", "tumour_ml", "oedema_ml", "enhancing_ml")


def test_int_pv_round_trip():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, NUM_LABELS, (7, 5, 6))
    pv = int_to_pv(lab)
    assert pv.shape == (NUM_LABELS, 7, 5, 6) and np.allclose(pv.sum(0), 1)
    assert np.array_equal(pv_to_int(pv), lab)


def test_pv_to_int_keeps_partial_lesions():
    pv = np.zeros((NUM_LABELS, 1, 1, 2), np.float32)
    pv[3] = 0.65
    pv[6, 0, 0, 0] = 0.35  # a 35% WMH voxel is kept as WMH
    pv[0, 0, 0, 1] = 0.35
    assert pv_to_int(normalise_pv(pv)).ravel().tolist() == [6, 3]


def test_lesion_volumes_from_pv_and_int_agree_for_hard_maps():
    lab = np.zeros((4, 4, 4), int)
    lab[0, :2] = 6
    lab[1, 0, 0] = 9
    a = lesion_volumes_ml(lab, 8.0)
    b = lesion_volumes_ml(int_to_pv(lab), 8.0)
    assert (
        a == pytest.approx(b)
        and a["wmh_ml"] == pytest.approx(8 * 8 / 1000)
        and a["enhancing_ml"] == pytest.approx(0.008)
    )


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.full((2, 2, 2), 11), "outside the label table"),
        (np.full((2, 2, 2), 1.5), "non-integer"),
        (np.full((2, 2, 2), np.nan), "NaN"),
    ],
)
def test_bad_int_labels_are_refused(bad, msg):
    with pytest.raises(InputError, match=msg):
        check_int_labels(bad)


def test_bad_pv_is_refused():
    with pytest.raises(InputError, match="shape"):
        check_pv(np.zeros((3, 2, 2, 2)))
    with pytest.raises(InputError, match="outside"):
        check_pv(np.full((NUM_LABELS, 2, 2, 2), 2.0))


def test_contrasts_checked():
    assert check_contrasts("T1, flair") == ["t1", "flair"]
    assert check_contrasts(["t2", "t2"]) == ["t2"]
    assert set(CONTRASTS) >= {"t1", "t2", "flair"}
    with pytest.raises(InputError, match="unknown contrast 'pd'.*accepted: t1"):
        check_contrasts("pd")


def test_profiles_hold_the_brain_on_grids_divisible_by_32():
    for name in ("default", "paper"):
        prof = PROFILES[name]
        assert all(s % 32 == 0 for s in prof.shape)
        aff = prof.affine
        assert np.all(np.diag(aff)[:3] > 0)  # RAS
        lo = aff[:3, 3]
        hi = lo + prof.spacing_mm * (np.asarray(prof.shape) - 1)
        # MNI152 brain bounding box (mm) must fit inside the grid
        assert np.all(lo <= [-72, -108, -72]) and np.all(hi >= [72, 74, 82])
    assert get_profile("default").spacing_mm == 2.0
    with pytest.raises(InputError, match="unknown profile"):
        get_profile("huge")


def test_latest_checkpoint_picks_newest_and_breaks_ties_by_step(tmp_path):
    """Resume rule shared by all bundles: newest file (Ignite's final checkpoint has no step number), ties by step."""
    import os

    import torch

    from brainspade.bundle import latest_checkpoint

    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    for name, t in [
        ("checkpoint_iteration=50.pt", 100),
        ("checkpoint_iteration=100.pt", 100),
        ("final.pt", 50),
        ("model.pt", 300),
    ]:
        torch.save({"step": torch.tensor(t)}, tmp_path / name)
        os.utime(tmp_path / name, (t, t))
    assert latest_checkpoint(tmp_path, "checkpoint_*.pt").endswith("checkpoint_iteration=100.pt")
    assert latest_checkpoint(tmp_path).endswith("model.pt")
    os.utime(tmp_path / "final.pt", (200, 200))
    assert latest_checkpoint(tmp_path, "[cf]*.pt").endswith("final.pt")


def test_latest_checkpoint_skips_a_file_cut_off_while_being_written(tmp_path, capsys):
    """MONAI's CheckpointSaver writes in place: a run killed mid-save leaves a truncated newest file, and resuming
    must take the complete one before it (the configs keep two) instead of failing inside torch.load."""
    import os

    import torch

    from brainspade.bundle import latest_checkpoint

    torch.save({"w": torch.zeros(1000)}, tmp_path / "checkpoint_epoch=2.pt")
    os.utime(tmp_path / "checkpoint_epoch=2.pt", (100, 100))
    torch.save({"w": torch.zeros(1000)}, tmp_path / "checkpoint_epoch=3.pt")
    data = (tmp_path / "checkpoint_epoch=3.pt").read_bytes()
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(data[: len(data) // 2])  # killed halfway through the write
    assert latest_checkpoint(tmp_path, "checkpoint_*.pt").endswith("checkpoint_epoch=2.pt")
    err = capsys.readouterr().err
    assert "skipping incomplete checkpoint" in err and "checkpoint_epoch=3.pt" in err
    os.remove(tmp_path / "checkpoint_epoch=2.pt")
    # nothing complete: the damaged file itself, for the bundle's checkpoint check to refuse by name
    assert latest_checkpoint(tmp_path, "checkpoint_*.pt").endswith("checkpoint_epoch=3.pt")


def test_per_label_lists_follow_the_label_table():
    from brainspade.labels import LABEL_CODES, per_label

    w = per_label(1, wmh=2, tumour=4)
    assert len(w) == len(LABEL_CODES) and w[LABEL_CODES["wmh"]] == 2 and w[LABEL_CODES["tumour"]] == 4
    assert sum(w) == len(LABEL_CODES) - 2 + 6
    with pytest.raises(InputError, match=r"unknown label key\(s\) \['glioma'\]"):
        per_label(1, glioma=3)
