"""brainspade3d training through monai.bundle on tiny configs: train steps, resume, the exported generator in the
main command and in evaluate.yaml, and DDP training with torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brainspade3d_helpers import (
    BUNDLE,
    CONFIGS,
    TINY,
    TINY_CONFIG,
    common_parser,
    make_tiny_chain,
    one_torch_thread,
    run_inference,
)
from cli_harness import assert_clean_failure, monai_run_args, run_cmd, torchrun_cmd
from monai.bundle import ConfigParser, run

from brainspade.bundle import load_scripts
from brainspade.errors import InputError

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
TRAIN = [str(CONFIGS / "common.yaml"), str(CONFIGS / "train.yaml")]


def _train_overrides(datalist, run_dir) -> dict:
    """With the tiny overlay layered last (profile, generator and discriminator widths)."""
    return {"datalist": str(datalist), "run_dir": str(run_dir), "epoch_length": 2, "device": "$torch.device('cpu')"}


def _evaluate(ckpt: Path, datalist, output_dir: Path, **extra):
    """evaluate.yaml with the tiny overlay on the CPU."""
    return run(
        config_file=[str(CONFIGS / "evaluate.yaml"), str(TINY_CONFIG)],
        ckpt_path=str(ckpt),
        datalist=str(datalist),
        output_dir=str(output_dir),
        device="$torch.device('cpu')",
        **extra,
    )


@pytest.fixture(scope="module")
def trained(tiny_phantoms, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("b3d_train") / "run"
    run(
        config_file=[*TRAIN, str(TINY_CONFIG)],
        max_epochs=1,
        snapshot_interval=1,
        **_train_overrides(tiny_phantoms, run_dir),
    )
    return run_dir


def _trainer_state(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=True)["trainer"]


def test_train_steps_write_checkpoints_and_resume(trained, tiny_phantoms, capsys):
    files = sorted(p.name for p in trained.iterdir())
    assert {"checkpoint_epoch=1.pt", "checkpoint_final.pt", "model.pt", "tensorboard"} <= set(files)
    assert _trainer_state(trained / "checkpoint_final.pt")["iteration"] == 2
    before = torch.load(str(trained / "model.pt"), map_location="cpu", weights_only=True)
    epoch1 = (trained / "checkpoint_epoch=1.pt").stat().st_mtime_ns
    capsys.readouterr()
    run(config_file=[*TRAIN, str(TINY_CONFIG)], max_epochs=2, **_train_overrides(tiny_phantoms, trained))
    assert "resuming from" in capsys.readouterr().out
    state = _trainer_state(trained / "checkpoint_final.pt")
    assert state["max_epochs"] == 2 and state["iteration"] == 4
    assert (trained / "checkpoint_epoch=1.pt").stat().st_mtime_ns == epoch1  # epoch 1 not redone: resumed
    assert (trained / "checkpoint_epoch=2.pt").is_file()
    after = torch.load(str(trained / "model.pt"), map_location="cpu", weights_only=True)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_resume_with_other_network_settings_is_refused_in_one_line_and_resume_false_starts_over(
    trained, tiny_phantoms, tmp_path
):
    """A run resumed with a network that its checkpoint does not fit stops before training with one error line
    (not Ignite's traceback mid-run) and leaves the run folder as it was; `--resume false`, as typed on the
    command line, starts a fresh run instead of reading the string as true."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    args = {k: v for k, v in _train_overrides(tiny_phantoms, run_dir).items() if k != "device"}
    files = [*TRAIN, TINY_CONFIG]
    res = run_cmd(monai_run_args(files, **args, max_epochs=2, style_regions="true"), env={"OMP_NUM_THREADS": "1"})
    assert_clean_failure(
        res, r"checkpoint \(generator\) .*does not fit this network .*Missing key.*regions.*new run folder"
    )
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    res = run_cmd(monai_run_args(files, **args, max_epochs=1, resume="false"), env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {run_dir}" not in res.stdout
    assert _trainer_state(run_dir / "checkpoint_final.pt")["iteration"] == 2  # one epoch from scratch, not 2 + 2


def test_trained_generator_drives_the_main_command_and_evaluation(trained, tiny_phantoms, tmp_path, capsys):
    chain = make_tiny_chain(tiny_phantoms, tmp_path / "w")
    out = tmp_path / "out"
    run_inference({**chain, "ckpt_path": str(trained / "model.pt")}, output_dir=str(out), contrast="t2", preview=False)
    assert (out / "sample-000000_t2.nii.gz").is_file() and (out / "datalist.json").is_file()

    seg = ConfigParser()
    seg.read_config(str(BUNDLE.parent / "segmenter" / "configs" / "inference.yaml"))
    seg.update({"bundle_root": str(BUNDLE.parent / "segmenter"), "profile": "tiny", "channels": [4, 4, 4, 4]})
    torch.save(seg.get_parsed_content("network_def").state_dict(), str(tmp_path / "seg.pt"))
    ev = tmp_path / "eval"
    seg_opts = {"segmenter_ckpt": str(tmp_path / "seg.pt"), "segmenter_overrides": {"channels": [4, 4, 4, 4]}}
    _evaluate(trained / "model.pt", tiny_phantoms, ev, **seg_opts)
    report = json.loads((ev / "metrics.json").read_text())
    test_subjects = len(json.loads(Path(tiny_phantoms).read_text())["test"])
    assert set(report["per_contrast"]) == {"t1", "t2", "flair", "t1ce"}
    for r in report["per_contrast"].values():
        assert r["num_pairs"] == test_subjects
        assert -1 <= r["ssim_encoded"] <= 1 and r["psnr_encoded"] > 0 and r["tissue_wasserstein_mean"] >= 0
        assert {"wm", "gm", "csf"} <= set(r["tissue_wasserstein"]) and 0 <= r["dice_synthetic"] <= 1
    assert "ssim_encoded" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # results exist: refused without --overwrite
        _evaluate(trained / "model.pt", tiny_phantoms, ev)


def test_torchrun_ddp_training_on_two_cpu_processes(tiny_phantoms, tmp_path):
    run_dir = tmp_path / "run"
    over = tmp_path / "tiny.json"
    settings = {k: v for k, v in _train_overrides(tiny_phantoms, run_dir).items() if k != "device"}  # per rank
    over.write_text(json.dumps({**settings, "max_epochs": 1, "torch_threads": 1}))
    files = [*TRAIN, CONFIGS / "multi_gpu_train.yaml", TINY_CONFIG, over]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(
        [sys.executable, *torchrun_cmd(files)], capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    files = sorted(p.name for p in run_dir.iterdir())
    assert {"checkpoint_epoch=1.pt", "checkpoint_final.pt", "model.pt"} <= set(files)
    assert res.stdout.count("Saved checkpoint at epoch: 1") == 1  # rank 0 only
    state = torch.load(str(run_dir / "model.pt"), map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # plain generator weights, not the DDP wrapper's
    common_parser().get_parsed_content("network_def").load_state_dict(state, strict=True)
    # each rank trained on its own half of the pairs: 2 iterations per rank
    assert _trainer_state(run_dir / "checkpoint_final.pt")["iteration"] == 2


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients():
    """`use_checkpoint` (paper profile) trades memory for recomputation only: same loss, same gradients."""
    nets = []
    for flag in (False, True):
        torch.manual_seed(0)
        net = common_parser(use_checkpoint=flag).get_parsed_content("network_def")
        net.train()
        nets.append(net)
    nets[1].load_state_dict(nets[0].state_dict())
    pv = torch.softmax(torch.randn(2, 10, 32, 32, 32, generator=torch.Generator().manual_seed(1)), 1)
    z = torch.randn(2, TINY["z_dim"], generator=torch.Generator().manual_seed(2))
    losses = []
    for net in nets:
        loss = net(pv, torch.tensor([0, 2]), z=z).square().mean()
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    checked = 0
    for (name, a), (_, b) in zip(nets[0].named_parameters(), nets[1].named_parameters(), strict=True):
        if name.startswith("spade.encoder."):  # the style encoder is unused when z is given
            continue
        assert a.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name
        checked += "decoder.blocks" in name
    assert checked > 0


def test_patch_windows_sit_on_the_decoder_grid_and_are_clipped_to_the_volume():
    patch_window = load_scripts(BUNDLE, "brainspade3d_scripts").networks.patch_window
    gen = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(50):
        vox, lat = patch_window([96, 96, 64], [64, 64, 64], 16, gen)
        assert [s.stop - s.start for s in vox] == [64, 64, 64]
        for v, c in zip(vox, lat, strict=True):
            assert v.start % 16 == 0 and (c.start, c.stop) == (v.start // 16, v.stop // 16)
        corners.add(vox[0].start)
    assert corners == {0, 16, 32} and vox[2] == slice(0, 64)  # every corner drawn; the 64-voxel side is whole
    assert patch_window([32, 32, 32], [64, 64, 64], 4, gen)[0] == (slice(0, 32),) * 3
    with pytest.raises(ValueError, match="multiples of 16"):
        patch_window([96, 96, 96], [40, 40, 40], 16, gen)


def test_a_window_of_the_whole_first_grid_decodes_as_the_whole_volume_and_a_patch_keeps_its_shape():
    torch.manual_seed(0)
    net = common_parser().get_parsed_content("network_def").eval()
    pv = torch.softmax(torch.randn(1, 10, 32, 32, 32, generator=torch.Generator().manual_seed(1)), 1)
    z = torch.randn(1, TINY["z_dim"], generator=torch.Generator().manual_seed(2))
    c = torch.tensor([1])
    cells = 32 // net.grid_step
    with torch.no_grad():
        whole = net.decode(pv, c, z)
        windowed = net.decode(pv, c, z, (slice(0, cells),) * 3)
        patch = net.decode(pv[..., :16, 8:24, :], c, z, (slice(0, 4), slice(2, 6), slice(0, cells)))
    assert torch.equal(whole, windowed)
    assert patch.shape == (1, 1, 16, 16, 32) and torch.isfinite(patch).all()


def test_the_exported_generator_is_the_ema_copy(trained):
    """model.pt holds the EMA weights saved in the checkpoint (not the raw generator's), in the plain format."""
    ckpt = torch.load(str(trained / "checkpoint_final.pt"), map_location="cpu", weights_only=True)
    exported = torch.load(str(trained / "model.pt"), map_location="cpu", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    assert exported.keys() == ckpt["generator"].keys() == ema.keys()
    assert all(torch.equal(exported[k], ema[k]) for k in exported)
    assert int(ckpt["ema"]["n_averaged"]) == _trainer_state(trained / "checkpoint_final.pt")["iteration"]
    assert any(not torch.equal(exported[k], ckpt["generator"][k]) for k in exported if exported[k].is_floating_point())


def test_the_style_film_path_starts_as_the_identity_and_then_carries_the_style_code():
    """style_film adds one zero-initialised Linear: old weights load beside it and decode exactly as before; once it
    is trained, the style code changes the image through it even where the SPADE path would not."""
    torch.manual_seed(0)
    plain = common_parser(style_film=False).get_parsed_content("network_def").eval()
    film = common_parser(style_film=True).get_parsed_content("network_def").eval()
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["film.bias", "film.weight"] and not unexpected
    pv = torch.softmax(torch.randn(1, 10, 32, 32, 32, generator=torch.Generator().manual_seed(1)), 1)
    z = torch.randn(2, TINY["z_dim"], generator=torch.Generator().manual_seed(2))
    c = torch.tensor([0, 0])
    with torch.no_grad():
        assert torch.equal(
            plain.decode(pv.expand(2, -1, -1, -1, -1), c, z), film.decode(pv.expand(2, -1, -1, -1, -1), c, z)
        )
        torch.nn.init.normal_(film.film.weight, std=0.5)
        out = film.decode(pv.expand(2, -1, -1, -1, -1), c, z)
    assert not torch.allclose(out[0], out[1])


def test_the_style_regions_path_starts_as_the_identity_and_sets_each_labels_brightness(
    trained, tiny_phantoms, tmp_path
):
    """style_regions adds one zero-initialised Linear: a fine-tune (`init_weights`) starts from weights written
    without it and decodes exactly as they did; trained, the code brightens one label in one contrast and nothing
    else. Weights that differ elsewhere are still refused with one error line, and the fine-tune runs."""
    scripts = load_scripts(BUNDLE, "brainspade3d_scripts")
    plain = scripts.generation.load_generator(
        common_parser().get_parsed_content("network_def"), str(trained / "model.pt"), "cpu"
    )
    regions = common_parser(style_regions=True).get_parsed_content("network_def")
    regions = scripts.generation.load_initial_generator(regions, str(trained / "model.pt"), "cpu").eval()
    pv = torch.softmax(4 * torch.randn(1, 10, 32, 32, 32, generator=torch.Generator().manual_seed(1)), 1)
    z = torch.randn(1, TINY["z_dim"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = plain.decode(pv, torch.tensor([1]), z)
        assert torch.equal(before, regions.decode(pv, torch.tensor([1]), z))
        shift = regions.regions.bias.view(regions.num_contrasts, 2, regions.num_labels)
        shift[1, 1, 3] = 0.5  # contrast 1, shift, label 3 (WM)
        after = regions.decode(pv, torch.tensor([1]), z)
        assert torch.allclose(after - before, 0.5 * pv[:, 3:4] * (1 - pv[:, :1]), atol=1e-5)
        assert torch.equal(plain.decode(pv, torch.tensor([0]), z), regions.decode(pv, torch.tensor([0]), z))
    wider = common_parser(style_regions=True, z_dim=2 * TINY["z_dim"]).get_parsed_content("network_def")
    with pytest.raises(InputError, match="does not fit this network"):
        scripts.generation.load_initial_generator(wider, str(trained / "model.pt"), "cpu")
    run_dir = tmp_path / "regions"
    run(
        config_file=[*TRAIN, str(TINY_CONFIG)],
        max_epochs=1,
        style_regions=True,
        init_weights=str(trained / "model.pt"),
        **_train_overrides(tiny_phantoms, run_dir),
    )
    exported = torch.load(str(run_dir / "model.pt"), map_location="cpu", weights_only=True)
    assert "regions.weight" in exported and float(exported["regions.weight"].abs().sum()) > 0


def test_the_validation_curve_evaluates_each_snapshot_once(trained, tiny_phantoms, tmp_path):
    """evaluate.yaml's `curve`: one point per EMA snapshot (plus the starting weights), a plot; a rerun adds nothing."""
    out = tmp_path / "curve"
    args = dict(
        config_file=[str(CONFIGS / "evaluate.yaml"), str(TINY_CONFIG)],
        snapshot_dir=str(trained / "snapshots"),
        output_dir=str(out),
        datalist=str(tiny_phantoms),
        epoch_length=2,
        curve_start_weights=str(trained / "model.pt"),
        curve_start_iteration=100,
        curve_overrides={"datalist_key": "test", "max_pairs": 2, "style_samples": 2},
    )
    run("curve", **args)
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [100, 102]
    assert all(0 <= v <= 1 for r in rows for v in r["ssim_sampled"].values() if v is not None)
    assert (out / "curve.png").stat().st_size > 0
    run("curve", **args)
    assert len((out / "curve.jsonl").read_text().splitlines()) == 2


def test_the_reconstruction_term_weights_lesion_voxels():
    """masked_l1: background voxels count 0, brain voxels 1, lesion voxels `lesion_weight` (a weighted mean)."""
    masked_l1 = load_scripts(BUNDLE, "brainspade3d_scripts").training.masked_l1
    pv = torch.zeros(1, 10, 3, 1, 1)
    pv[0, 0, 0], pv[0, 3, 1], pv[0, 6, 2] = 1.0, 1.0, 1.0  # background, white matter, WMH
    real = torch.zeros(1, 1, 3, 1, 1)
    fake = torch.tensor([5.0, 0.0, 1.0]).reshape(1, 1, 3, 1, 1)  # wrong in the background and in the lesion only
    assert masked_l1(fake, real, pv).item() == pytest.approx(0.5)  # (0 + 1) / 2
    assert masked_l1(fake, real, pv, 4.0).item() == pytest.approx(0.8)  # (0 + 4) / 5


def test_the_lesion_share_makes_a_small_lesion_weigh_as_much_as_a_large_one():
    """masked_l1 with `lesion_share`: each lesion label present carries at least that share of its sample's brain
    weight whatever its size, per sample of a batch; an absent label and a large lesion keep the fixed factor."""
    masked_l1 = load_scripts(BUNDLE, "brainspade3d_scripts").training.masked_l1
    pv = torch.zeros(2, 10, 8, 1, 1)
    pv[:, 3] = 1.0  # white matter everywhere
    pv[0, 3, 0], pv[0, 6, 0] = 0.0, 1.0  # sample 0: one WMH voxel of 8
    pv[1, 3, :4], pv[1, 6, :4] = 0.0, 1.0  # sample 1: four WMH voxels of 8
    real = torch.zeros(2, 1, 8, 1, 1)
    fake = (pv[:, 6:7] > 0).float()  # wrong by 1 in the lesions only
    # share 0.5 of 8 brain voxels = 4: the one-voxel lesion weighs 4 (factor 3), the four-voxel one 1 each (factor 0,
    # below the fixed factor 2 - 1 = 1, which wins: 2 each)
    expected = (4.0 + 4 * 2.0) / ((7 + 4.0) + (4 + 4 * 2.0))
    assert masked_l1(fake[:1], real[:1], pv[:1], 1.0, 0.5).item() == pytest.approx(4.0 / 11.0)
    assert masked_l1(fake, real, pv, 2.0, 0.5).item() == pytest.approx(expected)
    assert masked_l1(fake, real, pv, 2.0, 0.0).item() == pytest.approx((2.0 + 8.0) / (9.0 + 12.0))
    healthy = pv.clone()
    healthy[:, 6], healthy[:, 3] = 0.0, 1.0
    assert masked_l1(fake, real, healthy, 1.0, 0.5).item() == pytest.approx(5.0 / 16.0)  # plain brain mean


def test_contrast_weights_draw_a_contrast_more_often_and_bad_weights_are_refused():
    from brainspade.errors import InputError

    training = load_scripts(BUNDLE, "brainspade3d_scripts").training
    pairs = [{"contrast_name": c} for _ in range(25) for c in ("t1", "t2", "flair", "t1ce")]
    assert training.contrast_sampler(pairs, {}) is None
    sampler = training.contrast_sampler(pairs, {"flair": 3.0}, seed=1)
    draws = [pairs[i]["contrast_name"] for _ in range(40) for i in sampler]
    assert len(draws) == 40 * len(pairs)
    assert draws.count("flair") / len(draws) == pytest.approx(3 / 6, abs=0.03)  # 3 / (3 + 1 + 1 + 1)
    assert draws[:100] == [pairs[i]["contrast_name"] for i in training.contrast_sampler(pairs, {"flair": 3.0}, 1)]
    # contrast names are read as every option reads them (any case)
    upper = training.contrast_sampler(pairs, {"FLAIR": 3.0}, seed=1)
    assert [pairs[i]["contrast_name"] for i in upper] == draws[:100]
    refused = [({"pd": 2}, "unknown contrast 'pd'"), ({"t1,t2": 2}, "one contrast per key")]
    for bad, words in [*refused, ({"t1": -1}, "out of range"), ({"t1": "x"}, "not a finite number")]:
        with pytest.raises(InputError, match=words):
            training.contrast_sampler(pairs, bad)
    # numbers are read by the shared parser: a numeric string from a shell weighs what the number does
    as_text = training.contrast_sampler(pairs, {"flair": "3"}, seed=1)
    assert [pairs[i]["contrast_name"] for i in as_text] == draws[:100]
    with pytest.raises(InputError, match="no pair"):
        training.contrast_sampler(pairs, dict.fromkeys(("t1", "t2", "flair", "t1ce"), 0))


def test_training_with_the_lesion_share_contrast_weights_and_paired_styles_runs_and_refuses_bad_values(
    tiny_phantoms, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    opts = {"max_epochs": 1, "rec_lesion_share": 0.05, **_train_overrides(tiny_phantoms, run_dir)}
    run(config_file=[*TRAIN, str(TINY_CONFIG)], contrast_weights={"flair": 2.0}, paired_style_prob="1", **opts)
    assert _trainer_state(run_dir / "checkpoint_final.pt")["iteration"] == 2
    refused = [
        ({"contrast_weights": {"pd": 2.0}}, "unknown contrast 'pd'; accepted: t1, t2, flair, t1ce"),
        ({"paired_style_prob": 1.5}, "paired_style_prob=1.5 is out of range; accepted: 0..1"),
    ]
    for i, (bad, words) in enumerate(refused):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run(config_file=[*TRAIN, str(TINY_CONFIG)], **{**opts, **bad, "run_dir": str(tmp_path / f"r{i}")})
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and words in err and "Traceback" not in err
        assert not (tmp_path / f"r{i}").exists()


def _tiny_label_maps(datalist, count: int) -> list[torch.Tensor]:
    """The first `count` training subjects' partial-volume maps, (1, 10, X, Y, Z) each (brainspade.io's loader)."""
    from brainspade.io import load_nifti

    entries = json.loads(Path(datalist).read_text())["training"][:count]
    return [torch.from_numpy(load_nifti(Path(datalist).parent / e["pv"], "pv")[0])[None] for e in entries]


def test_paired_styles_render_one_scanner_on_this_map_and_on_the_previous_iterations(tiny_phantoms):
    """paired_renders: one scanner on both maps (the same map twice gives the same image; two maps' style profiles,
    as the evaluation reads them, lie far closer than two scanners' renderings of one map do). The step pairs a batch
    with the previous one's map, never with its own subject, and at paired_style_prob 0 never."""
    import copy

    from brainspade.contrasts import CONTRASTS
    from brainspade.labels import pv_to_int

    scripts = load_scripts(BUNDLE, "brainspade3d_scripts")
    training, evaluate = scripts.training, scripts.evaluate
    pv_a, pv_b = _tiny_label_maps(tiny_phantoms, 2)
    labels_a, labels_b = (pv_to_int(pv[0].numpy()) for pv in (pv_a, pv_b))

    def distance(image_a, labels_a, image_b, labels_b) -> float:  # the evaluation's style-profile distance
        profiles = [
            evaluate.style_profile(img[0, 0].numpy(), lab) for img, lab in ((image_a, labels_a), (image_b, labels_b))
        ]
        return evaluate.profile_distance(*profiles)

    flair = torch.tensor([CONTRASTS.index("flair")])
    target, style = training.paired_renders(pv_a, pv_a, flair, np.random.default_rng(0))
    assert target.shape == (1, 1, *pv_a.shape[2:]) and torch.equal(target, style)
    paired, independent = [], []
    for seed in range(4):
        target, style = training.paired_renders(pv_a, pv_b, flair, np.random.default_rng(seed))
        other, _ = training.paired_renders(pv_b, pv_b, flair, np.random.default_rng(seed + 100))
        paired.append(distance(target, labels_a, style, labels_b))
        independent.append(distance(other, labels_b, style, labels_b))
    assert np.mean(paired) < 0.5 * np.mean(independent)

    step = training.SPADEGANStep(*[None] * 5, paired_style_prob=1.0, seed=0)
    img_a, img_b = torch.rand(1, 1, *pv_a.shape[2:]), torch.rand(1, 1, *pv_b.shape[2:])
    assert step._style_pair({"id": ["a"]}, pv_a, img_a, flair) == (img_a, img_a, 0.0)  # no previous map yet
    replay = copy.deepcopy(step.rng)
    target, style, paired_flag = step._style_pair({"id": ["b"]}, pv_b, img_b, flair)
    replay.random()
    expected = training.paired_renders(pv_b, pv_a, flair, replay)
    assert paired_flag == 1.0 and torch.equal(target, expected[0]) and torch.equal(style, expected[1])
    assert step._style_pair({"id": ["b"]}, pv_b, img_b, flair) == (img_b, img_b, 0.0)  # the same subject again
    never = training.SPADEGANStep(*[None] * 5, paired_style_prob=0.0)
    for ids, pv, img in ((["a"], pv_a, img_a), (["b"], pv_b, img_b)):
        assert never._style_pair({"id": ids}, pv, img, flair) == (img, img, 0.0)


def test_tiles_cover_the_volume_on_the_grid_and_one_whole_tile_synthesises_as_decode():
    scripts = load_scripts(BUNDLE, "brainspade3d_scripts")
    tiles = scripts.networks.tile_windows([96, 96, 80], [64, 64, 64], [32, 32, 32], 16)
    assert len(tiles) == 2 * 2 * 2  # corners 0 and 32 on the 96 sides, 0 and 16 (flush) on the 80 side
    cover = torch.zeros(96, 96, 80)
    for vox, lat in tiles:
        cover[vox] += 1
        assert all(
            v.start % 16 == 0 and (lt.start, lt.stop) == (v.start // 16, v.stop // 16)
            for v, lt in zip(vox, lat, strict=True)
        )
    assert cover.min() >= 1
    torch.manual_seed(0)
    net = common_parser().get_parsed_content("network_def").eval()
    pv = torch.softmax(torch.randn(1, 10, 32, 32, 32, generator=torch.Generator().manual_seed(1)), 1)
    z, c = torch.randn(1, TINY["z_dim"], generator=torch.Generator().manual_seed(2)), torch.tensor([2])
    with torch.no_grad():
        whole = net.decode(pv, c, z)
        net.tile_size = net.tile_stride = [32, 32, 32]
        assert torch.allclose(net.synthesise(pv, c, z), whole, atol=1e-6)
        net.tile_size, net.tile_stride = [16, 16, 16], [8, 8, 8]
        tiled = net.synthesise(pv, c, z)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all() and not torch.allclose(tiled, whole)
