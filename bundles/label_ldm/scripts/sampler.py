"""`LabelSampler`: conditional latent-diffusion sampling of 10-channel label maps, verified and cleaned.

Used by inference.yaml (id `sampler`), evaluate.yaml and the brainspade3d bundle (which loads inference.yaml with
ConfigParser, overrides ids and calls `sampler()` to get label maps in memory).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from brainspade.cli import parse_bool, parse_int
from brainspade.errors import InputError
from brainspade.io import prepare_output_dir, safe_id, save_json, save_nifti
from brainspade.labels import CONDITION_KEYS, NUM_LABELS, lesion_volumes_ml, pv_to_int
from brainspade.profiles import get_profile
from brainspade.weights import read_weights

from .conditioning import ConditionSpace
from .lesion_cleanup import brain_mask, clean_lesions, fill_enclosed_background
from .volume_matching import match_lesion_volumes, trim_bounds, trim_lesion_volumes
from .weights import WEIGHTS_ACCEPTED, LatentMeta, load_weights


def _space(meta: Mapping) -> ConditionSpace:
    stats = LatentMeta()  # reads the weight file's statistics, with its rules for fields older files lack
    stats.load_state_dict(meta)
    return ConditionSpace(stats.cond_max.numpy(), stats.train_conditions.numpy(), transform=stats.cond_transform)


def condition_space(diffusion_path: str | Path) -> ConditionSpace:
    """The conditioning a diffusion weight file was trained on (accepted ranges, combinations), without a network."""
    ckpt = read_weights(diffusion_path, "diffusion weights file", WEIGHTS_ACCEPTED)
    try:
        return _space(ckpt.get("meta", ckpt))
    except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
        raise InputError(
            f"diffusion weights {str(diffusion_path)!r} give no conditioning table ({type(exc).__name__}); "
            "accepted: models/model.pt or a checkpoint written by train_diffusion.yaml"
        ) from None


def decode_latent(
    autoencoder: torch.nn.Module, z: torch.Tensor, roi_size: Sequence[int] | None = None, overlap: float = 0.25
) -> torch.Tensor:
    """Decoder logits of latent `z`, whole or in overlapping latent windows (Gaussian-blended by MONAI's
    sliding_window_inference, which scales the windows to the decoder's x4 output), so the paper profile's
    full-resolution decode fits a small GPU: peak memory follows the window, not the volume."""
    if roi_size is None or all(int(r) >= n for r, n in zip(roi_size, z.shape[2:], strict=True)):
        return autoencoder.decode_stage_2_outputs(z)
    return sliding_window_inference(
        z,
        [int(r) for r in roi_size],
        1,
        autoencoder.decode_stage_2_outputs,
        overlap=overlap,
        mode="gaussian",
        progress=False,
    )


class LabelSampler:
    """Sample label maps from the trained latent diffusion model.

    Settings come from the config (ids of the same names) and may be overridden per call:
    `sampler(num_samples=2, seed=1, tumour_ml=30)` -> list of dicts with keys
    id, pv (10, X, Y, Z float32), labels (X, Y, Z int16), affine (4x4), requested, requested_source,
    achieved (lesion mL in the integer label map), achieved_pv (sum of PV fractions), raw_achieved (label-map mL
    before the lesion clean-up), verified, retries, sampler, steps, guidance_scale, seed, base_seed, index,
    model_version, profile, time_s (+ cleanup amounts). `iter_samples(...)` yields them one at a time.
    """

    SETTINGS = (
        "num_samples",
        "seed",
        "sampling",
        "steps",
        "guidance_scale",
        "max_retries",
        "match_volumes",
        "match_mode",
        "match_tolerance",
        *CONDITION_KEYS,
    )
    MATCH_MODES = ("trim", "full")

    def __init__(
        self,
        autoencoder: torch.nn.Module,
        network: torch.nn.Module,
        inferer,
        schedulers: Mapping,
        default_steps: Mapping[str, int],
        autoencoder_path: str,
        diffusion_path: str,
        profile: str = "default",
        device: str | torch.device = "cpu",
        num_samples: int = 1,
        seed: int = 0,
        sampling: str = "ddim",
        steps: int | None = None,
        guidance_scale: float = 3.0,
        max_retries: int = 3,
        min_ratio: float = 0.5,
        max_ratio: float = 2.0,
        cond_fill_value: float = -1.0,
        id_prefix: str = "sample",
        model_version: str = "",
        wmh_ml=None,
        tumour_ml=None,
        oedema_ml=None,
        enhancing_ml=None,
        verbose: bool = False,
        amp: bool = False,
        decode_roi: Sequence[int] | None = None,
        decode_overlap: float = 0.25,
        match_volumes: bool = True,
        match_mode: str = "trim",
        match_tolerance: float = 0.25,
    ) -> None:
        self.autoencoder, self.network, self.inferer = autoencoder, network, inferer
        self.schedulers, self.default_steps = dict(schedulers), dict(default_steps)
        self.autoencoder_path, self.diffusion_path = str(autoencoder_path), str(diffusion_path)
        self.profile_name, self.device = profile, torch.device(device)
        self.min_ratio, self.max_ratio = float(min_ratio), float(max_ratio)
        self.cond_fill_value, self.id_prefix = float(cond_fill_value), id_prefix
        self.model_version, self.verbose = str(model_version), bool(verbose)
        # bf16 autocast of sampling and decoding on `device` (the config enables it where bf16 runs natively)
        self.amp = bool(amp)
        self.decode_roi, self.decode_overlap = decode_roi, decode_overlap  # checked in settings()
        self.config = {"num_samples": num_samples, "seed": seed, "sampling": sampling, "steps": steps}
        self.config.update(guidance_scale=guidance_scale, max_retries=max_retries, match_volumes=match_volumes)
        self.config.update(match_mode=match_mode, match_tolerance=match_tolerance)
        self.config.update(wmh_ml=wmh_ml, tumour_ml=tumour_ml, oedema_ml=oedema_ml, enhancing_ml=enhancing_ml)
        self.space: ConditionSpace | None = None
        self.meta: dict = {}

    # ---------------------------------------------------------------- checks (before anything is written)
    def settings(self, **overrides) -> dict:
        """Validated settings (config values with per-call overrides); raises InputError naming what is accepted."""
        unknown = set(overrides) - set(self.SETTINGS)
        if unknown:
            raise InputError(f"unknown sampler setting {sorted(unknown)[0]!r}; accepted: {', '.join(self.SETTINGS)}")
        cfg = {**self.config, **overrides}
        self.load()
        s: dict[str, Any] = {}
        s["num_samples"] = parse_int(cfg["num_samples"], "num_samples", 1, 10000)
        s["seed"] = parse_int(cfg["seed"], "seed", 0, 2**31 - 1)
        name = str(cfg["sampling"]).strip().lower()
        if name not in self.schedulers:
            raise InputError(f"sampling={cfg['sampling']!r} is not known; accepted: {', '.join(self.schedulers)}")
        s["sampling"] = name
        s["steps"] = (
            self.default_steps[name]
            if cfg["steps"] is None
            else parse_int(cfg["steps"], "steps", 1, int(self.schedulers[name].num_train_timesteps))
        )
        try:
            gs = float(cfg["guidance_scale"])
        except (TypeError, ValueError):
            gs = float("nan")
        if isinstance(cfg["guidance_scale"], bool) or not (1.0 <= gs <= 20.0):
            raise InputError(
                f"guidance_scale={cfg['guidance_scale']!r} is not accepted; accepted: a number from 1 "
                "(no classifier-free guidance) to 20"
            )
        s["guidance_scale"] = gs
        s["max_retries"] = parse_int(cfg["max_retries"], "max_retries", 0, 20)
        s["match_volumes"] = parse_bool(cfg["match_volumes"], "match_volumes")
        s["match_mode"], s["match_tolerance"] = self._check_matching(cfg["match_mode"], cfg["match_tolerance"])
        self._check_decoding()
        s["given"] = self.space.parse({k: cfg[k] for k in CONDITION_KEYS})
        s["id_prefix"] = safe_id(self.id_prefix)
        return s

    def _check_matching(self, mode: Any, tolerance: Any) -> tuple[str, float]:
        name = str(mode).strip().lower()
        if name not in self.MATCH_MODES:
            raise InputError(f"match_mode={mode!r} is not known; accepted: {', '.join(self.MATCH_MODES)}")
        try:
            tol = float(tolerance)
        except (TypeError, ValueError):
            tol = float("nan")
        if isinstance(tolerance, bool) or not 0 < tol < 1:
            raise InputError(
                f"match_tolerance={tolerance!r} is not accepted; accepted: a number above 0 and below 1 (the largest "
                "share of its sampled volume by which trimming may move a lesion; 0.25 = +-25 %)"
            )
        return name, tol

    def _check_decoding(self) -> None:
        roi, ov = self.decode_roi, self.decode_overlap
        ok_roi = roi is None or (
            isinstance(roi, (list, tuple))
            and len(roi) == 3
            and all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1 for r in roi)
        )
        if not ok_roi:
            raise InputError(
                f"decode_roi={roi!r} is not accepted; accepted: null (whole map) or three positive "
                "integers, the latent window, e.g. [16, 16, 16]"
            )
        if isinstance(ov, bool) or not isinstance(ov, (int, float)) or not 0 <= ov < 1:
            raise InputError(f"decode_overlap={ov!r} is not accepted; accepted: a number from 0 to below 1")
        self.decode_roi = None if roi is None else [int(r) for r in roi]

    def sample_ids(self, settings: dict) -> list[str]:
        return [f"{settings['id_prefix']}-s{settings['seed']}-{i:03d}" for i in range(settings["num_samples"])]

    def load(self) -> None:
        """Load both weight files once (clear InputError when missing, damaged or for another profile)."""
        if self.space is not None:
            return
        profile = get_profile(self.profile_name)
        load_weights(self.autoencoder, self.autoencoder_path, "autoencoder", "cpu", "autoencoder weights")
        ckpt = load_weights(self.network, self.diffusion_path, "diffusion", "cpu", "diffusion weights")
        meta = ckpt.get("meta", ckpt)  # exported file: flat; training checkpoint: under 'meta'
        if "scale_factor" not in meta:
            raise InputError(
                f"diffusion weights {self.diffusion_path!r} lack the latent scale factor; accepted: "
                "models/model.pt or a checkpoint written by train_diffusion.yaml"
            )
        trained_profile = str(meta.get("profile", ""))
        if trained_profile and trained_profile != profile.name:
            raise InputError(
                f"diffusion weights {self.diffusion_path!r} were trained for profile {trained_profile!r}, "
                f"not {profile.name!r}; accepted: --profile {trained_profile} or weights for {profile.name}"
            )
        self.meta = {
            "scale_factor": float(meta["scale_factor"]),
            "profile": profile,
            "latent_shape": [int(v) for v in torch.as_tensor(meta["latent_shape"])],
            "version": str(ckpt.get("version", "")) or self.model_version,
        }
        self.space = _space(meta)
        self.autoencoder.to(self.device).eval()
        self.network.to(self.device).eval()

    # ---------------------------------------------------------------- sampling
    def _bounds(self, s: dict) -> tuple[float, float]:
        """Sampled / requested ratios a kept sample must meet: the trim's tolerance by default, else min/max_ratio."""
        trim = s["match_volumes"] and s["match_mode"] == "trim"
        return trim_bounds(s["match_tolerance"]) if trim else (self.min_ratio, self.max_ratio)

    def _verify(self, requested: np.ndarray, achieved: Mapping[str, float], s: dict) -> tuple[bool, float]:
        ok, score = True, 0.0
        lo, hi = self._bounds(s)
        for k, r in zip(CONDITION_KEYS, requested, strict=True):
            if r > 0:
                ratio = max(achieved[k], 1e-3 * r) / r
                ok &= lo <= ratio <= hi
                score += abs(math.log(ratio))
        return bool(ok), score

    @torch.no_grad()
    def _attempt(self, cond: torch.Tensor, noise_seed: int, s: dict) -> np.ndarray:
        g = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn((1, *self.meta["latent_shape"]), generator=g).to(self.device)
        scheduler = self.schedulers[s["sampling"]]
        scheduler.set_timesteps(s["steps"], device=self.device)
        cfg = None if s["guidance_scale"] == 1.0 else s["guidance_scale"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            # MONAI DiffusionInferer in latent space (the guided and unguided passes batched), then the decoder
            latent = self.inferer.sample(
                noise,
                self.network,
                scheduler,
                conditioning=cond.to(self.device),
                cfg=cfg,
                cfg_fill_value=self.cond_fill_value,
                verbose=False,
            )
            out = decode_latent(
                self.autoencoder, latent / self.meta["scale_factor"], self.decode_roi, self.decode_overlap
            )
        return torch.softmax(out[0].float(), 0).cpu().numpy()

    def _deliver(self, pv, labels, achieved, req_map: dict, ok: bool, s: dict) -> tuple:
        """The kept attempt after volume matching -> (pv, labels, achieved, per-lesion status, verified).

        trim (default): trimmed when every requested lesion is within the tolerance, else delivered as sampled and
        unverified; full: every present requested lesion brought to the request (volume_matching.py); off: as
        sampled."""
        voxel_mm3 = self.meta["profile"].voxel_mm3
        if not s["match_volumes"]:
            return pv, labels, achieved, "off", ok
        if s["match_mode"] == "full":
            pv, status = match_lesion_volumes(pv, req_map, voxel_mm3, brain_mask(pv))
        else:
            pv, status, ok = trim_lesion_volumes(pv, req_map, voxel_mm3, brain_mask(pv), s["match_tolerance"])
        labels = pv_to_int(pv)
        return pv, labels, lesion_volumes_ml(labels, voxel_mm3), status, ok

    def iter_samples(self, **overrides) -> Iterator[dict]:
        s = self.settings(**overrides)
        profile: Any = self.meta["profile"]
        for i, sid in enumerate(self.sample_ids(s)):
            t0 = time.perf_counter()
            requested, source = self.space.draw(s["given"], np.random.default_rng([s["seed"], i]))
            req_map = {k: float(v) for k, v in zip(CONDITION_KEYS, requested, strict=True)}
            cond = torch.as_tensor(self.space.normalise(requested), dtype=torch.float32).view(1, 1, -1)
            best = None
            for attempt in range(s["max_retries"] + 1):
                noise_seed = int(np.random.SeedSequence([s["seed"], i, attempt]).generate_state(1)[0])
                raw = self._attempt(cond, noise_seed, s)
                pv, cleanup = clean_lesions(raw, req_map, profile.voxel_mm3)
                pv, cleanup["filled_enclosed_background_ml"] = fill_enclosed_background(pv, profile.voxel_mm3)
                labels = pv_to_int(pv)
                achieved = lesion_volumes_ml(labels, profile.voxel_mm3)  # what the saved label map holds
                ok, score = self._verify(requested, achieved, s)
                if self.verbose:
                    print(f"{sid} attempt {attempt}: achieved {_round(achieved)} {'ok' if ok else 'off'}", flush=True)
                if best is None or score < best[0]:
                    best = (score, ok, attempt, noise_seed, raw, pv, labels, cleanup, achieved)
                if ok:
                    break
            _, ok, used, noise_seed, raw, pv, labels, cleanup, achieved = best
            sampled = achieved
            pv, labels, achieved, matching, ok = self._deliver(pv, labels, achieved, req_map, ok, s)
            yield {
                "id": sid,
                "pv": pv.astype(np.float32),
                "labels": labels,
                "affine": profile.affine,
                "requested": _round(req_map),
                "requested_source": source,
                "achieved": _round(achieved),
                "sampled_achieved": _round(sampled),
                "volume_matching": matching,
                "match_mode": s["match_mode"] if s["match_volumes"] else "off",
                "match_tolerance": s["match_tolerance"],
                "max_retries": s["max_retries"],
                "achieved_pv": _round(lesion_volumes_ml(pv, profile.voxel_mm3)),
                "raw_achieved": _round(lesion_volumes_ml(pv_to_int(raw), profile.voxel_mm3)),
                **cleanup,
                "verified": ok,
                "retries": attempt,
                "attempt_used": used,
                "sampler": s["sampling"],
                "steps": s["steps"],
                "guidance_scale": s["guidance_scale"],
                "seed": noise_seed,
                "base_seed": s["seed"],
                "index": i,
                "model_version": self.meta["version"],
                "profile": profile.name,
                "time_s": round(time.perf_counter() - t0, 3),
            }

    def __call__(self, **overrides) -> list[dict]:
        return list(self.iter_samples(**overrides))


def _round(d: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in d.items()}


def write_samples(
    sampler: LabelSampler, output_dir: str, overwrite: bool = False, save_pv: bool = False, **overrides
) -> list[Path]:
    """Validate everything, then write <id>_label.nii.gz (+ <id>_pv.nii.gz) and <id>.json per sample, atomically."""
    parse_bool(overwrite, "overwrite")
    parse_bool(save_pv, "save_pv")
    if output_dir is None or not str(output_dir).strip():
        raise InputError("output_dir is not set; accepted: a writable folder (--output_dir out/)")
    s = sampler.settings(**overrides)
    ids = sampler.sample_ids(s)
    planned = [
        n for sid in ids for n in (f"{sid}_label.nii.gz", f"{sid}.json") + ((f"{sid}_pv.nii.gz",) if save_pv else ())
    ]
    out = prepare_output_dir(output_dir, planned, overwrite)
    written = []
    for smp in sampler.iter_samples(**overrides):
        sid = smp["id"]
        files = {"label": f"{sid}_label.nii.gz"}
        save_nifti(out / files["label"], smp["labels"], smp["affine"], dtype=np.int16)
        if save_pv:
            files["pv"] = f"{sid}_pv.nii.gz"
            save_nifti(out / files["pv"], smp["pv"], smp["affine"], pv_uint8=True)
        side = {k: v for k, v in smp.items() if k not in ("pv", "labels", "affine")}
        side.update(
            {
                "files": files,
                "affine": np.asarray(smp["affine"]).tolist(),
                "num_labels": NUM_LABELS,
                "conditioning": sampler.space.summary(),
            }
        )
        written.append(save_json(out / f"{sid}.json", side))
        print(
            f"{sid}: requested {smp['requested']} achieved {smp['achieved']} "
            f"({smp['sampler']} {smp['steps']} steps, retries {smp['retries']}, {smp['time_s']:.1f} s)",
            flush=True,
        )
    return written
