"""label_ldm multi-GPU configs under torchrun: 2 CPU processes with gloo (DDP, DistributedSampler, rank-0 output)."""

from __future__ import annotations

import pytest
import torch
from cli_harness import run_cmd, torchrun_cmd
from label_ldm_helpers import CONFIGS, ONE_THREAD_ENV, TINY_CONFIG, make_tiny_weights, one_thread  # noqa: F401


def _torchrun(configs: list[str], **overrides) -> list[str]:
    """torchrun over the label_ldm configs with the tiny overlay layered last."""
    return torchrun_cmd([*(CONFIGS / c for c in configs), TINY_CONFIG], **overrides)


def _train(stage: str, datalist, cwd, **overrides):
    """A short tiny training of `stage` (2 iterations, every log and checkpoint interval hit) in two torchrun
    processes, from common.yaml, train_<stage>.yaml and multi_gpu_train_<stage>.yaml."""
    configs = ["common.yaml", f"train_{stage}.yaml", f"multi_gpu_train_{stage}.yaml"]
    short = dict(datalist=datalist, epoch_length=2, save_interval=2, max_epochs=1, image_log_interval=1)
    return run_cmd(_torchrun(configs, **short, **overrides), cwd=cwd, env=ONE_THREAD_ENV)


def _log_writers(run_dir) -> int:
    """How many processes wrote TensorBoard logs (the event file names end in <host>.<pid>.<n>)."""
    return len({f.name.split(".")[-2] for f in run_dir.glob("events.out.tfevents*")})


def test_torchrun_two_processes_train_autoencoder(tiny_phantoms, tmp_path):
    ae_pt = tmp_path / "autoencoder.pt"
    res = _train("autoencoder", tiny_phantoms, tmp_path, run_dir=tmp_path / "ae", export_path=ae_pt, adv_start=1)
    assert res.returncode == 0, res.stderr[-4000:]
    ckpt = torch.load(tmp_path / "ae" / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2
    # rank 0 alone writes: one TensorBoard writer, its checkpoints, one export; its weights are the synchronised ones
    assert _log_writers(tmp_path / "ae") == 1
    assert sorted(p.name for p in (tmp_path / "ae" / "checkpoints").iterdir()) == [
        "checkpoint_iteration=2.pt",
        "final.pt",
    ]
    exported = torch.load(ae_pt, map_location="cpu", weights_only=True)["autoencoder"]
    assert all(torch.equal(exported[k], v) for k, v in ckpt["autoencoder"].items())
    assert not any(k.startswith("module.") for k in exported)
    assert res.stdout.count("exported autoencoder weights") == 1


@pytest.mark.slow  # ~40 s of CPU on a loaded 2-core machine: three more processes importing torch + MONAI
def test_torchrun_two_processes_train_diffusion(tiny_phantoms, tmp_path):
    ae_pt, _ = make_tiny_weights(tiny_phantoms, tmp_path / "w")
    dm_pt = tmp_path / "diffusion.pt"
    dm = dict(run_dir=tmp_path / "dm", export_path=dm_pt, autoencoder_path=ae_pt, batch_size=1, preview_steps=1)
    res = _train("diffusion", tiny_phantoms, tmp_path, **dm)
    assert res.returncode == 0, res.stderr[-4000:]
    ckpt = torch.load(tmp_path / "dm" / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2
    d = torch.load(dm_pt, map_location="cpu", weights_only=True)
    assert d["scale_factor"] > 0 and d["profile"] == "tiny" and not any(k.startswith("module.") for k in d["diffusion"])
    assert all(torch.equal(d["diffusion"][k], v) for k, v in ckpt["diffusion"].items())
    assert _log_writers(tmp_path / "dm") == 1 and res.stdout.count("exported diffusion weights") == 1
