"""Training pieces MONAI does not have as such, built from MONAI/PyTorch/Ignite parts.

- `AutoencoderStep`: one Ignite iteration of the label autoencoder. MONAI's `AdversarialTrainer` expects a
  generator with a single output and no KL term, and has no adversarial warm-up, so the step that combines
  the reconstruction loss (MONAI DiceLoss/FocalLoss + L1), AutoencoderKL's KL term and a MONAI
  PatchDiscriminator/PatchAdversarialLoss term switched on after warm-up is written here.
- `encode_datalist` + `LatentMeta`: encodes the dataset once with the trained autoencoder, computes the latent
  scale factor (1/std) and the conditioning normalisation from data, and keeps these numbers in the diffusion
  checkpoint (an object with state_dict/load_state_dict, so Ignite's checkpointing stores and restores it).
- the CPU training recipe: `training_bf16` (bf16 autocast where the CPU runs it natively; MONAI's engines autocast
  CUDA only), `WarmupCosine` (the learning-rate factor for torch's LambdaLR, attached with MONAI's
  LrScheduleHandler), `EmaUpdate` (torch's AveragedModel updated every iteration: the weights sampling uses) and
  `saved_objects` (what a checkpoint being resumed holds, so checkpoints written before EMA and schedule resume).
- the lesion-weighted diffusion loss: `lesion_loss_weight` (the weight map, stored with each latent),
  `WeightedVPredictionPrepareBatch` (MONAI's v-prediction batch, the weight riding along in the target) and
  `WeightedMSELoss` (SupervisedTrainer hands a loss only prediction and target; torch has no weighted MSE).
- small Ignite handlers (TensorBoard image previews).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines.utils import VPredictionPrepareBatch

from brainspade.cli import parse_bool, parse_float, parse_int
from brainspade.distributed import is_rank0, rank_handlers
from brainspade.errors import InputError
from brainspade.io import atomic_write, load_nifti
from brainspade.labels import LESION_CODES
from brainspade.precision import bf16_pays
from brainspade.sharding import file_sha256

from .conditioning import normalise_volumes
from .data import pv_condition_ml
from .weights import LatentMeta, load_weights, unwrap


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of AutoencoderKL's latent to N(0, 1), summed over latent voxels, mean over the batch.

    MONAI ships no loss for this (its tutorials write it inline); it is one line of algebra.
    """
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


# AutoencoderKL's submodules on the decoding side: a decoder fine-tune trains these, the encoder stays as it is
DECODER_PARTS = ("post_quant_conv", "decoder")
TRAINABLE_PARTS = ("all", "decoder")


def trainable_parameters(autoencoder: torch.nn.Module, parts: str = "all") -> list[torch.nn.Parameter]:
    """The autoencoder parameters the optimiser updates: `all`, or `decoder` (post-quant conv + decoder; the encoder
    is frozen, requires_grad off). Why a decoder fine-tune: it leaves the latent space, and so a diffusion model
    trained on it, valid, while it changes how latents are read back into label maps (e.g. a volume bias)."""
    if parts not in TRAINABLE_PARTS:
        raise InputError(f"ae_trainable={parts!r} is not known; accepted: {', '.join(TRAINABLE_PARTS)}")
    net = unwrap(autoencoder)
    if parts == "all":
        return list(net.parameters())
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for name in DECODER_PARTS for p in getattr(net, name).parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


class AutoencoderStep:
    """Ignite `iteration_update` for SupervisedTrainer(network=autoencoder, optimizer=generator optimiser).

    Loss on the decoder's softmax partial-volume maps: `recon_loss(logits, target)` (MONAI DiceFocalLoss with
    softmax, class weights favouring lesions) + `l1_weight` * L1(softmax, target) + `kl_weight` * KL; after
    `adv_start` iterations also `adv_weight` * least-squares PatchGAN generator loss, with the discriminator
    trained in the same iteration.

    Precision: `bf16` runs both passes under bf16 autocast on the step's device (the CPU path; MONAI's `amp` is
    CUDA only), `channels_last` feeds channels-last 3D tensors; `amp` (CUDA without bf16) is fp16 autocast with a
    GradScaler, as SupervisedTrainer's own `amp` does. Losses are computed in float32 either way.
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
        bf16: bool = False,
        channels_last: bool = False,
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
        self.amp, self.bf16, self.channels_last = bool(amp), bool(bf16), bool(channels_last)
        self.scaler: torch.amp.GradScaler | None = None

    def _autocast(self, device: torch.device):
        if self.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)

    def _input(self, engine: Engine, batchdata: dict[str, Any], device: torch.device) -> torch.Tensor:
        x = torch.as_tensor(batchdata[self.image_key]).float().to(device, non_blocking=engine.non_blocking)
        if self.scaler is None and self.amp and not self.bf16 and device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        return self._layout(x)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d if self.channels_last else torch.contiguous_format)

    def __call__(self, engine: Engine, batchdata: dict[str, Any]) -> dict[str, Any]:
        device = torch.device(engine.state.device)
        x = self._input(engine, batchdata, device)
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
                logits_fake = disc(self._layout(probs))[-1].float()
                adv_g = self.adv_loss(logits_fake, target_is_real=True, for_discriminator=False)
                loss = loss + self.adv_weight * adv_g
        self._backward_step(loss, engine.optimizer)

        adv_d = torch.zeros((), device=device)
        if use_adv:
            self.discriminator.train()
            self.d_optimizer.zero_grad(set_to_none=True)
            with self._autocast(device):
                # fake and real in one forward pass (instance norm: per-sample, so the same as two passes);
                # DistributedDataParallel allows one forward per backward
                both = self.discriminator(self._layout(torch.cat([probs.detach(), x])))[-1].float()
                fake, real = both[: len(x)], both[len(x) :]
                adv_d = 0.5 * (
                    self.adv_loss(fake, target_is_real=False, for_discriminator=True)
                    + self.adv_loss(real, target_is_real=True, for_discriminator=True)
                )
            self._backward_step(adv_d.float(), self.d_optimizer)
        if self.scaler is not None:
            self.scaler.update()
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


def _load_training_pv(path: str, profile) -> np.ndarray:
    """One training PV map, refused with one clear line when its grid is not the profile's."""
    pv, _ = load_nifti(path, "partial-volume map")
    if tuple(pv.shape[1:]) != tuple(profile.shape):
        raise InputError(f"{path!r} has shape {pv.shape[1:]}; the {profile.name} profile needs {tuple(profile.shape)}")
    return pv


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
    lesion_weight: float = 0.0,
    lesion_weight_per_label: bool = False,
    lesion_weight_band: int = 0,
    cache_path: str | os.PathLike | None = None,
) -> LatentMeta:
    """Encode every training PV map (and its left-right mirror) to AutoencoderKL's latent mean.

    Returns a LatentMeta whose `items` are {'image': scaled latent, 'cond': (1, 4) normalised volumes}, with
    scale factor = 1 / std of all latents and conditioning maxima = the training maxima (mL). With
    `lesion_weight` > 0 each item also holds 'weight', its per-voxel loss weight (`lesion_loss_weight`).
    With `cache_path` the encoded latents are kept there and read back by a later run of the same encoding
    (`latent_cache_key`): a resumed run then starts in seconds, not the minutes the encoding takes on a CPU.
    """
    weigh = lesion_weigher(lesion_weight, lesion_weight_per_label, lesion_weight_band)
    load_weights(autoencoder, autoencoder_path, "autoencoder", device, "autoencoder weights")
    weighting = (lesion_weight, lesion_weight_per_label, lesion_weight_band)
    key = latent_cache_key(autoencoder_path, items, profile, flips, weighting) if cache_path else ""
    cached = _read_latent_cache(cache_path, key)
    if cached is not None:
        latents, conds, weights = cached
        print(f"read {len(latents)} latents of {len(items)} subjects from {str(cache_path)!r}", flush=True)
    else:
        latents, conds, weights = _encode_items(
            unwrap(autoencoder).to(device).eval(), items, device, profile, flips, weigh, log_every
        )
        _write_latent_cache(cache_path, key, latents, conds, weights)
    z = torch.stack(latents)
    scale = float(1.0 / z.std())
    cond = np.stack(conds)
    cond_max = cond.max(0)
    cond_max[cond_max <= 0] = 1.0  # a lesion type absent from training: keep the division defined
    meta = LatentMeta(
        scale, cond_max, cond[:: 2 if flips else 1], profile.name, list(z.shape[1:]), cond_transform=cond_transform
    )
    normalised = [
        torch.as_tensor(normalise_volumes(c, cond_max, meta.cond_transform), dtype=torch.float32) for c in cond
    ]
    meta.items = [{"image": zi * scale, "cond": ci[None]} for zi, ci in zip(z, normalised, strict=True)]
    for item, w in zip(meta.items, weights, strict=False):  # no weights without a lesion weight
        item["weight"] = w
    print(
        f"training latents: {len(items)} subjects -> {len(meta.items)} latents {tuple(z.shape[1:])}, "
        f"scale factor {scale:.4f}, conditioning maxima (mL) {np.round(cond_max, 2).tolist()}",
        flush=True,
    )
    return meta


def _encode_items(ae, items, device, profile, flips, weigh, log_every) -> tuple[list, list, list]:
    """The latent means, the volumes (mL) and the loss weights (when `weigh`) of every map and its mirror."""
    latents, conds, weights = [], [], []
    t0 = time.time()
    for n, item in enumerate(items):
        pv = _load_training_pv(item["pv"], profile)
        vols = pv_condition_ml(pv, profile.voxel_mm3)
        x = torch.from_numpy(pv)[None].to(device)
        views = [x, torch.flip(x, dims=(2,))] if flips else [x]  # axis 2 of (B,C,X,..) = left-right in RAS
        for v in views:
            z_mu, _ = ae.encode(v)
            latents.append(z_mu[0].float().cpu())
            conds.append(vols)
            if weigh is not None:
                weights.append(weigh(v[0].float().cpu(), z_mu.shape[2:]))
        if log_every and (n + 1) % log_every == 0:
            print(f"encoded {n + 1}/{len(items)} subjects ({time.time() - t0:.0f} s)", flush=True)
    return latents, conds, weights


def latent_cache_key(autoencoder_path, items: Sequence[Mapping], profile, flips: bool, weighting) -> str:
    """What the encoded latents depend on, as one digest: the autoencoder file's bytes, each map's path, size and
    modification time, the grid, the mirrors and the loss-weight settings. Any change re-encodes."""
    h = hashlib.sha256(file_sha256(autoencoder_path).encode())
    for item in items:
        st = os.stat(item["pv"])
        h.update(f"{os.path.abspath(item['pv'])}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(f"{profile.name}|{tuple(profile.shape)}|{bool(flips)}|{[str(w) for w in weighting]}".encode())
    return h.hexdigest()


def _read_latent_cache(path, key: str):
    """(latents, volumes, weights) from the cache at `path` when it was written for `key`, else None (a stale,
    unreadable or absent cache is simply encoded anew)."""
    if not path or not os.path.isfile(path):
        return None
    try:
        c = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: encode again
        return None
    if not isinstance(c, Mapping) or c.get("key") != key:
        return None
    conds = [np.asarray(v, dtype=np.float64) for v in c["conds"].numpy()]
    return list(c["latents"]), conds, list(c["weights"]) if c["weights"] is not None else []


def _write_latent_cache(path, key: str, latents, conds, weights) -> None:
    if not path or not is_rank0():
        return
    state = {
        "key": key,
        "latents": torch.stack(latents),
        "conds": torch.as_tensor(np.stack(conds), dtype=torch.float64),
        "weights": torch.stack(weights) if weights else None,
    }
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


MAX_LABEL_SHARE = 10.0  # per-label weighting: no lesion label's voxels weigh more than 10x the uniform weight
MAX_BAND = 4  # latent voxels around a lesion that share its weight (`band`); 4 already spans a tumour's surroundings


def lesion_weigher(lesion_weight, per_label, band) -> Callable[[torch.Tensor, Sequence[int]], torch.Tensor] | None:
    """`lesion_loss_weight` with the options checked (one error line each), or None for the plain MSE (weight 0)."""
    weight = parse_float(lesion_weight, "lesion_loss_weight", 0.0)
    per_label = parse_bool(per_label, "lesion_loss_per_label")
    band = parse_int(band, "lesion_loss_band", 0, MAX_BAND)
    if weight == 0:
        return None
    return lambda pv, latent_shape: lesion_loss_weight(pv, latent_shape, weight, per_label, band)


def lesion_loss_weight(
    pv: torch.Tensor, latent_shape, lesion_weight: float, per_label: bool = False, band: int = 0
) -> torch.Tensor:
    """(1, *latent_shape) loss weight of one PV map: 1, plus `lesion_weight` on every latent voxel whose footprint
    holds any lesion (max-pooled lesion fraction, so a one-voxel lesion counts fully).

    Why: lesions cover about 1 % of the latent voxels, so a plain MSE spends almost none of its gradient on whether a
    requested lesion is drawn and how large; the network alone missed about one tumour request in five.

    `per_label`: the same total extra weight, shared equally between the lesion labels present (each label's voxels
    get `lesion_weight` x mean footprint / its own footprint, at most `MAX_LABEL_SHARE` x). Why: with one uniform
    weight oedema, the largest tumour part, took most of it and was drawn 2-3x too large (docs, lesion weights 2
    and 5), while the small tumour core, the part most often missed, gained least.

    `band`: each lesion's footprint grown by this many latent voxels (a max filter) before weighting. Why: a weight
    only on the true lesion prices a lesion drawn too small above one drawn too large (its extra voxels weigh 1);
    every weighted run drew lesions 2-3x too large. A band prices both errors alike."""
    size = tuple(int(s) for s in latent_shape)
    lesions = pv[list(LESION_CODES)] if per_label else pv[list(LESION_CODES)].sum(0, keepdim=True)
    pooled = F.adaptive_max_pool3d(lesions[None], size).clamp(0.0, 1.0)  # (1, lesions or 1, *size)
    if band:
        pooled = F.max_pool3d(pooled, 2 * band + 1, stride=1, padding=band)
    pooled = pooled[0]
    if not per_label:
        return 1.0 + float(lesion_weight) * pooled
    footprint = pooled.flatten(1).sum(1)
    present = footprint > 0
    if not bool(present.any()):
        return torch.ones(1, *size)
    share = torch.zeros_like(footprint)
    share[present] = (footprint[present].mean() / footprint[present]).clamp(max=MAX_LABEL_SHARE)
    return 1.0 + float(lesion_weight) * (pooled * share[:, None, None, None]).sum(0, keepdim=True)


class WeightedVPredictionPrepareBatch(VPredictionPrepareBatch):
    """MONAI's v-prediction batch whose target carries the batch's loss weight (`weight_key`, when the batch has
    it) as one extra last channel: SupervisedTrainer hands the loss only (prediction, target), and
    `WeightedMSELoss` splits the weight off again. Without the key it is MONAI's class unchanged."""

    def __init__(self, scheduler, num_train_timesteps: int, condition_name: str | None = None, weight_key="weight"):
        super().__init__(scheduler=scheduler, num_train_timesteps=num_train_timesteps, condition_name=condition_name)
        self.weight_key = weight_key

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        images, target, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if isinstance(batchdata, Mapping) and self.weight_key in batchdata:
            weight = batchdata[self.weight_key].to(device=target.device, dtype=target.dtype)
            target = torch.cat([target, weight], dim=1)
        return images, target, args, infer_kwargs


class WeightedMSELoss(torch.nn.Module):
    """MSE with a per-voxel weight carried as the target's extra last channel (`WeightedVPredictionPrepareBatch`),
    normalised by the mean weight so the loss keeps the plain MSE's scale; a target with the prediction's channels
    gives the plain MSE. torch/MONAI have no weighted MSE loss."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] == prediction.shape[1]:
            return F.mse_loss(prediction.float(), target.float())
        weight, target = target[:, -1:].float(), target[:, :-1].float()
        return (weight * (prediction.float() - target).pow(2)).mean() / weight.mean()


class DiffusionPreview:
    """`sample_fn` for ImageLogHandler: one guided DDIM sample from the current diffusion weights (`network`, e.g. the
    EMA copy that sampling uses; the trainer's network when None)."""

    def __init__(
        self,
        autoencoder,
        autoencoder_path,
        scheduler,
        meta: LatentMeta,
        steps: int = 10,
        guidance_scale: float = 3.0,
        cond_fill: float = -1.0,
        network: torch.nn.Module | None = None,
    ) -> None:
        self.network = network
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
        net = unwrap(self.network if self.network is not None else engine.network)
        was_training = net.training
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
        net.train(was_training)
        pv = torch.softmax(out[0].float(), 0).cpu()
        return pv, lesion_volumes_ml(pv.numpy(), get_profile(self.meta.profile).voxel_mm3)


def training_bf16(setting: Any, device: str | torch.device) -> bool:
    """Whether training runs under bf16 autocast. `auto` (or None): on a CPU that runs bf16 natively (AVX-512 BF16
    or AMX; `brainspade.precision.bf16_pays`), where it pays (benchmarks/label_ldm_precision.py); not on CUDA,
    where MONAI's fp16 AMP with its GradScaler (`amp`) stays, nor on CPUs that emulate bf16. true/false: forced."""
    dev = torch.device(device)
    if setting is None or str(setting).strip().lower() == "auto":
        return dev.type == "cpu" and bf16_pays(dev)
    return parse_bool(setting, "bf16")


class WarmupCosine:
    """Learning-rate factor per iteration for `torch.optim.lr_scheduler.LambdaLR`: linear warm-up from
    `start_factor` over `warmup_iters`, then cosine decay to `min_factor` at `total_iters` (held there after).
    `schedule='constant'` gives 1 throughout (the recipe before the schedule).

    Why a LambdaLR factor and not SequentialLR(LinearLR, CosineAnnealingLR): the factor is recomputed from the
    configured totals on resume (LambdaLR saves only its step count), so raising `max_epochs` to train longer
    stretches the cosine instead of restarting it."""

    SCHEDULES = ("cosine", "constant")

    def __init__(
        self,
        total_iters: int,
        warmup_iters: int = 0,
        min_factor: float = 0.05,
        start_factor: float = 0.01,
        schedule: str = "cosine",
    ) -> None:
        self.schedule = str(schedule).strip().lower()
        if self.schedule not in self.SCHEDULES:
            raise InputError(f"lr_schedule={schedule!r} is not known; accepted: {', '.join(self.SCHEDULES)}")
        self.total, self.warmup = max(1, int(total_iters)), max(0, int(warmup_iters))
        self.min_factor, self.start_factor = float(min_factor), float(start_factor)

    def __call__(self, step: int) -> float:
        if self.schedule == "constant":
            return 1.0
        if step < self.warmup:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EmaUpdate:
    """Ignite handler: after every iteration, `ema` (a `torch.optim.swa_utils.AveragedModel` built with
    `get_ema_multi_avg_fn(decay)`) takes a step towards `network`'s weights. An AveragedModel that has averaged
    nothing yet copies the network at its first update, so a run resumed from a checkpoint without EMA weights
    starts its average from the resumed weights, not from the initialisation."""

    def __init__(self, ema: torch.nn.Module, network: torch.nn.Module) -> None:
        self.ema, self.network = ema, network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.ema.update_parameters(unwrap(self.network))


def saved_objects(checkpoint: str | None, objects: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `objects` (CheckpointLoader's `load_dict`) that `checkpoint` holds. Checkpoints written before
    the EMA weights and the learning-rate schedule lack those keys; they resume with a warning (the EMA starts from
    the resumed weights, the learning-rate schedule starts over, warm-up included)."""
    if checkpoint is None:
        return dict(objects)
    keys = set(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True))
    missing = [k for k in objects if k not in keys]
    if missing:
        warnings.warn(f"checkpoint {checkpoint!r} holds no {missing}: resuming without them", stacklevel=1)
    return {k: v for k, v in objects.items() if k in keys}
