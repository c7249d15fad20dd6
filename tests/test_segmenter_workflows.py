"""Segmenter workflows at tiny size through monai.bundle: training on every data kind (real / synthetic folder /
domain-randomised), resume, evaluation tables, inference on non-RAS / non-profile-spacing inputs, torchrun
(gloo, 2 processes), the experiment driver end to end, and the inference benchmark's quick mode."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _segmenter_helpers import BUNDLE, EVALUATE, INFER, LOGGING, META, ROOT
from _segmenter_helpers import TINY as TINY_OVERLAY
from _segmenter_helpers import TINY_CHANNELS, TRAIN, run_bundle, tiny_train_overrides, write_nifti
from cli_harness import torchrun_cmd
from monai.bundle import ConfigParser

from brainspade.bundle import load_scripts
from brainspade.errors import InputError
from brainspade.labels import LABELS, NUM_LABELS
from brainspade.sharding import file_sha256

TINY = {"bundle_root": str(BUNDLE), **TINY_OVERLAY}


def _env() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }


@pytest.fixture(scope="module")
def trained(tiny_phantoms, tmp_path_factory):
    """One tiny run on all three data kinds, then resumed for a second epoch; returns (run dir, resume log)."""
    d = str(tiny_phantoms.parent)
    out = tmp_path_factory.mktemp("seg_train")
    sources = [
        {"kind": "phantom", "datalist": d, "split": "training", "pathologies": ["healthy", "wmh"], "contrasts": ["t1"]},
        {"kind": "folder", "path": str(Path(d) / "sub-0001"), "contrasts": ["flair"]},  # brainspade3d-style names
        {"kind": "dr", "datalist": d, "split": "training", "repeat": 2},
        {"kind": "dr", "datalist": d, "split": "training", "pv": True},  # drawn from the partial volumes
    ]
    ov = tiny_train_overrides(tiny_phantoms, out, train_sources=sources, val_interval=1)
    run_bundle(TRAIN, **ov)
    first = {p.name for p in (out / "checkpoints").glob("*.pt")}
    # resume through the same workflow object monai.bundle.run builds, counting the epochs it actually runs
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=TRAIN, meta_file=META, logging_file=LOGGING, workflow_type="train", **{**ov, "max_epochs": 2}
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    epochs: list[int] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    wf.run()
    wf.finalize()
    return {"dir": out, "first": first, "epochs_run": epochs, "sources": sources, "ov": ov}


def test_training_mixes_every_data_kind(trained, tiny_phantoms):
    scripts = load_scripts(BUNDLE, "segmenter_scripts")
    items = scripts.build_datalist(trained["sources"])
    kinds = {e["source"] for e in items}
    assert kinds == {"real", "synthetic", "dr"}
    assert all("image" not in e for e in items if e["source"] == "dr")  # drawn from the label on the fly
    assert sum(e["source"] == "dr" for e in items) == 2 * 3 + 3  # repeat 2 x 3 training subjects, + 3 with pv
    assert sum("pv" in e for e in items) == 3 and all(Path(e["pv"]).is_file() for e in items if "pv" in e)
    assert (trained["dir"] / "model_final.pt").is_file() and (trained["dir"] / "model.pt").is_file()
    parser = ConfigParser()
    parser.read_config(INFER)
    parser.update(TINY)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(trained["dir"] / "model_final.pt", map_location="cpu", weights_only=True))
    assert net(torch.zeros(1, 1, 16, 16, 16)).shape[1] == NUM_LABELS
    # domain randomisation draws an image for label-only entries, with different intensities each draw
    t = scripts.RandLabelToIntensityd()
    lab = torch.as_tensor(nib.load(items[-1]["label"]).get_fdata()[None].astype(np.float32))
    t.set_random_state(0)
    a = t({"label": lab})["image"]
    b = t({"label": lab})["image"]
    assert a.shape == lab.shape and not torch.allclose(a, b)


def test_soft_targets_train_through_the_real_chain(tiny_phantoms, tmp_path):
    """`--soft_targets true`: pv entries learn their fractions, rendered ones their one-hot labels, in one run."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    d = str(tiny_phantoms.parent)
    sources = [
        {"kind": "phantom", "datalist": d, "split": "training", "contrasts": ["t1"]},
        {"kind": "phantom", "datalist": d, "split": "training", "contrasts": ["t2"], "pv": True},
        {"kind": "dr", "datalist": d, "split": "training", "pv": True},
    ]
    items = load_scripts(BUNDLE, "segmenter_scripts").build_datalist(sources)
    assert [("pv" in e, "image" in e) for e in items] == [(False, True)] * 3 + [(True, True)] * 3 + [(True, False)] * 3
    ov = tiny_train_overrides(tiny_phantoms, tmp_path, train_sources=sources, iterations_per_epoch=6)
    wf = ConfigWorkflow(
        config_file=TRAIN, meta_file=META, logging_file=LOGGING, workflow_type="train", soft_targets="yes", **ov
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.loss_function.dice.soft_label and not trainer.loss_function.dice.to_onehot_y
    targets: list[tuple] = []

    def record(engine):
        lab = engine.state.output[0]["label"]  # the decollated batch: one patch
        soft = bool(((lab > 0) & (lab < 1)).any())
        targets.append((tuple(lab.shape[:1]), soft, float(engine.state.output[0]["loss"])))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    wf.run()
    wf.finalize()
    assert all(shape == (NUM_LABELS,) for shape, _, _ in targets) and all(np.isfinite([t[2] for t in targets]))
    assert any(soft for _, soft, _ in targets)  # a pv draw carried fractions into the loss
    assert (tmp_path / "model_final.pt").is_file()
    # off by default: integer targets, no soft Dice
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update(tiny_train_overrides(tiny_phantoms, tmp_path / "off"))
    loss = parser.get_parsed_content("loss")
    assert loss.dice.to_onehot_y and not loss.dice.soft_label
    names = [type(t).__name__ for t in parser.get_parsed_content("train#crop_transforms")]
    assert "PartialVolumeTargetd" not in names and names[-1] == "EnsureTyped"


def test_partial_volume_draws_need_partial_volumes(tiny_phantoms):
    scripts = load_scripts(BUNDLE, "segmenter_scripts")
    data = json.loads(tiny_phantoms.read_text())
    for e in data["training"]:
        e.pop("pv")
    nopv = tiny_phantoms.parent / "datalist_without_pv.json"
    nopv.write_text(json.dumps(data))
    with pytest.raises(InputError, match="has no 'pv'"):
        scripts.build_datalist([{"kind": "dr", "datalist": str(nopv), "split": "training", "pv": True}])


def test_resume_continues_from_the_last_epoch(trained):
    assert trained["first"] == {"checkpoint_epoch=1.pt"}
    assert trained["epochs_run"] == [2]  # only the missing epoch was trained
    state = torch.load(trained["dir"] / "checkpoints" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["iteration"] == 4 and state["trainer"]["max_epochs"] == 2


def test_training_refuses_to_replace_an_earlier_run(trained, capsys):
    with pytest.raises(SystemExit) as exc:
        run_bundle(TRAIN, **{**trained["ov"], "resume": False})
    assert exc.value.code == 2
    assert "already holds results of an earlier run" in capsys.readouterr().err


def test_training_checks_resume_and_overwrite_rules(trained, tmp_path):
    """Pure checks, no training: which checkpoint a run resumes from, what --overwrite removes, what is refused."""
    from brainspade.errors import InputError

    scripts = load_scripts(BUNDLE, "segmenter_scripts")
    items = scripts.build_datalist(trained["sources"])
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    for n in (3, 12):
        torch.save({"model": {"w": torch.zeros(1)}}, ckpts / f"checkpoint_epoch={n}.pt")
    assert scripts.check_training(items, items[:1], ckpts, out, resume=True).endswith("checkpoint_epoch=12.pt")
    with pytest.raises(InputError, match="already holds results of an earlier run"):
        scripts.check_training(items, items[:1], ckpts, out, resume=False)
    assert scripts.check_training(items, items[:1], ckpts, out, resume=False, overwrite=True) == ""
    assert not list(ckpts.glob("*.pt"))  # a later resume cannot pick a stale checkpoint
    (ckpts / "checkpoint_epoch=1.pt").write_bytes(b"truncated")
    with pytest.raises(InputError, match="checkpoint to resume from .* is not a readable weights file"):
        scripts.check_training(items, items[:1], ckpts, out, resume=True)
    with pytest.raises(InputError, match="validation entry 0 .*has no 'image'"):
        scripts.check_training(items, [{"label": items[0]["label"]}], ckpts, out, resume=False, overwrite=True)
    with pytest.raises(InputError, match="training datalist is empty"):
        scripts.check_training([], items[:1], ckpts, out, resume=True)


def test_evaluate_writes_dice_and_hd95_per_label(trained, tiny_phantoms, tmp_path):
    d = str(tiny_phantoms.parent)
    out = tmp_path / "eval"
    args = {
        **TINY,
        "dataset_dir": d,
        "ckpt_path": str(trained["dir"] / "model_final.pt"),
        "output_dir": str(out),
        "test_sources": [
            {"kind": "phantom", "datalist": d, "split": "validation", "contrasts": ["t1", "flair"], "rotate": True}
        ],
    }
    run_bundle([TRAIN, EVALUATE], **args)
    table = json.loads((out / "metrics_per_label.json").read_text())["per_label"]
    assert set(table) == {"dice", "hd95_mm"}
    for metric in table.values():
        assert set(metric) == {lab.key for lab in LABELS[1:]} | {"mean_over_labels"}
    assert 0.0 <= table["dice"]["mean_over_labels"]["mean"] <= 1.0
    assert table["dice"]["csf"]["n_images"] == 2
    md = (out / "metrics_per_label.md").read_text()
    assert "| tumour |" in md and "hd95_mm" in md
    assert (out / "val_mean_dice_raw.csv").is_file() and not (out / ".metrics.part").exists()


def test_calibrate_fits_offsets_for_the_weights_and_inference_applies_them(trained, tiny_phantoms, tmp_path, capsys):
    d = str(tiny_phantoms.parent)
    ckpt = trained["dir"] / "model_final.pt"
    offsets = tmp_path / "class_offsets.json"
    args = {**TINY, "dataset_dir": d, "ckpt_path": str(ckpt), "output_path": str(offsets), "flip_averaging": False}
    calibrate = str(BUNDLE / "configs" / "calibrate.yaml")
    run_bundle([TRAIN, calibrate], **args)
    data = json.loads(offsets.read_text())
    assert len(data["offsets"]) == NUM_LABELS and data["offsets"][0] == 0.0
    assert data["mean_dice_after"] >= data["mean_dice_before"] and data["volumes"] >= 2  # validation x contrasts
    assert data["weights_sha256"] == file_sha256(ckpt)
    # an existing file is not replaced without --overwrite true, and the weights are never the output
    with pytest.raises(SystemExit):
        run_bundle([TRAIN, calibrate], **args)
    assert "exists; pass --overwrite true" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_bundle([TRAIN, calibrate], **{**args, "output_path": str(ckpt), "overwrite": True})
    assert "inputs are never outputs" in capsys.readouterr().err
    # inference with those weights applies them; with other weights they are left out
    parser = ConfigParser()
    parser.read_config(INFER)
    parser.update({**TINY, "ckpt_path": str(ckpt), "class_offsets_path": str(offsets)})
    assert parser.get_parsed_content("inferer").offsets.tolist() == pytest.approx(data["offsets"])
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in torch.load(ckpt, weights_only=True).items()}, other)
    parser = ConfigParser()
    parser.read_config(INFER)
    parser.update({**TINY, "ckpt_path": str(other), "class_offsets_path": str(offsets)})
    assert parser.get_parsed_content("inferer").offsets is None


def _flip_permute(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same voxels, stored as (y, x, z) with x and z reversed: an oblique-free non-RAS orientation (ALI)."""
    ornt = np.array([[1, -1], [0, 1], [2, -1]])  # new axis i takes old axis ornt[i,0], flipped if -1
    img = nib.Nifti1Image(data, affine).as_reoriented(nib.orientations.ornt_transform(nib.io_orientation(affine), ornt))
    return np.asarray(img.dataobj), img.affine


def test_inference_keeps_the_input_grid_for_non_ras_and_non_profile_spacing(trained, tiny_phantoms, tmp_path):
    entry = json.loads(tiny_phantoms.read_text())["test"][0]
    ras = nib.load(str(tiny_phantoms.parent / entry["t2"]))
    data = np.asarray(ras.dataobj, dtype=np.float32)[:, 2:30, 1:31]  # non-cubic
    ras_aff = ras.affine.copy()
    ras_aff[:3, 3] += ras_aff[:3, :3] @ np.array([0, 2, 1])
    inp = tmp_path / "in"
    inp.mkdir()
    write_nifti(inp / "ras.nii.gz", data, ras_aff)
    d2, a2 = _flip_permute(data, ras_aff)
    write_nifti(inp / "ali.nii.gz", d2, a2)
    # 4 x 5 x 7 mm (tiny profile works at 6 mm), oblique-free but anisotropic and not RAS
    aniso = np.array([[0, -5.0, 0, 60], [4.0, 0, 0, -50], [0, 0, -7.0, 70], [0, 0, 0, 1]])
    write_nifti(inp / "aniso.nii.gz", np.random.default_rng(0).random((23, 31, 19)).astype(np.float32) * 100, aniso)
    datalist = inp / "list.json"
    datalist.write_text(
        json.dumps(
            {"testing": [{"image": "ras.nii.gz"}, {"image": "ali.nii.gz"}, {"image": "aniso.nii.gz", "id": "scan3"}]}
        )
    )
    out = tmp_path / "out"
    run_bundle(
        INFER, **TINY, datalist=str(datalist), output_dir=str(out), ckpt_path=str(trained["dir"] / "model_final.pt")
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}_{s}" for n in ("ras", "ali", "scan3") for s in ("seg.nii.gz", "volumes.json")
    )
    for name, src in (("ras", inp / "ras.nii.gz"), ("ali", inp / "ali.nii.gz"), ("scan3", inp / "aniso.nii.gz")):
        seg, ref = nib.load(str(out / f"{name}_seg.nii.gz")), nib.load(str(src))
        assert seg.shape == ref.shape, name
        assert np.allclose(seg.affine, ref.affine, atol=1e-4), name
        assert seg.get_data_dtype() == np.uint8
        vols = json.loads((out / f"{name}_volumes.json").read_text())
        labels = np.asarray(seg.dataobj)
        vox_ml = abs(np.linalg.det(ref.affine[:3, :3])) / 1000
        assert vols["unit"] == "mL"
        assert set(vols["volumes_ml"]) == {lab.key for lab in LABELS}
        assert sum(vols["volumes_ml"].values()) == pytest.approx(labels.size * vox_ml, rel=1e-3)
        assert vols["volumes_ml"]["wm"] == pytest.approx((labels == 3).sum() * vox_ml, rel=1e-3, abs=1e-3)
    # the same voxels in another orientation get the same labels, mapped back onto each input's own grid
    seg_ras = np.asarray(nib.load(str(out / "ras_seg.nii.gz")).dataobj)
    seg_ali = nib.load(str(out / "ali_seg.nii.gz"))
    back, _ = _flip_permute(seg_ras, ras_aff)
    assert np.mean(back == np.asarray(seg_ali.dataobj)) > 0.98
    # a single input_image, rerun into the same folder: refused without overwrite, accepted with it
    with pytest.raises(SystemExit):
        run_bundle(
            INFER,
            **TINY,
            input_image=str(inp / "ras.nii.gz"),
            output_dir=str(out),
            ckpt_path=str(trained["dir"] / "model_final.pt"),
        )
    run_bundle(
        INFER,
        **TINY,
        input_image=str(inp / "ras.nii.gz"),
        output_dir=str(out),
        overwrite=True,
        ckpt_path=str(trained["dir"] / "model_final.pt"),
    )
    assert np.array_equal(np.asarray(nib.load(str(out / "ras_seg.nii.gz")).dataobj), seg_ras)


@pytest.mark.parametrize("case", ["missing", "4d", "nan"])
def test_inference_refuses_bad_images_before_writing(trained, tmp_path, capsys, case):
    img = tmp_path / f"{case}.nii.gz"
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    if case == "4d":
        write_nifti(img, np.ones((8, 8, 8, 3), np.float32), aff)
    elif case == "nan":
        arr = np.ones((8, 8, 8), np.float32)
        arr[2, 2, 2] = np.nan
        write_nifti(img, arr, aff)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        run_bundle(
            INFER, **TINY, input_image=str(img), output_dir=str(out), ckpt_path=str(trained["dir"] / "model_final.pt")
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    expect = {"missing": "does not exist", "4d": "is 4D", "nan": "NaN"}[case]
    assert "error: input image" in err and expect in err, err
    assert not out.exists() or not any(out.iterdir())


def test_multi_gpu_config_trains_with_torchrun_on_cpu_gloo(tiny_phantoms, tmp_path):
    out = tmp_path / "ddp"
    ov = tiny_train_overrides(tiny_phantoms, out, val_interval=1)
    args = tmp_path / "args.json"
    args.write_text(json.dumps(ov))
    cmd = [sys.executable, *torchrun_cmd([TRAIN, BUNDLE / "configs" / "multi_gpu_train.yaml"], args_file=args)]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert (out / "model_final.pt").is_file()
    assert (out / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    sd = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in sd)  # DDP wrapper not saved: loads into network_def
    # rank 0 logs; the other rank trained in step (DistributedSampler) without writing
    assert (res.stdout + res.stderr).count("Train completed, saved final checkpoint") == 1


def test_experiment_driver_end_to_end_and_resumes(tiny_phantoms, tmp_path, capsys):
    d = str(tiny_phantoms.parent)
    real = [
        {"kind": "phantom", "datalist": d, "split": "training", "pathologies": ["healthy", "wmh"], "contrasts": ["t1"]}
    ]
    synth = [{"kind": "folder", "path": str(Path(d) / "sub-0001"), "contrasts": ["t1"]}]
    test = [{"kind": "phantom", "datalist": d, "split": "test", "contrasts": ["t1", "flair"], "rotate": True}]
    train = {
        "profile": "tiny",
        "channels": TINY_CHANNELS,
        "patch_size": [16, 16, 16],
        "num_samples": 1,
        "max_epochs": 1,
        "iterations_per_epoch": 2,
        "val_interval": 1000,
        "torch_threads": 1,
        "resume": True,
        "val_sources": [{"kind": "phantom", "datalist": d, "split": "validation", "contrasts": ["t1"], "max_items": 1}],
    }
    sets = {
        "work_dir": str(tmp_path / "work"),
        "docs_dir": str(tmp_path / "docs"),
        "real_datalist": str(tiny_phantoms),
        "test_datalist": str(tiny_phantoms),
        "real_sources": real,
        "synthetic_sources": synth,
        "test_sources": test,
        "train_overrides": train,
    }
    argv = ["--jobs", "2", "--seeds", "0", "--arms", "real_only,real_synthetic"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    experiment = _load_module("segmenter_experiment_driver", ROOT / "experiments" / "synthetic_value" / "experiment.py")
    experiment.main(argv)  # the driver in this process; each (arm, seed) runs in its own subprocess
    summary = json.loads((tmp_path / "docs" / "experiment.json").read_text())
    assert set(summary["arms"]) == {"real_only", "real_synthetic"}
    for arm in summary["arms"].values():
        assert arm["seeds"] == 1
        assert set(arm["dice_mean_sd"]) == {lab.key for lab in LABELS[1:]}
        mean, sd = arm["dice_mean_sd"]["gm"]
        assert 0.0 <= mean <= 1.0 and sd == 0.0
    assert "tumour_gain_real_synthetic_minus_real_only" in summary["targets"]
    md = (tmp_path / "docs" / "experiment.md").read_text()
    assert "| real only | 1 |" in md and "| real + synthetic | 1 |" in md
    assert (tmp_path / "docs" / "experiment.png").stat().st_size > 1000
    timing = json.loads((tmp_path / "work" / "real_only" / "seed0" / "timing.json").read_text())
    assert timing["train_iterations"] == 2 and timing["train"] > 0
    # resume: nothing left to run, the same report again
    before = (tmp_path / "docs" / "experiment.json").read_text()
    capsys.readouterr()
    experiment.main(argv)
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 2 and "start " not in out
    assert json.loads((tmp_path / "docs" / "experiment.json").read_text())["arms"] == json.loads(before)["arms"]


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_inference_benchmark_quick_mode(tmp_path):
    out = tmp_path / "bench.json"
    bench = _load_module("segmenter_inference_benchmark", ROOT / "benchmarks" / "segmenter_inference.py")
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--threads", "1", "--output", str(out)])
    finally:
        torch.set_num_threads(threads)
    r = json.loads(out.read_text())
    assert r["seconds_per_volume"] > 0 and r["peak_rss_mb"] > 0 and r["outputs_written"] == 1
    assert r["weights"] in ("shipped models/model.pt", "random (no models/model.pt yet)")
    assert r["quick"] is True and r["volumes"] == 1
