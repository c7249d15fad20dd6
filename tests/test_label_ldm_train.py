"""label_ldm training configs: a few tiny steps of both stages through monai.bundle, then resume (EMA weights and the
learning-rate schedule restored); the recipe's pieces (bf16 rule, warm-up + cosine factor, old checkpoints)."""

from __future__ import annotations

import re

import pytest
import torch
from label_ldm_helpers import BUNDLE, CONFIGS, TINY, TINY_CONFIG, common_parser, one_thread  # noqa: F401
from monai.bundle import run

from brainspade.bundle import load_scripts
from brainspade.errors import InputError

scripts = load_scripts(BUNDLE, "label_ldm_scripts")

COMMON = str(CONFIGS / "common.yaml")


def _iteration(ckpt: str) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["trainer"]["iteration"])


def _stage(train_config: str, datalist, run_dir, export_path: str, max_epochs: int, **overrides) -> int:
    """Train one stage (common.yaml, its train config, the tiny overlay) to `max_epochs` of 2 iterations; the
    iteration its final checkpoint reached."""
    run(
        config_file=[COMMON, str(CONFIGS / train_config), str(TINY_CONFIG)],
        datalist=str(datalist),
        epoch_length=2,
        save_interval=2,
        run_dir=str(run_dir),
        export_path=export_path,
        max_epochs=max_epochs,
        **overrides,
    )
    return _iteration(str(run_dir / "checkpoints" / "final.pt"))


def test_both_stages_train_resume_and_export(tiny_phantoms, tmp_path, capsys):
    ae_run, dm_run = tmp_path / "ae", tmp_path / "dm"
    ae_pt, dm_pt = str(tmp_path / "autoencoder.pt"), str(tmp_path / "diffusion.pt")
    assert _stage("train_autoencoder.yaml", tiny_phantoms, ae_run, ae_pt, 1, adv_start=1, image_log_interval=2) == 2
    # resume: the second run continues from the checkpoint (iterations 3-4), not from scratch
    assert _stage("train_autoencoder.yaml", tiny_phantoms, ae_run, ae_pt, 2, adv_start=1) == 4
    exported = torch.load(ae_pt, map_location="cpu", weights_only=True)
    assert "autoencoder" in exported and exported["profile"] == "tiny"
    assert list(ae_run.glob("events.out.tfevents*")), "no TensorBoard log"

    dm = dict(autoencoder_path=ae_pt, batch_size=2)
    assert (
        _stage("train_diffusion.yaml", tiny_phantoms, dm_run, dm_pt, 1, image_log_interval=2, preview_steps=2, **dm)
        == 2
    )
    capsys.readouterr()
    assert _stage("train_diffusion.yaml", tiny_phantoms, dm_run, dm_pt, 2, **dm) == 4
    assert re.search(r"read \d+ latents of \d+ subjects from .*latent_cache\.pt", capsys.readouterr().out)  # resume
    d = torch.load(dm_pt, map_location="cpu", weights_only=True)
    assert d["scale_factor"] > 0 and d["profile"] == "tiny"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in dm_run.glob("events.out.tfevents*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert "train_loss" in tags, tags  # the diffusion loss curve reaches TensorBoard
    assert d["cond_max"].shape == (4,) and d["train_conditions"].shape[1] == 4
    assert list(d["latent_shape"].tolist()) == [TINY["latent_channels"], 8, 8, 8]
    # resume restored the EMA (4 updates, not 2 since the restart) and the schedule (4 steps); the export and the
    # sampler's loading from a checkpoint both take the EMA weights
    ckpt = torch.load(dm_run / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
    assert int(ckpt["ema"]["n_averaged"]) == 4 and ckpt["lr_scheduler"]["last_epoch"] == 4
    assert d["weights"] == "ema" and all(torch.equal(v, ckpt["ema"][f"module.{k}"]) for k, v in d["diffusion"].items())
    assert any(not torch.equal(v, ckpt["diffusion"][k]) for k, v in d["diffusion"].items())  # EMA != raw weights
    net = common_parser().get_parsed_content("network_def")
    scripts.load_weights(net, dm_run / "checkpoints" / "final.pt", "diffusion")
    assert all(torch.equal(v, d["diffusion"][k]) for k, v in net.state_dict().items())
    # resumed with networks the checkpoints do not fit: one error line before any step, the checkpoints untouched
    stamps = {p: p.stat().st_mtime_ns for p in (*ae_run.glob("checkpoints/*.pt"), *dm_run.glob("checkpoints/*.pt"))}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _stage("train_autoencoder.yaml", tiny_phantoms, ae_run, ae_pt, 3, ae_channels=[4, 8, 16])
    assert re.search(r"error: checkpoint \(autoencoder\) .*does not fit this network", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        _stage("train_diffusion.yaml", tiny_phantoms, dm_run, dm_pt, 3, ldm_channels=[8, 8, 8], **dm)
    assert re.search(r"error: checkpoint \(diffusion\) .*does not fit this network", capsys.readouterr().err)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    ae_ckpt = torch.load(ae_run / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
    assert ae_ckpt["lr_scheduler"]["last_epoch"] == 4

    # fine-tune: a fresh run starts from exported weights (learning rate 0, so they must come out unchanged), and a
    # resumed run ignores init_weights (its checkpoint holds the run's own weights)
    ft_ae, ft_dm = str(tmp_path / "ft_autoencoder.pt"), str(tmp_path / "ft_diffusion.pt")
    # the autoencoder's decoder fine-tune: the encoder comes out as loaded, the decoder has learnt
    ft_run = tmp_path / "ft_ae"
    _stage("train_autoencoder.yaml", tiny_phantoms, ft_run, ft_ae, 1, init_weights=ae_pt, ae_trainable="decoder")
    ae_after = torch.load(ft_ae, map_location="cpu", weights_only=True)["autoencoder"]
    before = exported["autoencoder"]
    assert all(
        torch.equal(v, ae_after[k]) for k, v in before.items() if not k.startswith(("decoder.", "post_quant_conv."))
    )
    assert any(not torch.equal(v, ae_after[k]) for k, v in before.items() if k.startswith("decoder."))
    # resumed with another init file: the checkpoint wins (init_weights is not read, so a missing file is no error)
    assert (
        _stage(
            "train_autoencoder.yaml", tiny_phantoms, ft_run, ft_ae, 2, init_weights="nope.pt", ae_trainable="decoder"
        )
        == 4
    )
    # (with the lesion-weighted loss on: its weights travel with the batches; at learning rate 0 nothing moves)
    _stage(
        "train_diffusion.yaml",
        tiny_phantoms,
        tmp_path / "ft_dm",
        ft_dm,
        1,
        init_weights=dm_pt,
        learning_rate=0,
        lesion_loss_weight="4",
        lesion_loss_per_label="yes",
        lesion_loss_band="1",
        **dm,
    )
    dm_after = torch.load(ft_dm, map_location="cpu", weights_only=True)["diffusion"]
    assert all(torch.allclose(v, dm_after[k]) for k, v in d["diffusion"].items())
    assert scripts.load_initial_weights(net, dm_pt, "diffusion", None)
    assert not scripts.load_initial_weights(net, "missing.pt", "diffusion", "ckpt.pt")  # resuming: not read
    assert not scripts.load_initial_weights(net, "", "diffusion", None)
    with pytest.raises(SystemExit) as err:
        _stage("train_diffusion.yaml", tiny_phantoms, tmp_path / "ft_bad", ft_dm, 1, init_weights="nope.pt", **dm)
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        _stage("train_diffusion.yaml", tiny_phantoms, tmp_path / "lw_bad", ft_dm, 1, lesion_loss_weight="-1", **dm)
    assert err.value.code == 2 and not (tmp_path / "lw_bad").exists()
    with pytest.raises(SystemExit) as err:
        _stage(
            "train_diffusion.yaml", tiny_phantoms, tmp_path / "lw_bad", ft_dm, 1, lesion_loss_per_label="maybe", **dm
        )
    assert err.value.code == 2 and not (tmp_path / "lw_bad").exists()
    with pytest.raises(SystemExit) as err:
        _stage("train_diffusion.yaml", tiny_phantoms, tmp_path / "lw_bad", ft_dm, 1, lesion_loss_band="9", **dm)
    assert err.value.code == 2 and not (tmp_path / "lw_bad").exists()


def test_lesion_loss_weight_per_label_shares_equally():
    """Per label, known answers: a core of 1 latent voxel and an oedema of 3 (mean footprint 2) get shares 2 and 2/3,
    so each label carries the same total extra weight as a uniform weight would give both (4 x w); a map with one
    lesion label weighs as the uniform rule does; a healthy map weighs 1 everywhere; the share is capped."""
    pv = torch.zeros(10, 8, 8, 8)
    pv[2] = 1.0
    pv[2, :4, :4, :4], pv[7, :4, :4, :4] = 0.0, 1.0  # tumour core fills the first 4^3 footprint
    pv[2, 4:, :, :4], pv[8, 4:, :, :4] = 0.0, 1.0  # oedema fills two more footprints
    pv[2, :4, 4:, :4], pv[8, :4, 4:, :4] = 0.0, 1.0  # and a third
    w = scripts.lesion_loss_weight(pv, (2, 2, 2), 3.0, per_label=True)
    assert float(w[0, 0, 0, 0]) == pytest.approx(1 + 3 * 2.0)
    assert [float(w[0, i, j, 0]) for i, j in ((1, 0), (1, 1), (0, 1))] == pytest.approx([1 + 3 * 2 / 3] * 3)
    assert float((w - 1).sum()) == pytest.approx(float((scripts.lesion_loss_weight(pv, (2, 2, 2), 3.0) - 1).sum()))
    assert torch.equal(w[0, :, :, 1], torch.ones(2, 2))
    pv[8], pv[2, 4:, :, :4], pv[2, :4, 4:, :4] = 0.0, 1.0, 1.0  # core alone: the uniform rule
    assert torch.equal(
        scripts.lesion_loss_weight(pv, (2, 2, 2), 3.0, True), scripts.lesion_loss_weight(pv, (2, 2, 2), 3.0)
    )
    pv[7], pv[2] = 0.0, 1.0
    assert torch.equal(scripts.lesion_loss_weight(pv, (2, 2, 2), 3.0, True), torch.ones(1, 2, 2, 2))
    big = torch.zeros(10, 24, 24, 24)
    big[8] = 1.0
    big[8, 0, 0, 0], big[7, 0, 0, 0] = 0.0, 1.0  # 1 core voxel against 13,823 oedema voxels at the latent grid
    assert float(scripts.lesion_loss_weight(big, (24, 24, 24), 1.0, True).max()) == pytest.approx(
        1 + scripts.MAX_LABEL_SHARE
    )


def test_lesion_loss_band_grows_the_weighted_region():
    """Band, known answers: a core filling one latent footprint of a 4^3 latent grid gets its weight over the 3^3
    neighbourhood with band 1 (clipped at the edge), per label as well; band 0 is the plain rule; a band out of range
    or the options' bad values are one error line each, before anything is encoded."""
    pv = torch.zeros(10, 16, 16, 16)
    pv[2] = 1.0
    pv[2, 4:8, 4:8, 4:8], pv[7, 4:8, 4:8, 4:8] = 0.0, 1.0  # latent voxel (1, 1, 1)
    assert int((scripts.lesion_loss_weight(pv, (4, 4, 4), 2.0) > 1).sum()) == 1
    for per_label in (False, True):
        w = scripts.lesion_loss_weight(pv, (4, 4, 4), 2.0, per_label, band=1)
        assert torch.equal(w[0, :3, :3, :3], torch.full((3, 3, 3), 3.0)) and int((w > 1).sum()) == 27
    pv[2, 0, 0, 0], pv[8, 0, 0, 0] = 0.0, 1.0  # one oedema voxel in the corner's footprint: at the edge, 2^3 grown
    w = scripts.lesion_loss_weight(pv, (4, 4, 4), 2.0, band=1)
    assert int((w > 1).sum()) == 27 and float(w[0, 3, 3, 3]) == 1.0
    weigh = scripts.lesion_weigher("2", "no", "1")
    assert torch.equal(weigh(pv, (4, 4, 4)), w)
    assert scripts.lesion_weigher(0, False, 2) is None
    for bad in ({"band": 5}, {"band": "wide"}, {"weight": -1}, {"per_label": "maybe"}):
        args = {"weight": 1, "per_label": False, "band": 0} | bad
        with pytest.raises(InputError, match="lesion_loss_" + next(iter(bad))):
            scripts.lesion_weigher(args["weight"], args["per_label"], args["band"])


def test_lesion_loss_weight_reaches_the_loss():
    """The lesion-weighted diffusion loss, known answers: the weight map of one PV map at the latent grid, MONAI's
    v-prediction batch carrying it as the target's last channel, and the weighted MSE reading it back."""
    pv = torch.zeros(10, 8, 8, 8)
    pv[3] = 1.0
    pv[3, 0, 0, 0], pv[7, 0, 0, 0] = 0.6, 0.4  # 40 % tumour core in one voxel of the first 4^3 footprint
    w = scripts.lesion_loss_weight(pv, (2, 2, 2), 5.0)
    assert w.shape == (1, 2, 2, 2) and float(w[0, 0, 0, 0]) == pytest.approx(3.0)
    assert torch.equal(w.flatten()[1:], torch.ones(7))
    with pytest.raises(InputError, match="lesion_loss_weight"):
        scripts.encode_datalist(None, "", [], "cpu", None, lesion_weight=-1)
    with pytest.raises(InputError, match="lesion_loss_per_label"):
        scripts.encode_datalist(None, "", [], "cpu", None, lesion_weight=1, lesion_weight_per_label="maybe")

    loss = scripts.WeightedMSELoss()
    pred, target = torch.zeros(1, 2, 2, 2, 2), torch.ones(1, 2, 2, 2, 2)
    target[:, :, 0, 0, 0] = 3.0  # squared error 9 where the weight is 3, 1 at the seven voxels of weight 1
    assert float(loss(pred, target)) == pytest.approx(2.0)  # no weight channel: the plain MSE, (2*9 + 14) / 16
    assert float(loss(pred, torch.cat([target, w[None]], 1))) == pytest.approx((2 * 27 + 14) / 16 / 1.25)

    from monai.networks.schedulers import DDPMScheduler

    prepare = scripts.WeightedVPredictionPrepareBatch(DDPMScheduler(1000), 1000, condition_name="cond")
    batch = {"image": torch.randn(2, 4, 2, 2, 2), "cond": torch.rand(2, 1, 4), "weight": torch.cat([w[None]] * 2)}
    _, with_weight, _, kwargs = prepare(batch, torch.device("cpu"))
    assert with_weight.shape == (2, 5, 2, 2, 2) and torch.equal(with_weight[:, -1:], batch["weight"])
    assert "condition" in kwargs and "noise" in kwargs
    _, plain, _, _ = prepare({k: v for k, v in batch.items() if k != "weight"}, torch.device("cpu"))
    assert plain.shape == (2, 4, 2, 2, 2)


def test_trainable_parameters_of_a_decoder_fine_tune():
    ae = common_parser().get_parsed_content("autoencoder_def")
    assert len(scripts.trainable_parameters(ae, "all")) == len(list(ae.parameters()))
    params = scripts.trainable_parameters(ae, "decoder")
    ids = {id(p) for p in params}
    assert ids == {id(p) for n in ("decoder", "post_quant_conv") for p in getattr(ae, n).parameters()}
    assert all(p.requires_grad == (id(p) in ids) for p in ae.parameters())
    with pytest.raises(InputError, match="ae_trainable='encoder' is not known; accepted: all, decoder"):
        scripts.trainable_parameters(ae, "encoder")


def test_warmup_cosine_factor():
    f = scripts.WarmupCosine(total_iters=110, warmup_iters=10, min_factor=0.1, start_factor=0.0)
    assert f(0) == 0.0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert scripts.WarmupCosine(100, 10, schedule="constant")(3) == 1.0
    with pytest.raises(InputError, match="lr_schedule='step' is not known; accepted: cosine, constant"):
        scripts.WarmupCosine(100, schedule="step")


def test_bf16_rule_and_checkpoints_written_before_ema(tmp_path, monkeypatch):
    from brainspade import precision

    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert scripts.training_bf16("auto", "cpu") and scripts.training_bf16(None, "cpu")
    assert not scripts.training_bf16("auto", "cuda")  # CUDA keeps MONAI's fp16 AMP
    assert scripts.training_bf16("true", "cuda") and not scripts.training_bf16("false", "cpu")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))  # bf16 emulated: slower, off
    assert not scripts.training_bf16("auto", "cpu")
    with pytest.raises(InputError, match="bf16='maybe' is not a boolean"):
        scripts.training_bf16("maybe", "cpu")
    old = tmp_path / "old.pt"
    torch.save({"diffusion": {}, "optimizer": {}, "trainer": {}, "meta": {}}, old)
    objects = {"diffusion": 1, "ema": 2, "lr_scheduler": 3, "trainer": 4}
    with pytest.warns(UserWarning, match=r"holds no \['ema', 'lr_scheduler'\]"):
        assert scripts.saved_objects(str(old), objects) == {"diffusion": 1, "trainer": 4}
    assert scripts.saved_objects(None, objects) == objects


def test_bf16_diffusion_steps_at_the_default_shapes_stay_finite():
    """The diffusion stage's own inferer (AutocastInferer around DiffusionInferer) with bf16 forced, at the default
    profile's widths and latent, for two optimiser steps: finite loss and gradients. (At the tiny overlay's widths
    bf16 gave NaN gradients, so tiny.yaml trains in float32.)"""
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([COMMON, str(CONFIGS / "train_diffusion.yaml")])
    p.update({"bundle_root": str(BUNDLE), "device": "$torch.device('cpu')", "bf16": True, "batch_size": 2})
    net, inferer = p.get_parsed_content("network"), p.get_parsed_content("inferer")
    sched, shape = p.get_parsed_content("noise_scheduler"), p.get_parsed_content("latent_shape")
    assert inferer.enabled and p.get_parsed_content("use_bf16")
    opt = torch.optim.AdamW(net.parameters(), 5e-4)
    torch.manual_seed(0)
    for _ in range(2):
        z, noise = torch.randn(2, *shape), torch.randn(2, *shape)
        t, cond = torch.randint(0, 1000, (2,)), torch.rand(2, 1, 4)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(inferer(z, net, noise, t, condition=cond), sched.get_velocity(z, noise, t))
        loss.backward()
        assert torch.isfinite(loss) and all(
            torch.isfinite(q.grad).all() for q in net.parameters() if q.grad is not None
        )
        opt.step()


def test_latent_cache_is_read_back_only_for_the_same_encoding(tiny_phantoms, tmp_path, capsys):
    """A resumed diffusion run reads its latents from the run folder instead of encoding again, and encodes again
    when what the latents depend on changed (the autoencoder file, the mirrors) or the cache is damaged."""
    from label_ldm_helpers import make_tiny_weights

    ae_path, _ = make_tiny_weights(tiny_phantoms, tmp_path / "w")
    parser = common_parser(datalist=str(tiny_phantoms))
    ae, prof = parser.get_parsed_content("autoencoder_def"), parser.get_parsed_content("prof")
    items = scripts.load_datalist(str(tiny_phantoms), "training", ("pv",))
    cache = tmp_path / "run" / "latent_cache.pt"

    def encode(flips=True, weight=0.0):
        meta = scripts.encode_datalist(
            ae, ae_path, items, "cpu", prof, flips, log_every=1, cache_path=cache, lesion_weight=weight
        )
        return meta, capsys.readouterr().out

    first, out = encode()
    assert "encoded 1/" in out and cache.is_file()
    again, out = encode()
    assert "read 6 latents of 3 subjects" in out and "encoded 1/" not in out
    assert again.scale_factor == first.scale_factor
    for a, b in zip(first.items, again.items, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["cond"], b["cond"])
    assert torch.equal(first.train_conditions, again.train_conditions)
    # another setting: encoded anew (no mirrors: half the latents), and the cache now holds that encoding
    single, out = encode(flips=False)
    assert "encoded 1/" in out and len(single.items) == len(first.items) // 2
    weighted, out = encode(flips=False, weight=2.0)
    assert "encoded 1/" in out and all("weight" in item for item in weighted.items)
    _, out = encode(flips=False, weight=2.0)
    assert "read 3 latents" in out
    # other autoencoder weights in the same file: encoded anew
    state = torch.load(ae_path, map_location="cpu", weights_only=True)
    state["autoencoder"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["autoencoder"].items()}
    torch.save(state, ae_path)
    moved, out = encode(flips=False, weight=2.0)
    assert "encoded 1/" in out and not torch.equal(moved.items[0]["image"], weighted.items[0]["image"])
    # a damaged cache is encoded anew, not an error
    cache.write_bytes(b"not a torch file")
    _, out = encode()
    assert "encoded 1/" in out
