"""Training pieces MONAI does not have as such, built from MONAI/PyTorch/Ignite parts.

- `AutoencoderStep`: one Ignite iteration of the label autoencoder. MONAI's `AdversarialTrainer` expects a
  generator with a single output and no KL term, and has no adversarial warm-up, so the step that combines
  the reconstruction loss (MONAI DiceLoss/FocalLoss + L1), AutoencoderKL's KL term and a MONAI
  PatchDiscriminator/PatchAdversarialLoss term switched on after warm-up is written here.
- `encode_datalist` + `LatentMeta`: encodes the dataset once with the trained autoencoder, computes the latent
  scale factor (1/std) and the conditioning normalisation from data, and keeps these numbers in the diffusion
  checkpoint (an object with state_dict/load_state_dict, so Ignite's checkpointing stores and restores it).
- small Ignite handlers (time limit, TensorBoard image previews) and exporters of plain weight dicts.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from brainspade.distributed import is_rank0, rank_handlers
from brainspade.errors import InputError
from brainspade.io import load_nifti

from .conditioning import normalise_volumes
from .data import pv_condition_ml
from .weights import LatentMeta, load_weights, unwrap


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of AutoencoderKL's latent to N(0, 1), summed over latent voxels, mean over the batch.

    MONAI ships no loss for this (its tutorials write it inline); it is one line of algebra.
    """
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


class AutoencoderStep:
    """Ignite `iteration_update` for SupervisedTrainer(network=autoencoder, optimizer=generator optimiser).

    Loss on the decoder's softmax partial-volume maps: `recon_loss(logits, target)` (MONAI DiceFocalLoss with
    softmax, class weights favouring lesions) + `l1_weight` * L1(softmax, target) + `kl_weight` * KL; after
    `adv_start` iterations also `adv_weight` * least-squares PatchGAN generator loss, with the discriminator
    trained in the same iteration.
    """

    def __init__(
        self,
        discriminator: torch.nn.Module,
        d_optimizer: torch.optim.Optimizer,
        recon_loss,
        adv_loss,
        kl_weight: float = 1e-7,
        l1_weight: float = 1.0,
        adv_weight: float = 0.01,
        adv_start: int = 300,
        image_key: str = "pv",
        amp: bool = False,
    ) -> None:
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.recon_loss = recon_loss
        self.adv_loss = adv_loss
        self.kl_weight = float(kl_weight)
        self.l1_weight = float(l1_weight)
        self.adv_weight = float(adv_weight)
        self.adv_start = int(adv_start)
        self.image_key = image_key
        self.amp = bool(amp)

    def _autocast(self, device: torch.device):
        return torch.autocast("cuda", enabled=self.amp and device.type == "cuda")

    def __call__(self, engine: Engine, batchdata: dict[str, Any]) -> dict[str, Any]:
        device = torch.device(engine.state.device)
        x = torch.as_tensor(batchdata[self.image_key]).float().to(device, non_blocking=engine.non_blocking)
        ae = engine.network
        ae.train()
        engine.optimizer.zero_grad(set_to_none=True)
        use_adv = self.adv_weight > 0 and engine.state.iteration > self.adv_start
        with self._autocast(device):
            logits, z_mu, z_sigma = ae(x)
            logits = logits.float()
            probs = torch.softmax(logits, 1)
            recon = self.recon_loss(logits, x) + self.l1_weight * F.l1_loss(probs, x)
            kl = kl_loss(z_mu.float(), z_sigma.float())
            loss = recon + self.kl_weight * kl
            adv_g = torch.zeros((), device=device)
            if use_adv:
                # generator pass through the bare discriminator (outside DDP: its gradients here are discarded,
                # so there is nothing to synchronise); eval mode: no discriminator statistics updated
                disc = unwrap(self.discriminator)
                disc.eval()
                logits_fake = disc(probs.contiguous())[-1]
                adv_g = self.adv_loss(logits_fake, target_is_real=True, for_discriminator=False)
                loss = loss + self.adv_weight * adv_g
        loss.backward()
        engine.optimizer.step()

        adv_d = torch.zeros((), device=device)
        if use_adv:
            self.discriminator.train()
            self.d_optimizer.zero_grad(set_to_none=True)
            with self._autocast(device):
                # fake and real in one forward pass (instance norm: per-sample, so the same as two passes);
                # DistributedDataParallel allows one forward per backward
                both = self.discriminator(torch.cat([probs.detach(), x]).contiguous())[-1]
                fake, real = both[: len(x)], both[len(x) :]
                adv_d = 0.5 * (
                    self.adv_loss(fake, target_is_real=False, for_discriminator=True)
                    + self.adv_loss(real, target_is_real=True, for_discriminator=True)
                )
            adv_d.backward()
            self.d_optimizer.step()
        return {
            "image": x.detach(),
            "pred": probs.detach(),
            "loss": loss.detach().item(),
            "recon": recon.detach().item(),
            "kl": kl.detach().item(),
            "adv_g": adv_g.detach().item(),
            "adv_d": adv_d.detach().item(),
        }


def loss_terms(output: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a training step's output (for StatsHandler / TensorBoardStatsHandler)."""
    return {k: float(v) for k, v in output.items() if isinstance(v, (int, float))}


def _argmax_slice(pv: torch.Tensor) -> np.ndarray:
    """Mid-axial slice of a (10, X, Y, Z) PV map as a [0,1] image of label codes."""
    lab = pv.argmax(0)
    sl = lab[:, :, lab.shape[2] // 2].float() / (pv.shape[0] - 1)
    return np.rot90(sl.cpu().numpy()).copy()


class ImageLogHandler:
    """Every `interval` iterations write label previews to TensorBoard.

    Without `sample_fn`: mid-axial argmax of the step output's 'image' and 'pred' (autoencoder training).
    With `sample_fn(engine) -> (pv, volumes_ml)`: a validation sample from the current diffusion weights.
    """

    def __init__(self, log_dir: str, interval: int = 200, sample_fn=None) -> None:
        self.log_dir = str(log_dir)
        self.interval = max(1, int(interval))
        self.sample_fn = sample_fn
        self.writer = None

    def attach(self, engine: Engine) -> None:
        if is_rank0():
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is None:
            self.writer = SummaryWriter(log_dir=self.log_dir)
        step = engine.state.iteration
        if self.sample_fn is None:
            out = engine.state.output
            for name in ("image", "pred"):
                self.writer.add_image(f"label/{name}", _argmax_slice(out[name][0]), step, dataformats="HW")
        else:
            pv, vols = self.sample_fn(engine)
            self.writer.add_image("label/sample", _argmax_slice(pv), step, dataformats="HW")
            for k, v in vols.items():
                self.writer.add_scalar(f"sample_ml/{k}", v, step)
        self.writer.flush()


def attach_handlers(trainer: Engine, handlers: list) -> None:
    """Attach the training handlers; under torchrun rank 0 alone writes checkpoints and logs (`rank_handlers`;
    the previews are disabled off rank 0 in the configs)."""
    for h in rank_handlers(handlers):
        h.attach(trainer)


@torch.no_grad()
def encode_datalist(
    autoencoder: torch.nn.Module,
    autoencoder_path: str,
    items: list[dict],
    device,
    profile,
    flips: bool = True,
    cond_fill: float = -1.0,
    log_every: int = 20,
    cond_transform: str = "log1p",
) -> LatentMeta:
    """Encode every training PV map (and its left-right mirror) to AutoencoderKL's latent mean.

    Returns a LatentMeta whose `items` are {'image': scaled latent, 'cond': (1, 4) normalised volumes}, with
    scale factor = 1 / std of all latents and conditioning maxima = the training maxima (mL).
    """
    load_weights(autoencoder, autoencoder_path, "autoencoder", device, "autoencoder weights")
    ae = unwrap(autoencoder).to(device).eval()
    latents, conds = [], []
    t0 = time.time()
    for n, item in enumerate(items):
        pv, _ = load_nifti(item["pv"], "partial-volume map")
        if tuple(pv.shape[1:]) != tuple(profile.shape):
            raise InputError(
                f"{item['pv']!r} has shape {pv.shape[1:]}; the {profile.name} profile needs " f"{tuple(profile.shape)}"
            )
        vols = pv_condition_ml(pv, profile.voxel_mm3)
        x = torch.from_numpy(pv)[None].to(device)
        views = [x, torch.flip(x, dims=(2,))] if flips else [x]  # axis 2 of (B,C,X,..) = left-right in RAS
        for v in views:
            z_mu, _ = ae.encode(v)
            latents.append(z_mu[0].float().cpu())
            conds.append(vols)
        if log_every and (n + 1) % log_every == 0:
            print(f"encoded {n + 1}/{len(items)} subjects ({time.time() - t0:.0f} s)", flush=True)
    z = torch.stack(latents)
    scale = float(1.0 / z.std())
    cond = np.stack(conds)
    cond_max = cond.max(0)
    cond_max[cond_max <= 0] = 1.0  # a lesion type absent from training: keep the division defined
    meta = LatentMeta(
        scale, cond_max, cond[:: 2 if flips else 1], profile.name, list(z.shape[1:]), cond_transform=cond_transform
    )
    meta.items = [
        {
            "image": zi * scale,
            "cond": torch.as_tensor(normalise_volumes(c, cond_max, meta.cond_transform), dtype=torch.float32)[None],
        }
        for zi, c in zip(z, cond, strict=True)
    ]
    print(
        f"encoded {len(items)} subjects -> {len(meta.items)} latents {tuple(z.shape[1:])}, "
        f"scale factor {scale:.4f}, conditioning maxima (mL) {np.round(cond_max, 2).tolist()}",
        flush=True,
    )
    return meta


class DiffusionPreview:
    """`sample_fn` for ImageLogHandler: one guided DDIM sample from the current diffusion weights."""

    def __init__(
        self,
        autoencoder,
        autoencoder_path,
        scheduler,
        meta: LatentMeta,
        steps: int = 10,
        guidance_scale: float = 3.0,
        cond_fill: float = -1.0,
    ) -> None:
        self.autoencoder, self.autoencoder_path = autoencoder, autoencoder_path
        self.scheduler, self.meta, self.steps = scheduler, meta, int(steps)
        self.guidance_scale, self.cond_fill = float(guidance_scale), float(cond_fill)
        self.loaded = False

    @torch.no_grad()
    def __call__(self, engine: Engine):
        from monai.inferers import LatentDiffusionInferer

        from brainspade.labels import lesion_volumes_ml
        from brainspade.profiles import get_profile

        device = torch.device(engine.state.device)
        if not self.loaded:
            load_weights(self.autoencoder, self.autoencoder_path, "autoencoder", device)
            self.loaded = True
        net = unwrap(engine.network)
        net.eval()
        self.scheduler.set_timesteps(self.steps)
        inferer = LatentDiffusionInferer(self.scheduler, scale_factor=self.meta.scale_factor)
        item = self.meta.items[engine.state.iteration % max(1, len(self.meta.items))]
        g = torch.Generator().manual_seed(0)
        noise = torch.randn((1, *self.meta.latent_shape), generator=g).to(device)
        out = inferer.sample(
            noise,
            self.autoencoder.to(device).eval(),
            net,
            self.scheduler,
            conditioning=item["cond"][None].to(device),
            cfg=self.guidance_scale,
            cfg_fill_value=self.cond_fill,
            verbose=False,
        )
        net.train()
        pv = torch.softmax(out[0].float(), 0).cpu()
        return pv, lesion_volumes_ml(pv.numpy(), get_profile(self.meta.profile).voxel_mm3)
