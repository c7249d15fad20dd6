"""Reliability defects found by trying the bundles as users do (issue 18), each as the case that exposed it and
its family: booleans as users type them, inputs that must never become outputs, a sample replaced whole,
sidecars that lie, temporary files of a killed run, resume with other settings, options that have no effect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from _segmenter_helpers import INFER, TRAIN, run_bundle, tiny_train_overrides, write_nifti
from brainspade3d_helpers import common_parser as b3d_parser
from brainspade3d_helpers import make_tiny_chain, one_torch_thread, run_inference
from label_ldm_helpers import CONFIGS as LDM_CONFIGS
from label_ldm_helpers import common_parser as ldm_parser
from monai.bundle import ConfigParser

from brainspade.cli import FALSE_WORDS, TRUE_WORDS, parse_bool, parse_float
from brainspade.errors import InputError
from brainspade.labels import NUM_LABELS
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


@pytest.mark.parametrize("word,on", [("false", False), ("no", False), ("0", False), ("true", True), ("Yes", True)])
def test_network_switches_typed_on_the_command_line_mean_what_they_say(word, on):
    """Switches a config passes straight into a network (or a training function) read words through the shared
    parser: `--style_film false` used to build the layer anyway (the string 'false' is truthy in Python)."""
    net = b3d_parser(style_film=word, style_regions=word, use_checkpoint=word).get_parsed_content("network_def")
    assert (net.film is not None, net.regions is not None, net.use_checkpoint) == (on, on, on)
    assert ldm_parser(ae_use_checkpoint=word).get_parsed_content("autoencoder_def").use_checkpoint is on
    train = ConfigParser()
    train.read_config([str(LDM_CONFIGS / "common.yaml"), str(LDM_CONFIGS / "train_diffusion.yaml")])
    train.update({"flip_augment": word})
    assert train.get_parsed_content("latent_meta#flips", instantiate=False) is on


def test_a_network_switch_that_is_not_a_word_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        b3d_parser(style_regions="maybe").get_parsed_content("network_def")
    assert "style_regions='maybe' is not a boolean" in _error_line(capsys)


@pytest.mark.parametrize("value,expected", [(2, 2.0), (0.5, 0.5), ("3", 3.0), (" 1e-1 ", 0.1), ("0", 0.0)])
def test_numbers_as_users_type_them(value, expected):
    assert parse_float(value, "x", 0.0) == expected


@pytest.mark.parametrize("value", ["", "a lot", "nan", "inf", None, True, [1], -1, "-0.5"])
def test_other_numbers_are_refused_with_the_accepted_range(value):
    with pytest.raises(InputError, match=r"x=.* (is not a finite number|is out of range); accepted: 0\.\.inf"):
        parse_float(value, "x", 0.0)


@pytest.fixture(scope="module")
def seg_run(tiny_phantoms, tmp_path_factory):
    """A finished tiny segmenter run and an image it segmented once."""
    d = tmp_path_factory.mktemp("reliability_seg")
    out = d / "train"
    run_bundle(TRAIN, **tiny_train_overrides(tiny_phantoms, out))
    img = write_nifti(
        d / "scan.nii.gz",
        np.random.default_rng(0).random((20, 20, 20)).astype(np.float32) + 1,
        np.diag([6.0, 6.0, 6.0, 1.0]),
    )
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
        run_bundle(
            TRAIN, **tiny_train_overrides(tiny_phantoms, out, resume="true", channels=[2, 4, 8, 16], max_epochs=2)
        )
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
        run_inference(
            {k: v for k, v in overrides.items() if k != "label_ldm_extra"},
            label_file=str(label),
            output_dir=str(out),
            resume="true",
            preview=False,
        )
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
    (out / "sample-000000_t1.nii.gz").unlink()  # a deleted image
    (out / "sample-000001.json").write_text("[]")  # valid JSON, not an object
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
    assert re.search(
        r"already holds sample-000000 made with settings=.*accepted: the same settings", _error_line(capsys)
    )


@pytest.mark.parametrize("option", [{"tumour_ml": 999}, {"wmh_ml": 0}])
def test_lesion_options_with_a_label_file_are_refused(chain, option, capsys):
    d, overrides, phantoms = chain
    out = d / "noeffect"
    with pytest.raises(SystemExit):
        run_inference(
            {k: v for k, v in overrides.items() if k != "label_ldm_extra"},
            label_file=str(_first_label(phantoms)),
            output_dir=str(out),
            **option,
        )
    assert "has no effect with --label_file" in _error_line(capsys)
    assert not out.exists()


def test_label_ldm_extra_that_is_not_a_dict_is_one_error_line(chain, capsys):
    d, overrides, _ = chain
    with pytest.raises(SystemExit):
        run_inference(overrides, output_dir=str(d / "extra"), label_ldm_extra=[1, 2])
    assert "label_ldm_extra=[1, 2] is not a dict" in _error_line(capsys)


# -- inputs: geometry, size, partial volumes, folders, dimensions --------------------------------------------------


def _write(path: Path, data: np.ndarray, affine=None, codes=(1, 1)) -> Path:
    """A NIfTI whose header says exactly this (nibabel rewrites the header from an image's affine on save,
    so the image is made from the header alone)."""
    import nibabel as nib

    aff = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else np.asarray(affine, float)
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(aff, code=codes[0])
    hdr.set_qform(None if codes[1] == 0 else aff, code=codes[1])
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(path))
    return path


@pytest.mark.parametrize("case", ["singular", "zero", "no_codes"])
def test_missing_or_singular_geometry_is_refused_everywhere(tmp_path, case):
    from brainspade.io import load_nifti

    data = np.ones((8, 8, 8), np.float32)
    if case == "no_codes":
        path = _write(tmp_path / "g.nii.gz", data, codes=(0, 0))
        pattern = r"neither an sform nor a qform"
    else:
        aff = np.diag([2.0, 2.0, 0.0, 1.0]) if case == "singular" else np.zeros((4, 4))
        path = _write(tmp_path / "g.nii.gz", data, aff, codes=(1, 0))
        pattern = r"no usable geometry \(singular or non-finite affine\)"
    with pytest.raises(InputError, match=pattern):
        load_nifti(path)
    from brainspade.bundle import load_scripts

    seg = load_scripts(Path(__file__).resolve().parent.parent / "bundles" / "segmenter", "segmenter_scripts")
    with pytest.raises(InputError, match=pattern):
        seg.inference.check_image(path)


def test_a_header_declaring_a_huge_volume_is_refused_before_reading(tmp_path):
    import gzip

    import nibabel as nib

    from brainspade.io import load_nifti

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((600, 600, 600))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(np.eye(4), code=1)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as f:  # a small file: the header and a few bytes of data
        f.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024)
    with pytest.raises(InputError, match=r"holds 216,000,000 voxels .*accepted: at most 134,217,728"):
        load_nifti(path)


def test_an_image_too_large_once_resampled_is_refused(tmp_path):
    from brainspade.bundle import load_scripts

    seg = load_scripts(Path(__file__).resolve().parent.parent / "bundles" / "segmenter", "segmenter_scripts")
    path = _write(tmp_path / "coarse.nii.gz", np.ones((16, 16, 16), np.float32), np.diag([100.0, 100.0, 100.0, 1]))
    with pytest.raises(InputError, match=r"once resampled to 2 mm; accepted: at most"):
        seg.inference.check_image(path)


def test_partial_volumes_that_do_not_sum_to_one_are_refused():
    from brainspade.labels import check_pv

    with pytest.raises(InputError, match=r"do not sum to 1 in 8 voxels .*within 0.05"):
        check_pv(np.ones((NUM_LABELS, 2, 2, 2), np.float32))


def test_a_folder_and_a_5d_image_are_named_for_what_they_are(tmp_path):
    from brainspade.io import load_nifti

    (tmp_path / "dicom").mkdir()
    with pytest.raises(InputError, match=r"is a folder, not a file \(a DICOM series\?\)"):
        load_nifti(tmp_path / "dicom")
    path = _write(tmp_path / "five.nii.gz", np.ones((4, 4, 4, 2, 3), np.float32))
    with pytest.raises(InputError, match=r"is 5D with shape \(4, 4, 4, 2, 3\)"):
        load_nifti(path)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--seed", "-5"], r"--seed -5 is out of range"),
        (["--output_dir", "FILE"], r"is a file; accepted: a new or existing folder"),
    ],
)
def test_phantom_generator_refuses_bad_arguments(tmp_path, args, pattern, capsys):
    from brainspade.phantom.cli import main

    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    base = [] if "--output_dir" in args else ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(base + args + ["--num_subjects", "1", "--profile", "tiny"])
    assert exc.value.code == 2 and re.search(pattern, _error_line(capsys))
    assert not (tmp_path / "out").exists()


def test_a_second_run_into_the_same_samples_is_refused(chain, capsys):
    """Another process is writing sample-000000 (it holds the claim); this run is refused and writes nothing,
    while a shard over other samples runs beside it."""
    import subprocess
    import sys

    d, overrides, _ = chain
    out = d / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from brainspade.sharding import SampleLocks; "
                f"SampleLocks({str(out)!r}).acquire(['sample-000000']); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit):
            run_inference(overrides, output_dir=str(out), preview=False)
        assert "another run is writing sample-000000" in _error_line(capsys)
        assert not list(out.glob("sample-*"))
        run_inference(overrides, output_dir=str(out), num_samples=2, shard=1, num_shards=2, preview=False)
        assert completed(out, [1]) == {1}
    finally:
        holder.kill()
        holder.wait()


def test_disk_full_leaves_no_half_sample(chain, monkeypatch, capsys):
    import errno

    from brainspade.bundle import load_scripts

    d, overrides, _ = chain
    out = d / "full"
    b3d = load_scripts(Path(__file__).resolve().parent.parent / "bundles" / "brainspade3d", "brainspade3d_scripts")
    real_save = b3d.inference.save_nifti

    def save(path, data, affine, **kw):  # the t1 image fits, the label map does not
        if str(path).endswith("_label.nii.gz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, data, affine, **kw)

    monkeypatch.setattr(b3d.inference, "save_nifti", save)
    with pytest.raises(SystemExit):
        run_inference(overrides, output_dir=str(out), preview=False)
    assert re.search(r"cannot write sample-000000 .*No space left on device.*removed whole", _error_line(capsys))
    assert not [p.name for p in out.iterdir() if p.name.startswith("sample-")]


def test_an_output_name_from_the_label_file_says_where_it_comes_from(chain, capsys):
    d, overrides, phantoms = chain
    bad = d / "sub 01_label.nii.gz"
    bad.write_bytes(_first_label(phantoms).read_bytes())
    with pytest.raises(SystemExit):
        run_inference(
            {k: v for k, v in overrides.items() if k != "label_ldm_extra"},
            label_file=str(bad),
            output_dir=str(d / "named"),
        )
    assert re.search(
        r"output name 'sub 01' \(taken from the label file's name\) is not allowed.*rename the file",
        _error_line(capsys),
    )


def test_deeply_nested_json_is_one_error(tmp_path):
    from brainspade.io import load_json

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match=r"nested too deeply to read; accepted: a JSON object"):
        load_json(path, "datalist")


def test_a_training_entry_that_is_not_an_image_is_named(tmp_path):
    from brainspade.bundle import load_scripts

    seg = load_scripts(Path(__file__).resolve().parent.parent / "bundles" / "segmenter", "segmenter_scripts")
    notes = tmp_path / "notes.nii.gz"
    notes.write_text("not an image")
    with pytest.raises(InputError, match=r"training entry 0: image file .* is not a readable NIfTI image"):
        seg.check_items([{"image": str(notes), "label": str(notes)}], "training")


def test_segmenter_weights_of_another_network_are_one_error_line(seg_run, tmp_path, capsys):
    import torch

    _, _, img, _, tiny = seg_run
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(2, 1, 3, 3, 3)}, other)
    out = tmp_path / "seg"
    with pytest.raises(SystemExit):
        run_bundle(INFER, input_image=str(img), output_dir=str(out), **{**tiny, "ckpt_path": str(other)})
    assert re.search(r"model weights .* does not fit this network", _error_line(capsys))
    assert not out.exists() or not list(out.iterdir())


def test_segmenter_disk_full_keeps_nothing_half_written(seg_run, tmp_path, monkeypatch, capsys):
    import errno

    from brainspade.bundle import load_scripts

    _, _, img, _, tiny = seg_run
    seg = load_scripts(Path(__file__).resolve().parent.parent / "bundles" / "segmenter", "segmenter_scripts")
    real = seg.transforms.save_json

    def full(path, obj):  # the label image fits, the volumes JSON does not
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(seg.transforms, "save_json", full)
    out = tmp_path / "seg"
    with pytest.raises(SystemExit) as exc:
        run_bundle(INFER, input_image=str(img), output_dir=str(out), **tiny)
    monkeypatch.setattr(seg.transforms, "save_json", real)
    assert exc.value.code == 2
    assert re.search(
        r"cannot write scan's results .*No space left on device.*nothing of scan was kept", _error_line(capsys)
    )
    assert not (out / "scan_seg.nii.gz").exists() and not (out / "scan_volumes.json").exists()
