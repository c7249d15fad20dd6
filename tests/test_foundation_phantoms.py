import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainspade import get_profile
from brainspade.errors import InputError
from brainspade.labels import LABEL_CODES, lesion_volumes_ml
from brainspade.phantom import generate_dataset, generate_subject


def test_generator_is_deterministic_and_seed_dependent():
    a = generate_subject(5, 2, "tiny", "both")
    b = generate_subject(5, 2, "tiny", "both")
    c = generate_subject(6, 2, "tiny", "both")
    assert np.array_equal(a["pv"], b["pv"]) and np.array_equal(a["images"]["t1"], b["images"]["t1"])
    assert not np.array_equal(a["pv"], c["pv"])


def test_pathologies_present_only_when_asked():
    healthy = generate_subject(1, 0, "default", "healthy", contrasts=())
    assert all(v == 0 for v in healthy["volumes"].values())
    both = generate_subject(1, 1, "default", "both", contrasts=())
    v = both["volumes"]
    assert v["wmh_ml"] > 0.5 and v["tumour_ml"] + v["enhancing_ml"] > 1 and v["oedema_ml"] > 1
    pv = both["pv"]
    assert np.allclose(pv.sum(0), 1, atol=1e-4) and pv.min() >= 0
    lesion = pv[6:].sum(0)
    assert float(lesion[pv[0] > 0.99].sum()) < 0.01  # no lesion outside the brain (not even 1% of a voxel)


def test_contrast_ordering_of_tissue_intensities():
    s = generate_subject(2, 0, "default", "both")
    pv = s["pv"]

    def mean(contrast, key):
        m = pv[LABEL_CODES[key]] > 0.6
        assert m.sum() > 5, f"subject has no {key}"
        return float(s["images"][contrast][m].mean())

    assert mean("t1", "wm") > mean("t1", "gm") > mean("t1", "csf")
    assert mean("t2", "csf") > mean("t2", "gm") > mean("t2", "wm")
    assert mean("flair", "oedema") > mean("flair", "wm") > mean("flair", "csf")
    assert mean("t1", "tumour") < mean("t1", "wm")


def test_dataset_files_affines_and_recorded_volumes(tiny_phantoms):
    meta = json.loads(Path(tiny_phantoms).read_text())
    prof = get_profile("tiny")
    entries = meta["training"] + meta["validation"] + meta["test"]
    assert len(entries) == 6 and len(meta["training"]) == 3
    root = Path(tiny_phantoms).parent
    for e in entries:
        lab = nib.load(root / e["label"])
        pv = nib.load(root / e["pv"])
        assert np.allclose(lab.affine, prof.affine) and nib.aff2axcodes(lab.affine) == ("R", "A", "S")
        assert lab.shape == prof.shape and pv.shape == (*prof.shape, 10)
        assert int(lab.header["sform_code"]) == 4  # MNI152
        vols = lesion_volumes_ml(np.moveaxis(np.asarray(pv.dataobj, np.float32), -1, 0), prof.voxel_mm3)
        for k, v in vols.items():  # uint8 storage: 0.4% per voxel
            assert v == pytest.approx(e[k], abs=0.01 * max(e[k], 1) + 0.5)
        for c in meta["contrasts"]:
            img = nib.load(root / e[c])
            assert np.allclose(img.affine, prof.affine) and img.shape == prof.shape


def test_generator_refuses_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown pathology"):
        generate_dataset(tmp_path / "x", 2, "tiny", pathologies=["glioma"])
    with pytest.raises(InputError, match="split"):
        generate_dataset(tmp_path / "y", 2, "tiny", split=(0.5, 0.5, 0.5))


def test_worker_count_does_not_change_data(tmp_path):
    a = generate_dataset(tmp_path / "a", 2, "tiny", seed=9, workers=1, contrasts=("t1",), split=(1, 0, 0))
    b = generate_dataset(tmp_path / "b", 2, "tiny", seed=9, workers=2, contrasts=("t1",), split=(1, 0, 0))
    for e in json.loads(a.read_text())["training"]:
        x = np.asarray(nib.load(a.parent / e["t1"]).dataobj)
        y = np.asarray(nib.load(b.parent / e["t1"]).dataobj)
        assert np.array_equal(x, y)
