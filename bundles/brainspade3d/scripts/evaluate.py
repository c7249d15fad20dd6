"""Evaluation of the generator on held-out (label map, image) pairs, per contrast.

- SSIM / PSNR (MONAI `SSIMMetric`, `PSNRMetric`) of the image synthesised from the true label map against the true
  image, with the style code encoded from that true image (`encoded`: the fair pairing, same appearance) and with a
  sampled style code (`sampled`: what the main command does).
- Per-tissue intensity-distribution distance: 1-D Wasserstein distance between the real and the synthetic (sampled
  style) intensities inside each label of the true label map. MONAI has no distribution distance over voxel sets of
  a region (its `MMDMetric` compares two image batches voxel-aligned), so scipy's `wasserstein_distance` is used.
- Optional label fidelity: a segmenter's Dice (MONAI `DiceMetric`, labels 1..9) on the synthetic images against the
  label maps they were made from, beside its Dice on the real images.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainspade.bundle import load_scripts
from brainspade.cli import parse_bool, parse_int
from brainspade.errors import InputError
from brainspade.io import prepare_output_dir, save_json
from brainspade.labels import LABELS, NUM_LABELS, pv_to_int
from brainspade.weights import load_into, read_weights, state_dict_in

from .data import contrast_pairs
from .generation import load_generator


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def tissue_distances(real: np.ndarray, fake: np.ndarray, labels: np.ndarray, min_voxels: int = 10) -> dict[str, float]:
    """Wasserstein distance of the intensity distributions inside each label (labels with >= min_voxels voxels)."""
    from scipy.stats import wasserstein_distance

    out = {}
    for lab in LABELS[1:]:
        m = labels == lab.code
        if int(m.sum()) >= min_voxels:
            out[lab.key] = float(wasserstein_distance(real[m], fake[m]))
    return out


def dice_per_label(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Dice over labels 1..9 present in the target (MONAI DiceMetric on one-hot maps)."""
    from monai.metrics import DiceMetric

    def onehot(a):
        return torch.nn.functional.one_hot(torch.as_tensor(a, dtype=torch.long), NUM_LABELS).permute(3, 0, 1, 2)[None]

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    d = metric(onehot(pred).float(), onehot(target).float())[0]
    return float(torch.nanmean(d))


def segmenter_from_bundle(
    segmenter_root: str, ckpt_path: str | None, profile: str, device, overrides: dict | None = None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """(X, Y, Z) image on the profile grid -> integer labels, with the segmenter bundle's network and weights;
    None without `ckpt_path` (no label fidelity measured).

    The network comes from the segmenter's own inference.yaml (`network_def`), the weights from `ckpt_path`
    (weights_only=True); intensities are z-scored inside the brain as its preprocessing does. evaluate.yaml
    hands it over uncalled (`_mode_: callable`), so the segmenter is only built once the options are checked.
    """
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    if not ckpt_path:
        return None

    cfg = Path(segmenter_root) / "configs" / "inference.yaml"
    if not cfg.is_file():
        raise InputError(
            f"segmenter bundle {str(segmenter_root)!r} has no configs/inference.yaml; accepted: the "
            "segmenter bundle folder (--segmenter_root)"
        )
    accepted = "a model.pt of the segmenter bundle"
    state = state_dict_in(read_weights(ckpt_path, "segmenter weights", accepted), ("network", "model", "state_dict"))
    parser = ConfigParser()
    parser.read_config(str(cfg))
    parser.update({"bundle_root": str(segmenter_root), "profile": profile, **(overrides or {})})
    net = parser.get_parsed_content("network_def")
    load_into(
        net,
        state,
        ckpt_path,
        "segmenter weights",
        "weights of the segmenter bundle with the same --segmenter_overrides",
    )
    net = net.to(device).eval()
    # the segmenter's own intensity normalisation (its scripts/preprocessing.py), so the judge sees what it learned on
    normalise = Compose(load_scripts(segmenter_root, "segmenter_scripts").intensity_transforms())

    @torch.no_grad()
    def segment(image: np.ndarray) -> np.ndarray:
        x = normalise({"image": torch.as_tensor(image, dtype=torch.float32)[None]})["image"]
        return net(torch.as_tensor(x)[None].to(device)).argmax(1)[0].cpu().numpy()

    return segment


@torch.no_grad()
def score_pair(network, item: dict, pair: dict, device, seed: int, seg) -> tuple[dict[str, float], dict[str, float]]:
    """One held-out (label map, image) pair: its metrics (SSIM/PSNR for the encoded and a sampled style, the
    segmenter's Dice with `seg`) and its per-tissue distances (sampled style)."""
    from monai.metrics import PSNRMetric, SSIMMetric

    pv = torch.as_tensor(item["pv"]).float()[None].to(device)
    real = torch.as_tensor(item["image"]).float()[None].to(device)
    c = torch.tensor([pair["contrast"]], device=device)
    mu, _ = network.encode(real)
    fake_enc = network.decode(pv, c, mu)
    g = torch.Generator().manual_seed(seed)
    fake_smp = network.decode(pv, c, network.sample_z(1, generator=g).to(device))
    data_range = float(real.max().clamp_min(1e-6))
    scores = {}
    for tag, fake in (("encoded", fake_enc), ("sampled", fake_smp)):
        fake = fake.float().clamp(0, data_range)
        scores[f"ssim_{tag}"] = float(SSIMMetric(spatial_dims=3, data_range=data_range)(fake, real).mean())
        scores[f"psnr_{tag}"] = float(PSNRMetric(max_val=data_range)(fake, real).mean())
    labels = pv_to_int(item["pv"].cpu().numpy() if torch.is_tensor(item["pv"]) else np.asarray(item["pv"]))
    real_np, fake_np = real[0, 0].cpu().numpy(), fake_smp[0, 0].float().cpu().numpy()
    if seg is not None:
        scores["dice_real"] = dice_per_label(seg(real_np), labels)
        scores["dice_synthetic"] = dice_per_label(seg(fake_np), labels)
    return scores, tissue_distances(real_np, fake_np, labels)


def summarise(per: dict, tissue: dict) -> dict:
    """Per contrast: the mean of each metric over its pairs, and of each tissue's distance."""
    return {
        name: {
            **{m: _mean(v) for m, v in per[name].items()},
            "tissue_wasserstein": {k: _mean(v) for k, v in tissue[name].items()},
            "tissue_wasserstein_mean": _mean([_mean(v) for v in tissue[name].values()]),
            "num_pairs": len(per[name]["ssim_encoded"]),
        }
        for name in per
    }


def print_table(results: dict, with_dice: bool) -> None:
    cols = ["ssim_encoded", "psnr_encoded", "ssim_sampled", "psnr_sampled", "tissue_wasserstein_mean"] + (
        ["dice_real", "dice_synthetic"] if with_dice else []
    )
    print("contrast  " + "  ".join(cols), flush=True)
    for name, r in results.items():
        print(f"{name:8s}  " + "  ".join(f"{r.get(col)}" for col in cols), flush=True)


@torch.no_grad()
def evaluate(
    network: torch.nn.Module,
    ckpt_path: str,
    device,
    preprocessing,
    datalist: str,
    key: str = "test",
    contrasts: Any = None,
    max_pairs: Any = 0,
    seed: Any = 0,
    output_dir: Any = "brainspade3d_eval",
    overwrite: Any = False,
    segmenter: Callable[[], Callable[[np.ndarray], np.ndarray] | None] | None = None,
    model_version: str = "",
) -> dict:
    """Metrics per contrast over the held-out pairs of `datalist[key]`; writes `<output_dir>/metrics.json`."""
    t0 = time.perf_counter()
    n_max = parse_int(max_pairs, "max_pairs", 0, 10**6)
    base_seed = parse_int(seed, "seed", 0, 2**31 - 1)
    overwrite = parse_bool(overwrite, "overwrite")
    pairs = contrast_pairs(datalist, key, contrasts)
    if n_max:
        pairs = pairs[:n_max]
    if output_dir is None or not str(output_dir).strip():
        raise InputError("output_dir is not set; accepted: a writable folder (--output_dir eval/)")
    network = load_generator(network, ckpt_path, device)
    seg = segmenter() if segmenter is not None else None
    out = prepare_output_dir(output_dir, ["metrics.json"], overwrite)

    per = defaultdict(lambda: defaultdict(list))
    tissue = defaultdict(lambda: defaultdict(list))
    for i, pair in enumerate(pairs):
        pair_seed = int(np.random.SeedSequence([base_seed, i]).generate_state(1)[0])
        scores, distances = score_pair(network, preprocessing(dict(pair)), pair, device, pair_seed, seg)
        for m, v in scores.items():
            per[pair["contrast_name"]][m].append(v)
        for k, v in distances.items():
            tissue[pair["contrast_name"]][k].append(v)
    results = summarise(per, tissue)
    report = {
        "datalist": str(Path(datalist).resolve()),
        "key": key,
        "model_version": model_version,
        "ckpt_path": str(Path(ckpt_path).resolve()),
        "seed": base_seed,
        "segmenter": seg is not None,
        "per_contrast": results,
        "time_s": round(time.perf_counter() - t0, 2),
    }
    save_json(out / "metrics.json", report)
    print_table(results, seg is not None)
    print(f"metrics: {out / 'metrics.json'}", flush=True)
    return report
