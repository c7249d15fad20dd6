"""label_ldm training configs: a few tiny steps of both stages through monai.bundle, then resume."""

from __future__ import annotations

import torch
from label_ldm_helpers import CONFIGS, TINY, one_thread  # noqa: F401  (autouse fixture)
from monai.bundle import run

COMMON = str(CONFIGS / "common.yaml")


def _iteration(ckpt: str) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["trainer"]["iteration"])


def test_both_stages_train_resume_and_export(tiny_phantoms, tmp_path):
    ae_run, dm_run = tmp_path / "ae", tmp_path / "dm"
    ae_pt, dm_pt = str(tmp_path / "autoencoder.pt"), str(tmp_path / "diffusion.pt")
    common = dict(profile="tiny", datalist=str(tiny_phantoms), epoch_length=2, save_interval=2, **TINY)
    ae_cfg = [COMMON, str(CONFIGS / "train_autoencoder.yaml")]
    run(
        config_file=ae_cfg,
        run_dir=str(ae_run),
        export_path=ae_pt,
        max_epochs=1,
        adv_start=1,
        image_log_interval=2,
        **common,
    )
    assert _iteration(str(ae_run / "checkpoints" / "final.pt")) == 2
    # resume: the second run continues from the checkpoint (iterations 3-4), not from scratch
    run(config_file=ae_cfg, run_dir=str(ae_run), export_path=ae_pt, max_epochs=2, adv_start=1, **common)
    assert _iteration(str(ae_run / "checkpoints" / "final.pt")) == 4
    exported = torch.load(ae_pt, map_location="cpu", weights_only=True)
    assert "autoencoder" in exported and exported["profile"] == "tiny"
    assert list(ae_run.glob("events.out.tfevents*")), "no TensorBoard log"

    dm_cfg = [COMMON, str(CONFIGS / "train_diffusion.yaml")]
    run(
        config_file=dm_cfg,
        run_dir=str(dm_run),
        export_path=dm_pt,
        autoencoder_path=ae_pt,
        max_epochs=1,
        batch_size=2,
        image_log_interval=2,
        preview_steps=2,
        **common,
    )
    assert _iteration(str(dm_run / "checkpoints" / "final.pt")) == 2
    run(
        config_file=dm_cfg,
        run_dir=str(dm_run),
        export_path=dm_pt,
        autoencoder_path=ae_pt,
        max_epochs=2,
        batch_size=2,
        **common,
    )
    assert _iteration(str(dm_run / "checkpoints" / "final.pt")) == 4
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
