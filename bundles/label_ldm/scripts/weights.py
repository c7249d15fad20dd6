"""The label_ldm weight files: what models/model.pt (diffusion) and models/model_autoencoder.pt hold, how they
are written at the end of training and read by the sampler, the evaluation and resumed training. Sampling needs
only this module, never the training code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from brainspade.distributed import is_rank0
from brainspade.errors import InputError
from brainspade.labels import CONDITION_KEYS
from brainspade.weights import load_into, read_weights

WEIGHTS_ACCEPTED = "the bundle's models/ files or a checkpoint written by this bundle's training configs"


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if hasattr(net, "module") else net


def ema_state(ckpt: dict) -> dict | None:
    """The EMA network weights in a diffusion training checkpoint (`torch.optim.swa_utils.AveragedModel`'s state:
    the network's under `module.`, plus its `n_averaged` counter), or None when it holds none or never averaged."""
    ema = ckpt.get("ema")
    if not isinstance(ema, dict) or int(torch.as_tensor(ema.get("n_averaged", 0))) == 0:
        return None
    return {k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")}


def load_weights(net: torch.nn.Module, path: str | os.PathLike, key: str, device="cpu", what: str = "weights") -> dict:
    """Load `net` from an exported weight dict ({key: state_dict, ...}) or a training checkpoint (for the diffusion
    network, a checkpoint's EMA weights when it has them: the weights sampling uses)."""
    what = f"{what} file"
    ckpt = read_weights(path, what, WEIGHTS_ACCEPTED, map_location=device)
    state = (ema_state(ckpt) if key == "diffusion" else None) or ckpt.get(key, ckpt)
    if not isinstance(state, dict):
        raise InputError(f"{what} {str(path)!r} holds no {key!r} weights; accepted: {WEIGHTS_ACCEPTED}")
    load_into(net, state, path, what, "weights trained with the same profile/channel settings")
    return dict(ckpt)


class LatentMeta:
    """Dataset statistics the diffusion model is tied to; stored in (and restored from) its checkpoint."""

    def __init__(
        self,
        scale_factor: float = 1.0,
        cond_max=None,
        train_conditions=None,
        profile: str = "",
        latent_shape=(),
        items=None,
        cond_transform: str = "log1p",
    ) -> None:
        self.scale_factor = float(scale_factor)
        self.cond_transform = str(cond_transform)
        self.cond_max = torch.as_tensor(
            cond_max if cond_max is not None else [1.0] * len(CONDITION_KEYS), dtype=torch.float64
        )
        self.train_conditions = torch.as_tensor(
            train_conditions if train_conditions is not None else np.zeros((0, len(CONDITION_KEYS))),
            dtype=torch.float64,
        )
        self.profile = str(profile)
        self.latent_shape = [int(s) for s in latent_shape]
        self.items = items or []

    def state_dict(self) -> dict:
        return {
            "scale_factor": self.scale_factor,
            "cond_max": self.cond_max,
            "train_conditions": self.train_conditions,
            "profile": self.profile,
            "latent_shape": torch.tensor(self.latent_shape),
            "condition_keys": ",".join(CONDITION_KEYS),
            "cond_transform": self.cond_transform,
        }

    def load_state_dict(self, state: dict) -> None:
        self.scale_factor = float(state["scale_factor"])
        self.cond_max = torch.as_tensor(state["cond_max"], dtype=torch.float64)
        self.train_conditions = torch.as_tensor(state["train_conditions"], dtype=torch.float64)
        self.profile = str(state.get("profile", ""))
        self.cond_transform = str(state.get("cond_transform", "linear"))  # files from before the field: linear
        self.latent_shape = [int(s) for s in torch.as_tensor(state.get("latent_shape", []))]


def export_autoencoder(network: torch.nn.Module, path: str, version: str = "", profile: str = "") -> str | None:
    """Write the shipped autoencoder file: a plain dict of tensors and strings (weights_only loadable)."""
    if not is_rank0():
        return None
    state = {k: v.detach().cpu().clone() for k, v in unwrap(network).state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.part"
    torch.save({"autoencoder": state, "version": str(version), "profile": str(profile)}, tmp)
    os.replace(tmp, path)
    print(f"exported autoencoder weights to {path}", flush=True)
    return path


def export_diffusion(
    network: torch.nn.Module,
    meta: LatentMeta,
    path: str,
    version: str = "",
    prediction_type: str = "",
    ema: torch.nn.Module | None = None,
) -> str | None:
    """Write the shipped diffusion file: UNet weights + scale factor + conditioning normalisation/ranges.

    With `ema` (the AveragedModel of training), its averaged weights are the ones written under `diffusion`, the
    key sampling reads (the same layout as files without EMA; `weights` says which)."""
    if not is_rank0():
        return None
    averaged = ema is not None and int(getattr(ema, "n_averaged", 0)) > 0
    source = unwrap(ema.module if averaged else network)
    state = {k: v.detach().cpu().clone() for k, v in source.state_dict().items()}
    out = {"diffusion": state, **meta.state_dict(), "version": str(version), "prediction_type": str(prediction_type)}
    out["weights"] = "ema" if averaged else "network"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.part"
    torch.save(out, tmp)
    os.replace(tmp, path)
    print(f"exported diffusion weights to {path}", flush=True)
    return path


def load_initial_weights(net: torch.nn.Module, path: str | os.PathLike | None, key: str, resume_checkpoint) -> bool:
    """Fine-tuning: load `net` (the `key` network) from `path` before a fresh run; nothing when no path is given or a
    checkpoint is resumed (the checkpoint holds the run's own weights). True when weights were loaded."""
    if not path or resume_checkpoint is not None:
        return False
    device = next(net.parameters()).device
    load_weights(net, path, key, device, f"initial {key} weights")
    return True
