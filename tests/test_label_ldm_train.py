"""label_ldm training configs: a few tiny steps of both stages through monai.bundle, then resume."""

from __future__ import annotations

import torch
from label_ldm_helpers import CONFIGS, TINY, TINY_CONFIG, one_thread  # noqa: F401  (autouse fixture)
from monai.bundle import run

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


def test_both_stages_train_resume_and_export(tiny_phantoms, tmp_path):
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
    assert _stage("train_diffusion.yaml", tiny_phantoms, dm_run, dm_pt, 2, **dm) == 4
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
