"""Reliability defects found by trying the bundles as users do (issue 18), each as the case that exposed it and
its family: booleans as users type them, inputs that must never become outputs, a sample replaced whole,
sidecars that lie, temporary files of a killed run, resume with other settings, options that have no effect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from brainspade3d_helpers import make_tiny_chain, one_torch_thread, run_inference
from _segmenter_helpers import INFER, TRAIN, run_bundle, tiny_train_overrides, write_nifti

from brainspade.cli import FALSE_WORDS, TRUE_WORDS, parse_bool
from brainspade.errors import InputError
from brainspade.sharding import completed, write_datalist

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def _error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


# -- one boolean parser for every bundle ---------------------------------------------------------------------------

@pytest.mark.parametrize("word", [*TRUE_WORDS, "True", "YES", " on ", True, 1])
def test_true_as_users_type_it(word):
    assert parse_bool(word, "x") is True


@pytest.mark.parametrize("word", [*FALSE_WORDS, "False", "NO", " off", False, 0])
def test_false_as_users_type_it(word):
    assert parse_bool(word, "x") is False


@pytest.mark.parametrize("word", ["", "maybe", "2", 2, None, [], "tru"])
def test_anything_else_is_refused_with_the_accepted_forms(word):
    with pytest.raises(InputError, match=r"x=.* is not a boolean; accepted: true/yes/y/on or false/no/n/off"):
        parse_bool(word, "x")


@pytest.fixture(scope="module")
def seg_run(tiny_phantoms, tmp_path_factory):
    """A finished tiny segmenter run and an image it segmented once."""
    d = tmp_path_factory.mktemp("reliability_seg")
    out = d / "train"
    run_bundle(TRAIN, **tiny_train_overrides(tiny_phantoms, out))
    img = write_nifti(d / "scan.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32) + 1,
                      np.diag([6.0, 6.0, 6.0, 1.0]))
    seg_out = d / "seg"
    tiny = {"profile": "tiny", "channels": [4, 8, 16, 32], "ckpt_path": str(out / "model_final.pt")}
    run_bundle(INFER, input_image=str(img), output_dir=str(seg_out), **tiny)
    return d, out, img, seg_out, tiny


@pytest.mark.parametrize("value", ["false", "no", "0", "False"])
def test_segmenter_overwrite_false_keeps_earlier_results(seg_run, value, capsys):
    _, _, img, seg_out, tiny = seg_run
    before = (seg_out / "scan_seg.nii.gz").read_bytes()
    with pytest.raises(SystemExit):
        run_bundle(INFER, input_image=str(img), output_dir=str(seg_out), overwrite=value, **tiny)
    assert "already holds" in _error_line(capsys)
    assert (seg_out / "scan_seg.nii.gz").read_bytes() == before


def test_segmenter_training_overwrite_false_keeps_the_earlier_run(seg_run, tiny_phantoms, capsys):
    _, out, _, _, _ = seg_run
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    with pytest.raises(SystemExit):
        run_bundle(TRAIN, **tiny_train_overrides(tiny_phantoms, out, resume="False", overwrite="false"))
    assert "already holds results" in _error_line(capsys)
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ckpts


def test_a_resume_that_does_not_fit_writes_nothing(seg_run, tiny_phantoms, capsys):
    _, out, _, _, _ = seg_run
    final = (out / "model_final.pt").read_bytes()
    with pytest.raises(SystemExit):  # other channels than the run being resumed
        run_bundle(TRAIN, **tiny_train_overrides(tiny_phantoms, out, resume="true",
                                                 channels=[2, 4, 8, 16], max_epochs=2))
    assert re.search(r"does not fit this network .*accepted: weights written with the same", _error_line(capsys))
    assert (out / "model_final.pt").read_bytes() == final  # the trained model is not replaced


def test_a_bad_boolean_is_one_error_line(seg_run, tiny_phantoms, capsys):
    _, out, _, _, _ = seg_run
    with pytest.raises(SystemExit):
        run_bundle(TRAIN, **tiny_train_overrides(tiny_phantoms, out, resume="perhaps"))
    assert "resume='perhaps' is not a boolean" in _error_line(capsys)


# -- brainspade3d: inputs, samples, sidecars, resume ---------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tiny_phantoms, tmp_path_factory):
    d = tmp_path_factory.mktemp("reliability_b3d")
    return d, make_tiny_chain(tiny_phantoms, d / "weights"), Path(tiny_phantoms).parent


def _first_label(phantom_dir: Path) -> Path:
    data = json.loads((phantom_dir / "datalist.json").read_text())
    return phantom_dir / data["training"][0]["label"]


def test_resume_never_overwrites_the_users_label_file(chain, capsys):
    d, overrides, phantoms = chain
    out = d / "own"
    out.mkdir()
    label = out / "sample_label.nii.gz"
    label.write_bytes(_first_label(phantoms).read_bytes())
    before = label.read_bytes()
    with pytest.raises(SystemExit):
        run_inference({k: v for k, v in overrides.items() if k != "label_ldm_extra"}, label_file=str(label),
                      output_dir=str(out), resume="true", preview=False)
    assert "would be overwritten by this run's output" in _error_line(capsys)
    assert label.read_bytes() == before


def test_overwrite_replaces_a_sample_whole_and_the_datalist_lists_what_it_wrote(chain):
    d, overrides, _ = chain
    out = d / "whole"
    run_inference(overrides, output_dir=str(out), contrast="t1,flair", preview=False)
    assert (out / "sample-000000_flair.nii.gz").is_file()
    run_inference(overrides, output_dir=str(out), contrast="t1", seed=5, overwrite="true", preview=False)
    assert not (out / "sample-000000_flair.nii.gz").exists()  # no stale image of the earlier run
    entry = json.loads((out / "datalist.json").read_text())["training"][0]
    assert "flair" not in entry and entry["t1"] == "sample-000000_t1.nii.gz"


def test_sidecars_that_lie_make_a_sample_unfinished(chain):
    d, overrides, _ = chain
    out = d / "lies"
    run_inference(overrides, output_dir=str(out), num_samples=2, preview=False)
    assert completed(out, [0, 1]) == {0, 1}
    (out / "sample-000000_t1.nii.gz").unlink()          # a deleted image
    (out / "sample-000001.json").write_text("[]")      # valid JSON, not an object
    assert completed(out, [0, 1]) == set()
    assert json.loads(write_datalist(out).read_text())["training"] == []
    # resume makes both again instead of crashing or trusting them
    run_inference(overrides, output_dir=str(out), num_samples=2, resume="yes", preview=False)
    assert completed(out, [0, 1]) == {0, 1}


def test_merge_refuses_samples_whose_files_were_deleted(chain, capsys):
    d, overrides, _ = chain
    out = d / "merge"
    run_inference(overrides, output_dir=str(out), preview=False)
    (out / "sample-000000_label.nii.gz").unlink()
    with pytest.raises(SystemExit):
        run_inference(overrides, output_dir=str(out), merge="true")
    assert "lacks 1 of 1 samples" in _error_line(capsys)


def test_resume_clears_temporary_files_of_a_killed_run(chain):
    d, overrides, _ = chain
    out = d / "killed"
    run_inference(overrides, output_dir=str(out), preview=False)
    stale = out / ".sample-000001_t1.nii.gz.abc123.part.nii.gz"
    stale.write_bytes(b"half a volume")
    run_inference(overrides, output_dir=str(out), num_samples=2, resume="true", preview=False)
    assert not stale.exists() and completed(out, [0, 1]) == {0, 1}


@pytest.mark.parametrize("changed", [{"tumour_ml": 0}, {"label_ldm_extra_steps": 3}])
def test_resume_refuses_a_folder_made_with_other_settings(chain, changed, capsys):
    d, overrides, _ = chain
    out = d / f"settings_{next(iter(changed))}"
    run_inference(overrides, output_dir=str(out), preview=False)
    opts = dict(overrides)
    if "label_ldm_extra_steps" in changed:
        opts["label_ldm_extra"] = {**overrides["label_ldm_extra"], "steps": 3}
    else:
        opts.update(changed)
    with pytest.raises(SystemExit):
        run_inference(opts, output_dir=str(out), num_samples=2, resume="true", preview=False)
    assert re.search(r"already holds sample-000000 made with settings=.*accepted: the same settings", _error_line(capsys))


@pytest.mark.parametrize("option", [{"tumour_ml": 999}, {"wmh_ml": 0}])
def test_lesion_options_with_a_label_file_are_refused(chain, option, capsys):
    d, overrides, phantoms = chain
    out = d / "noeffect"
    with pytest.raises(SystemExit):
        run_inference({k: v for k, v in overrides.items() if k != "label_ldm_extra"},
                      label_file=str(_first_label(phantoms)), output_dir=str(out), **option)
    assert "has no effect with --label_file" in _error_line(capsys)
    assert not out.exists()


def test_label_ldm_extra_that_is_not_a_dict_is_one_error_line(chain, capsys):
    d, overrides, _ = chain
    with pytest.raises(SystemExit):
        run_inference(overrides, output_dir=str(d / "extra"), label_ldm_extra=[1, 2])
    assert "label_ldm_extra=[1, 2] is not a dict" in _error_line(capsys)
