"""One SPADE-GAN training iteration for a MONAI `Trainer` (`iteration_update=`), and resume helpers.

MONAI's `GanTrainer` trains an unconditional generator from a latent vector; SPADE needs the label map
and contrast as conditions, the VAE style encoder, feature matching and a conditional discriminator,
so the iteration is written here and plugged into `monai.engines.Trainer`, which keeps MONAI's
handlers (checkpointing, TensorBoard, stats, resume) and AMP flag.

Losses (weights from the config): generator = adv (PatchAdversarialLoss) + fm * feature matching
(L1 between discriminator features of real and fake) + rec * L1 inside the brain + kl * KL(style code).
No perceptual term: the reference's comes from downloaded MedicalNet weights, which the project does
not use; the discriminator's feature matching plays that role.

Patch training: the style encoder sees the whole image (its code is the volume's appearance), while the decoder,
the reconstruction and the discriminator run on a random patch on the decoder's first grid (`patch_window`), which
is where the time goes. bf16 autocast (CPU with AVX-512 BF16, or CUDA) needs no loss scaling; fp16 AMP (CUDA
without bf16) keeps its GradScaler. An EMA copy of the generator (torch's `AveragedModel`) is updated after each
generator step; it is the one exported for sampling.

Paired styles (`paired_style_prob`): with that chance an iteration renders one random scanner of the phantom renderer
on its own label map (the target) and on the previous iteration's map (the style image the encoder reads). The
encoder then only helps the reconstruction by coding the scanner, not the anatomy: what `--style_image` needs when the
reference is another brain. Fixed renderings on disk cannot give this (one scanner per image, never shared).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from brainspade.labels import LESION_CODES

from .networks import patch_window


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel, so helper methods (condition) are reachable."""
    return getattr(net, "module", net)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, var) || N(0, 1)) summed over the code, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


def feature_matching(fake_feats: list[list[torch.Tensor]], real_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between the discriminators' intermediate features for fake and (detached) real inputs."""
    terms = [
        torch.nn.functional.l1_loss(f, r.detach())
        for fd, rd in zip(fake_feats, real_feats, strict=True)
        for f, r in zip(fd, rd, strict=True)
    ]
    return torch.stack(terms).mean()


def masked_l1(
    fake: torch.Tensor, real: torch.Tensor, pv: torch.Tensor, lesion_weight: float = 1.0, lesion_share: float = 0.0
) -> torch.Tensor:
    """L1 weighted by the brain fraction (1 - background partial volume), lesion fractions `lesion_weight` times:
    lesions are a few percent of the brain, so an unweighted mean lets their intensities lag (measured: FLAIR WMH
    and the T1ce rim were the worst tissue errors, 1.9 SD).

    `lesion_share` > 0: each lesion label present in a sample also carries at least this share of that sample's
    brain weight, whatever its size. A fixed factor leaves a 2 mL WMH load at a tenth of a 20 mL one's weight, and
    small lesions were the ones not drawn (0.2.0: FLAIR WMH of 2-6 mL at 0-0.7 SD above WM where the phantom has
    1.3-1.6; 10-50 mL ones within 0.1 SD). The factor is capped at 1000 so a few stray fractional voxels stay bounded.
    """
    brain = 1.0 - pv[:, :1]
    lesions = pv[:, list(LESION_CODES)]
    factor = pv.new_full((pv.shape[0], lesions.shape[1], *([1] * (pv.ndim - 2))), float(lesion_weight) - 1.0)
    if lesion_share > 0:
        dims = tuple(range(2, pv.ndim))
        brain_sum, lesion_sum = brain.sum(dims, keepdim=True), lesions.sum(dims, keepdim=True)
        balanced = float(lesion_share) * brain_sum / lesion_sum.clamp_min(1e-6) - 1.0
        factor = torch.maximum(factor, balanced.clamp(max=1000.0) * (lesion_sum > 0.5))
    weight = brain + (factor * lesions).sum(1, keepdim=True)
    return ((fake - real).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def contrast_sampler(pairs: list[dict], contrast_weights: dict | None = None, seed: int = 0):
    """A torch `WeightedRandomSampler` over the (subject, contrast) pairs drawing a pair of contrast c
    `contrast_weights[c]` times as often as one of weight 1 (absent contrasts: 1), one epoch's worth of draws each
    pass; None when no weights are given (the loader shuffles uniformly). FLAIR, the contrast whose lesions were
    faintest (tissue error 0.60 SD against 0.18-0.38), gets more of the iterations this way without a second loader.
    """
    from brainspade.cli import parse_float
    from brainspade.contrasts import check_contrasts
    from brainspade.errors import InputError

    if not contrast_weights:
        return None
    # contrast names read as every other option reads them (brainspade.contrasts: any case, one message)
    weights = {}
    for key, value in dict(contrast_weights).items():
        names = check_contrasts(str(key))
        if len(names) != 1:
            raise InputError(
                f"contrast_weights key {key!r} names {len(names)} contrasts; accepted: one contrast per key"
            )
        # numbers read as every option reads them (brainspade.cli.parse_float: "2" from a shell is 2.0)
        weights[names[0]] = parse_float(value, f"contrast_weights[{names[0]!r}]", lo=0.0)
    per_pair = torch.tensor([float(weights.get(p["contrast_name"], 1.0)) for p in pairs], dtype=torch.double)
    if float(per_pair.sum()) <= 0:
        raise InputError("contrast_weights leave no pair to draw (every weight is 0)")
    return torch.utils.data.WeightedRandomSampler(
        per_pair, num_samples=len(pairs), replacement=True, generator=torch.Generator().manual_seed(int(seed))
    )


def paired_renders(
    pv: torch.Tensor, donor_pv: torch.Tensor, contrast: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images of `pv`, images of `donor_pv`), both (B, 1, ...): sample b's two maps rendered by one random scanner of
    the phantom renderer's training style, in sample b's contrast (an index into CONTRASTS)."""
    from brainspade.contrasts import CONTRASTS
    from brainspade.phantom.render import render

    images, styles = [], []
    for b in range(pv.shape[0]):
        name = CONTRASTS[int(contrast[b])]
        seed = int(rng.integers(2**62))  # one scanner: the same draws on both maps
        for maps, out in ((pv[b], images), (donor_pv[b % donor_pv.shape[0]], styles)):
            out.append(torch.from_numpy(render(maps.float().cpu().numpy(), name, np.random.default_rng(seed))))
    return torch.stack(images)[:, None].to(pv.device), torch.stack(styles)[:, None].to(pv.device)


class SPADEGANStep:
    """Callable `(engine, batch) -> dict of floats` doing one generator and one discriminator update.

    batch: {"pv": (B,10,...), "image": (B,1,...), "contrast": (B,) long}.
    """

    def __init__(
        self,
        generator,
        discriminator,
        g_optimizer,
        d_optimizer,
        adversarial_loss,
        lambda_adv: float = 1.0,
        lambda_fm: float = 10.0,
        lambda_rec: float = 10.0,
        lambda_kl: float = 0.05,
        rec_lesion_weight: float = 1.0,
        rec_lesion_share: float = 0.0,
        amp: bool = False,
        bf16: bool = False,
        patch_size: list[int] | None = None,
        ema: torch.optim.swa_utils.AveragedModel | None = None,
        paired_style_prob: float = 0.0,
        seed: int = 0,
    ):
        self.g, self.d = generator, discriminator
        self.g_opt, self.d_opt = g_optimizer, d_optimizer
        self.adv = adversarial_loss
        self.w = {"adv": float(lambda_adv), "fm": float(lambda_fm), "rec": float(lambda_rec), "kl": float(lambda_kl)}
        self.rec_lesion_weight = float(rec_lesion_weight)
        self.rec_lesion_share = float(rec_lesion_share)
        self.bf16 = bool(bf16)
        self.amp = bool(amp) and torch.cuda.is_available() and not self.bf16
        self.g_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.d_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.patch_size = list(patch_size) if patch_size else None
        self.ema = ema
        self.paired_style_prob = float(paired_style_prob)
        self.rng = np.random.default_rng(int(seed))
        self.donor: tuple[list, torch.Tensor] | None = None  # the previous iteration's (ids, label maps)

    def _autocast(self, device: torch.device):
        if self.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    def _step(self, loss, opt, scaler):
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    def _patch(self, pv: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
        """(label patch, image patch, latent window): the whole volume when training without patches."""
        if self.patch_size is None:
            return pv, image, None
        vox, lat = patch_window(pv.shape[2:], self.patch_size, _unwrap(self.g).grid_step)
        index = (slice(None), slice(None), *vox)
        return pv[index], image[index], lat

    def _style_pair(self, batch: dict, pv: torch.Tensor, image: torch.Tensor, contrast: torch.Tensor):
        """(target image, style image): the batch's own image twice, or, with `paired_style_prob`, one fresh scanner
        rendered on this map and on the previous iteration's (another subject's) map."""
        if self.paired_style_prob <= 0:
            return image, image, 0.0
        ids = list(batch.get("id", []))
        donor, self.donor = self.donor, (ids, pv.detach().cpu())  # kept on the CPU, where the renderer reads it
        same_subject = bool(ids) and donor is not None and ids == donor[0]
        if donor is None or same_subject or self.rng.random() >= self.paired_style_prob:
            return image, image, 0.0
        target, style = paired_renders(pv, donor[1], contrast, self.rng)
        return target, style, 1.0

    def __call__(self, engine, batch: dict) -> dict:
        device = engine.state.device
        pv = batch["pv"].to(device, non_blocking=True).float()
        contrast = torch.as_tensor(batch["contrast"]).to(device).long().reshape(-1)
        image = batch["image"].to(device, non_blocking=True).float()
        image, style_image, paired = self._style_pair(batch, pv, image, contrast)
        self.g.train()
        self.d.train()
        pv_p, image_p, window = self._patch(pv, image)
        cond = _unwrap(self.g).condition(pv_p, contrast)
        real_in = torch.cat([image_p, cond], 1)

        # generator update (discriminator grads computed here are discarded by the zero_grad below)
        with self._autocast(device):
            fake, mu, logvar = self.g(pv_p, contrast, style_image, latent_window=window)
            fake_out, fake_feats = self.d(torch.cat([fake, cond], 1))
            with torch.no_grad():
                _, real_feats = self.d(real_in)
            adv = self.adv(fake_out, target_is_real=True, for_discriminator=False)
            fm = feature_matching(fake_feats, real_feats)
        rec = masked_l1(fake.float(), image_p, pv_p, self.rec_lesion_weight, self.rec_lesion_share)
        kl = kl_loss(mu.float(), logvar.float())
        g_loss = self.w["adv"] * adv.float() + self.w["fm"] * fm.float() + self.w["rec"] * rec + self.w["kl"] * kl
        self._step(g_loss, self.g_opt, self.g_scaler)
        if self.ema is not None:
            self.ema.update_parameters(_unwrap(self.g))
        d_loss = self._discriminator_step(fake.detach(), cond, real_in, device)
        out = {"g_loss": g_loss.item(), "d_loss": d_loss.item(), "adv": adv.item(), "fm": fm.item()}
        out.update(rec=rec.item(), kl=kl.item(), paired=paired)
        engine.state.metrics.update(out)  # TensorBoardStatsHandler / StatsHandler read them from here too
        return out

    def _discriminator_step(self, fake, cond, real_in, device) -> torch.Tensor:
        """Fake and real in one forward (one DDP forward per backward; the discriminator's instance norm is per
        sample, so this equals two separate passes)."""
        with self._autocast(device):
            b = fake.shape[0]
            d_out, _ = self.d(torch.cat([torch.cat([fake, cond], 1), real_in], 0))
            d_fake, d_real = [o[:b].float() for o in d_out], [o[b:].float() for o in d_out]
            d_loss = 0.5 * (
                self.adv(d_fake, target_is_real=False, for_discriminator=True)
                + self.adv(d_real, target_is_real=True, for_discriminator=True)
            )
        self._step(d_loss, self.d_opt, self.d_scaler)
        return d_loss


def generator_ema(generator: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """torch's EMA of the generator's weights and buffers (the exported, sampled copy)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(_unwrap(generator), multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


def resume_handlers(path: str | None, load_dict: dict, map_location=None) -> list:
    """[CheckpointLoader] for `path` (`brainspade.weights.resumable_checkpoint`), or [] on a fresh run."""
    from monai.handlers import CheckpointLoader

    if path is None:
        return []
    print(f"resuming from {path}", flush=True)
    return [CheckpointLoader(load_path=path, load_dict=load_dict, map_location=map_location)]
