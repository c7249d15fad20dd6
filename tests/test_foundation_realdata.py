import json

import nibabel as nib
import numpy as np
import pytest

from brainspade import get_profile
from brainspade.errors import InputError
from brainspade.io import load_nifti, prepare_output_dir, safe_id, save_nifti
from brainspade.realdata import load_checked_datalist, real_data_transforms


def _pair(folder, name, shape=(20, 24, 18), affine=None, labels=(0, 1, 2, 4)):
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) if affine is None else affine  # LPS, 1 mm: not our grid
    rng = np.random.default_rng(0)
    img = rng.random(shape).astype(np.float32)
    lab = rng.choice(labels, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(img, affine), folder / f"{name}_img.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), folder / f"{name}_lab.nii.gz")
    return {"id": name, "image": f"{name}_img.nii.gz", "label": f"{name}_lab.nii.gz"}


def _datalist(folder, entries, key="training"):
    p = folder / "datalist.json"
    p.write_text(json.dumps({key: entries}))
    return p


def test_good_datalist_loads_and_transforms_to_profile_grid(tmp_path):
    dl = _datalist(tmp_path, [_pair(tmp_path, "a"), _pair(tmp_path, "b")])
    entries = load_checked_datalist(dl, mapping="brats")
    assert len(entries) == 2 and all(e["image"].startswith(str(tmp_path.resolve())) for e in entries)
    out = real_data_transforms("tiny", mapping="brats")(entries[0])
    prof = get_profile("tiny")
    assert tuple(out["image"].shape) == (1, *prof.shape) and tuple(out["label"].shape) == (1, *prof.shape)
    assert nib.aff2axcodes(np.asarray(out["image"].affine)) == ("R", "A", "S")
    assert np.allclose(np.abs(np.diag(np.asarray(out["image"].affine))[:3]), prof.spacing_mm)
    assert set(np.unique(out["label"].numpy()).astype(int)) <= {0, 7, 8, 9}  # BraTS 1,2,4 -> 7,8,9


@pytest.mark.parametrize(
    "case, msg",
    [
        ("missing_key", "lacks key 'label'"),
        ("missing_file", "does not exist"),
        ("shape", "differs from image shape"),
        ("affine", "affine differs"),
        ("labels", r"label values \[7"),
        ("duplicate", "duplicates entry 0"),
        ("no_list", "has no 'training' list"),
        ("not_nifti", "not a readable NIfTI"),
    ],
)
def test_bad_datalists_name_the_entry_and_problem(tmp_path, case, msg):
    e = _pair(tmp_path, "a")
    entries = [e]
    if case == "missing_key":
        entries = [{"image": e["image"]}]
    elif case == "missing_file":
        entries = [{**e, "image": "nope.nii.gz"}]
    elif case == "shape":
        f = _pair(tmp_path, "s", shape=(10, 10, 10))
        entries = [{**e, "label": f["label"]}]
    elif case == "affine":
        f = _pair(tmp_path, "f", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
        entries = [{**e, "label": f["label"]}]
    elif case == "labels":
        entries = [_pair(tmp_path, "l", labels=(0, 7))]
    elif case == "duplicate":
        entries = [e, dict(e)]
    elif case == "not_nifti":
        (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
        entries = [{**e, "image": "bad.nii.gz"}]
    dl = _datalist(tmp_path, entries, key="validation" if case == "no_list" else "training")
    with pytest.raises(InputError, match=msg):
        load_checked_datalist(dl, mapping="brats")


def test_malformed_json_is_refused(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checked_datalist(p)


def test_atomic_nifti_write_and_clear_read_errors(tmp_path):
    aff = get_profile("tiny").affine
    path = save_nifti(tmp_path / "x.nii.gz", np.ones((4, 4, 4)), aff)
    data, a2 = load_nifti(path)
    assert np.allclose(a2, aff) and data.shape == (4, 4, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]  # no temporary left behind
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), np.nan, np.float32), aff), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="NaN"):
        load_nifti(tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="does not exist"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_output_dir_guards(tmp_path):
    (tmp_path / "s1.json").write_text("{}")
    with pytest.raises(InputError, match="already holds 's1.json'"):
        prepare_output_dir(tmp_path, ["s1.json"])
    assert prepare_output_dir(tmp_path, ["s1.json"], overwrite=True) == tmp_path
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(InputError):
            safe_id(bad)
    assert safe_id("sample_001") == "sample_001"
