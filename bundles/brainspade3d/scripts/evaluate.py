"""Evaluation of the generator on held-out phantom (label map, image) pairs, per contrast (issue 16's figures).

Each figure is one small function, tested on hand-built arrays (tests/test_brainspade3d_evaluate.py). Labels are the
hard labels of the partial-volume map (`brainspade.labels.pv_to_int`); a label counts in an image where it holds at
least `min_voxels` voxels; the brain is every non-background voxel.

- **Per-tissue intensity error** (`tissue_errors`, the headline): the synthetic image and the phantom image of the
  same label map, each z-scored inside the brain; per label (CSF, GM, WM, deep GM, brainstem, WMH, tumour core,
  oedema, enhancing), the absolute difference of their mean z-scored intensities (SD units). Per label and as the
  mean over labels, with a sampled style (`*_sampled`, what the main command does) and with the style encoded from
  the phantom image (`*_encoded`); beside them the phantom renderer's own floor (`tissue_error_phantom`): another
  rendering of the same label map by its training scanner (style 'a', another rng) against the phantom image. A
  sampled style cannot know the phantom's random scanner draw, so that floor bounds what `*_sampled` can reach.
- **Label fidelity** (`dice_per_label`, `fidelity_ratios`): the segmenter bundle's model (shipped weights by
  default) on the synthetic (sampled style) and on the phantom image of the same label map: MONAI `DiceMetric` per
  label 1..9 against that label map, and the ratio synthetic/phantom per label and of the means over labels.
- **SSIM / PSNR** (MONAI `SSIMMetric`, `PSNRMetric`) against the phantom image, encoded and sampled style.
- **Style transfer** (`style_profile`, `transfer_closer`): the phantom image X of another held-out subject (same
  contrast) goes through `--style_image`'s own loader (`grid.load_style_image`) and encoder; its code is decoded on
  this label map. The pair counts when the transferred image's per-tissue profile is closer to X's than the
  median profile of `style_samples` sampled-style images of this label map is (`style_transfer_fraction`).
- **Diversity** (`profile_spread`, `phantom_profiles`): the spread of the per-tissue profiles of the sampled-style
  images of one label map, beside the spread of the phantom renderer's random scanners (`brainspade.phantom.render`,
  style 'a', as many rngs) on the same map, and their ratio.
- Per-tissue 1-D Wasserstein distance of the intensities (sampled style; scipy, MONAI has no region-wise
  distribution distance), kept under its earlier names (`tissue_wasserstein` per label, `tissue_wasserstein_mean`).

Per contrast, a per-label figure is averaged over the pairs per label, then over the labels (lesions weigh as much
as tissues); `<figure>_per_label` holds the per-label values.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainspade.bundle import load_scripts
from brainspade.cli import parse_bool, parse_int
from brainspade.errors import InputError
from brainspade.io import prepare_output_dir, save_json
from brainspade.labels import LABELS, NUM_LABELS, pv_to_int
from brainspade.profiles import get_profile
from brainspade.weights import load_into, read_weights, state_dict_in

from .data import contrast_pairs
from .generation import generate_images, load_generator
from .grid import load_style_image

MIN_VOXELS = 20  # a label with fewer voxels in an image has no reliable mean
# issue 16's targets, checked per contrast in metrics.json's `targets`: (figure, "<=" or ">=", bound)
TARGETS = (
    ("tissue_error_sampled", "<=", 0.15),
    ("dice_ratio", ">=", 0.9),
    ("dice_ratio_min", ">=", 0.9),
    ("style_transfer_fraction", ">=", 0.9),
    ("style_diversity_ratio", ">=", 1.0),
)
# per-label figures whose metrics.json keys predate the `<figure>` / `<figure>_per_label` scheme
LEGACY_KEYS = {"tissue_wasserstein": ("tissue_wasserstein_mean", "tissue_wasserstein")}


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(vals)), 4) if vals else None


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, np.float32)


def label_means(image: np.ndarray, labels: np.ndarray, min_voxels: int = MIN_VOXELS) -> dict[str, float]:
    """{label key: mean of `image` inside it} for labels 1..9 with at least `min_voxels` voxels."""
    out = {}
    for lab in LABELS[1:]:
        m = labels == lab.code
        if int(m.sum()) >= min_voxels:
            out[lab.key] = float(image[m].mean())
    return out


def brain_zscore(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`image` minus its brain mean, over its brain SD (brain: labels > 0)."""
    brain = image[labels > 0]
    return (image - brain.mean()) / max(float(brain.std()), 1e-8)


def tissue_errors(fake: np.ndarray, real: np.ndarray, labels: np.ndarray, min_voxels: int = MIN_VOXELS) -> dict:
    """{label key: |mean z-scored fake - mean z-scored real|} inside each label of `labels` (SD units)."""
    zf = label_means(brain_zscore(fake, labels), labels, min_voxels)
    zr = label_means(brain_zscore(real, labels), labels, min_voxels)
    return {k: abs(zf[k] - zr[k]) for k in zr}


def style_profile(image: np.ndarray, labels: np.ndarray, min_voxels: int = MIN_VOXELS) -> dict[str, float]:
    """An image's appearance as numbers: {label key: mean intensity inside the label / the brain's median}.

    Style is appearance, so the profile keeps what a scanner changes (how bright each tissue is relative to the
    others: contrast, gamma, lesion conspicuity; bias and blur shift tissue means too) and removes only the
    arbitrary global scale every loader rescales anyway (the phantoms and `--style_image` by their brain p99).
    Z-scoring would also divide out the contrast spread, hiding the very differences measured; the median, unlike
    the p99 or the mean, is set by the bulk of GM/WM, not by the brightest tissue or a lesion.
    """
    brain = image[labels > 0]
    scale = float(np.median(brain)) if brain.size else 0.0
    if not np.isfinite(scale) or abs(scale) < 1e-8:
        return {}
    return {k: v / scale for k, v in label_means(image, labels, min_voxels).items()}


def profile_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Mean absolute difference of two profiles over the labels both hold (NaN if none)."""
    keys = sorted(set(a) & set(b))
    return float(np.mean([abs(a[k] - b[k]) for k in keys])) if keys else float("nan")


def median_profile(profiles: list[dict[str, float]]) -> dict[str, float]:
    """Per label, the median over the profiles that hold it."""
    keys = sorted({k for p in profiles for k in p})
    return {k: float(np.median([p[k] for p in profiles if k in p])) for k in keys}


def transfer_closer(transferred: dict, reference: dict, sampled_median: dict) -> tuple[float | None, float, float]:
    """(1.0 if the transferred profile is closer to the reference's than the sampled-style median is, else 0.0;
    None where a distance is undefined), with both distances."""
    d_t, d_s = profile_distance(transferred, reference), profile_distance(sampled_median, reference)
    if not (np.isfinite(d_t) and np.isfinite(d_s)):
        return None, d_t, d_s
    return float(d_t < d_s), d_t, d_s


def profile_spread(profiles: list[dict[str, float]]) -> float:
    """Per label held by every profile, the SD of its value across the profiles; their mean (NaN if < 2)."""
    if len(profiles) < 2:
        return float("nan")
    keys = sorted(set.intersection(*(set(p) for p in profiles)))
    return float(np.mean([np.std([p[k] for p in profiles]) for k in keys])) if keys else float("nan")


def phantom_renderings(pv: np.ndarray, contrast: str, seed: int, k: int) -> list[np.ndarray]:
    """`k` renderings of one PV map by the phantom renderer's training scanner (style 'a'), one rng each: the
    appearance variety the generator learned from."""
    from brainspade.phantom.render import render

    return [render(pv, contrast, np.random.default_rng([seed, i]), "a") for i in range(k)]


def phantom_profiles(pv: np.ndarray, contrast: str, seed: int, k: int, min_voxels: int = MIN_VOXELS) -> list[dict]:
    """Profiles of `phantom_renderings`."""
    labels = pv_to_int(pv)
    return [style_profile(img, labels, min_voxels) for img in phantom_renderings(pv, contrast, seed, k)]


def tissue_distances(real: np.ndarray, fake: np.ndarray, labels: np.ndarray, min_voxels: int = 10) -> dict[str, float]:
    """Wasserstein distance of the intensity distributions inside each label (labels with >= min_voxels voxels)."""
    from scipy.stats import wasserstein_distance

    out = {}
    for lab in LABELS[1:]:
        m = labels == lab.code
        if int(m.sum()) >= min_voxels:
            out[lab.key] = float(wasserstein_distance(real[m], fake[m]))
    return out


def dice_per_label(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """{label key: Dice} for labels 1..9 present in the target (MONAI DiceMetric on one-hot maps)."""
    from monai.metrics import DiceMetric

    def onehot(a):
        return torch.nn.functional.one_hot(torch.as_tensor(a, dtype=torch.long), NUM_LABELS).permute(3, 0, 1, 2)[None]

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    d = metric(onehot(pred).float(), onehot(target).float())[0]
    return {lab.key: float(v) for lab, v in zip(LABELS[1:], d, strict=True) if torch.isfinite(v)}


def fidelity_ratios(dice_real: dict[str, float], dice_synthetic: dict[str, float]) -> dict:
    """The segmenter's Dice on synthetic images over its Dice on the phantom images: per label, of the means over
    the labels both hold (`dice_ratio`) and the smallest per-label ratio."""
    keys = [k for k in dice_real if k in dice_synthetic and dice_real[k] and dice_real[k] > 0]
    per = {k: round(dice_synthetic[k] / dice_real[k], 4) for k in keys}
    real, synth = _mean(dice_real[k] for k in keys), _mean(dice_synthetic[k] for k in keys)
    ratio = round(synth / real, 4) if real and synth is not None else None
    return {"dice_ratio": ratio, "dice_ratio_per_label": per, "dice_ratio_min": min(per.values()) if per else None}


def segmenter_from_bundle(
    segmenter_root: str, ckpt_path: str | None, profile: str, device, overrides: dict | None = None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """(X, Y, Z) image on the profile grid -> integer labels, with the segmenter bundle's network and weights;
    None without `ckpt_path` (no label fidelity measured).

    The network comes from the segmenter's own inference.yaml (`network_def`), the weights from `ckpt_path`
    (weights_only=True); intensities go through the segmenter's own normalisation, and the image is resampled to the
    segmenter's own grid (its inference.yaml `profile`: the spacing its weights were trained at) and the class scores
    back, as its inference does. evaluate.yaml hands it over uncalled (`_mode_: callable`), so the segmenter is only
    built once the options are checked.
    """
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    if not ckpt_path:
        return None

    cfg = Path(segmenter_root) / "configs" / "inference.yaml"
    if not cfg.is_file():
        raise InputError(
            f"segmenter bundle {str(segmenter_root)!r} has no configs/inference.yaml; accepted: the "
            "segmenter bundle folder (--segmenter_root), or --label_fidelity false"
        )
    accepted = "a model.pt of the segmenter bundle"
    state = state_dict_in(read_weights(ckpt_path, "segmenter weights", accepted), ("network", "model", "state_dict"))
    parser = ConfigParser()
    parser.read_config(str(cfg))
    # the judge's device, so the segmenter's precision and memory-format choices are made for the device it runs on
    parser.update({"bundle_root": str(segmenter_root), "device": torch.device(device), **(overrides or {})})
    net = parser.get_parsed_content("network")  # its network_def on the judge's device, in its memory format
    zoom = get_profile(profile).spacing_mm / parser.get_parsed_content("prof").spacing_mm
    load_into(
        net,
        state,
        ckpt_path,
        "segmenter weights",
        "weights of the segmenter bundle with the same --segmenter_overrides",
    )
    net = net.eval()
    # the segmenter's own intensity normalisation (its scripts/preprocessing.py), so the judge sees what it learned on
    normalise = Compose(load_scripts(segmenter_root, "segmenter_scripts").intensity_transforms())
    # and its own inferer (its inference's sliding windows, precision, mirror averaging), as its inference reads
    inferer = parser.get_parsed_content("inferer")

    @torch.no_grad()
    def segment(image: np.ndarray) -> np.ndarray:
        x = normalise({"image": torch.as_tensor(image, dtype=torch.float32)[None]})["image"]
        x = torch.as_tensor(x)[None].to(device)
        if zoom == 1:
            return inferer(x, net).argmax(1)[0].cpu().numpy()
        scores = inferer(torch.nn.functional.interpolate(x, size=judge_grid(image.shape, zoom), mode="trilinear"), net)
        scores = torch.nn.functional.interpolate(scores.float(), size=tuple(image.shape), mode="trilinear")
        return scores.argmax(1)[0].cpu().numpy()

    return segment


def judge_grid(shape: Sequence[int], zoom: float) -> list[int]:
    """The judge's grid for an image of `shape`: the same field of view at the segmenter's voxel size (`zoom` = this
    grid's spacing over the segmenter's; align_corners=False keeps the extents together). Any side will do: the
    segmenter reads it in its inference's sliding windows, padded where the image is smaller."""
    return [max(1, round(n * zoom)) for n in shape]


@dataclass
class Settings:
    """What every pair's scoring shares: device, profile (for `--style_image`'s loader), how many sampled styles,
    the smallest label counted, the label-fidelity judge (None: off)."""

    device: Any
    prof: Any
    style_samples: int = 8
    min_voxels: int = MIN_VOXELS
    segment: Callable[[np.ndarray], np.ndarray] | None = None


def image_scores(real: np.ndarray, fakes: dict[str, np.ndarray]) -> dict[str, float]:
    """SSIM and PSNR (MONAI) of each synthetic image against the phantom image, on the phantom's intensity range."""
    from monai.metrics import PSNRMetric, SSIMMetric

    real_t = torch.as_tensor(real)[None, None]
    data_range = float(real_t.max().clamp_min(1e-6))
    scores = {}
    for tag, fake in fakes.items():
        fake_t = torch.as_tensor(fake)[None, None].clamp(0, data_range)
        scores[f"ssim_{tag}"] = float(SSIMMetric(spatial_dims=3, data_range=data_range)(fake_t, real_t).mean())
        scores[f"psnr_{tag}"] = float(PSNRMetric(max_val=data_range)(fake_t, real_t).mean())
    return scores


@torch.no_grad()
def encoded_image(network, pv: np.ndarray, contrast: str, style: torch.Tensor, device) -> np.ndarray:
    """The image of `pv` with the style code the encoder gives `style` (1, 1, X, Y, Z): its mean, as inference does."""
    mu, _ = network.encode(style.to(device))
    return generate_images(network, pv, [contrast], mu, device)[contrast]


@torch.no_grad()
def sampled_images(network, pv: np.ndarray, contrast: str, seed: int, k: int, device) -> list[np.ndarray]:
    """`k` images of `pv` with style codes drawn one after another from one generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    return [
        generate_images(network, pv, [contrast], network.sample_z(1, generator=g), device)[contrast] for _ in range(k)
    ]


def transfer_scores(network, pv: np.ndarray, contrast: str, ref: tuple[dict, dict], sampled: list, cfg) -> dict:
    """Style transfer from the reference pair `ref` (its preprocessed item, its datalist pair) onto `pv`: whether
    the transferred image's profile is closer to the reference image's than `sampled`'s median profile is."""
    labels = pv_to_int(pv)
    ref_item, ref_pair = ref
    style = load_style_image(ref_pair["image"], cfg.prof)  # the --style_image path: any grid, p99 scaling
    transferred = style_profile(encoded_image(network, pv, contrast, style, cfg.device), labels, cfg.min_voxels)
    reference = style_profile(_np(ref_item["image"])[0], pv_to_int(_np(ref_item["pv"])), cfg.min_voxels)
    median = median_profile([style_profile(s, labels, cfg.min_voxels) for s in sampled])
    closer, d_t, d_s = transfer_closer(transferred, reference, median)
    return {"style_transfer_fraction": closer, "style_transfer_distance": d_t, "style_sampled_median_distance": d_s}


@torch.no_grad()
def score_pair(network, item: dict, contrast: str, seed: int, cfg: Settings, ref: tuple | None = None) -> dict:
    """One held-out (label map, phantom image) pair -> {"scalars": {figure: value}, "per_label": {figure: {label:
    value}}}: SSIM/PSNR, tissue errors (encoded and first sampled style), Wasserstein, Dice with `cfg.segment`,
    the profile spreads of sampled styles and phantom scanners, and style transfer from `ref` (None: skipped)."""
    pv, real = _np(item["pv"]), _np(item["image"])[0]
    labels, mv = pv_to_int(pv), cfg.min_voxels
    enc = encoded_image(network, pv, contrast, torch.as_tensor(real)[None, None], cfg.device)
    sampled = sampled_images(network, pv, contrast, seed, cfg.style_samples, cfg.device)
    scalars = image_scores(real, {"encoded": enc, "sampled": sampled[0]})
    per_label = {
        "tissue_error_sampled": tissue_errors(sampled[0], real, labels, mv),
        "tissue_error_encoded": tissue_errors(enc, real, labels, mv),
        "tissue_wasserstein": tissue_distances(real, sampled[0], labels),
    }
    if cfg.segment is not None:
        per_label["dice_real"] = dice_per_label(cfg.segment(real), labels)
        per_label["dice_synthetic"] = dice_per_label(cfg.segment(sampled[0]), labels)
    # the renderer's own scanner-to-scanner floor: another rendering of this map against the phantom image
    renders = phantom_renderings(pv, contrast, seed, max(2, cfg.style_samples))
    per_label["tissue_error_phantom"] = tissue_errors(renders[0], real, labels, mv)
    scalars["style_spread_generated"] = profile_spread([style_profile(s, labels, mv) for s in sampled])
    scalars["style_spread_phantom"] = profile_spread([style_profile(r, labels, mv) for r in renders])
    if ref is not None:
        scalars.update(transfer_scores(network, pv, contrast, ref, sampled, cfg))
    return {"scalars": scalars, "per_label": per_label}


def summarise_contrast(records: list[dict]) -> dict:
    """One contrast's pairs -> its figures: scalars averaged over pairs; per-label figures averaged per label, then
    over labels; the label-fidelity ratios, the style-transfer pair count and the diversity ratio."""
    out: dict[str, Any] = {"num_pairs": len(records)}
    for name in sorted({k for r in records for k in r["scalars"]}):
        out[name] = _mean(r["scalars"].get(name) for r in records)
    for name in sorted({k for r in records for k in r["per_label"]}):
        per = {lab.key: _mean(r["per_label"].get(name, {}).get(lab.key) for r in records) for lab in LABELS[1:]}
        per = {k: v for k, v in per.items() if v is not None}
        mean_key, per_key = LEGACY_KEYS.get(name, (name, f"{name}_per_label"))
        out[mean_key], out[per_key] = _mean(per.values()), per
    if "dice_real" in out:
        out.update(fidelity_ratios(out["dice_real_per_label"], out["dice_synthetic_per_label"]))
    out["style_transfer_pairs"] = sum(r["scalars"].get("style_transfer_fraction") is not None for r in records)
    gen, ph = out.get("style_spread_generated"), out.get("style_spread_phantom")
    out["style_diversity_ratio"] = round(gen / ph, 4) if gen is not None and ph else None
    return out


def targets(results: dict) -> dict:
    """Per contrast, each of issue 16's targets: met (True), missed (False) or not measured (None)."""

    def met(value, op, bound):
        return None if value is None else bool(value <= bound if op == "<=" else value >= bound)

    return {
        name: {f"{fig} {op} {bound}": met(r.get(fig), op, bound) for fig, op, bound in TARGETS}
        for name, r in results.items()
    }


def references(pairs: list[dict]) -> list[int | None]:
    """For each pair, the index of its style reference: the next pair of the same contrast from another subject
    (cyclic); None where the contrast has pairs of one subject only."""
    by_contrast = defaultdict(list)
    for i, p in enumerate(pairs):
        by_contrast[p["contrast_name"]].append(i)
    ref: list[int | None] = [None] * len(pairs)
    for idx in by_contrast.values():
        for n, i in enumerate(idx):
            others = [j for j in idx[n + 1 :] + idx[:n] if pairs[j]["id"] != pairs[i]["id"]]
            ref[i] = others[0] if others else None
    return ref


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: dict) -> None:
    """The figures per contrast, then the per-label tissue error and Dice ratio, as readable tables."""
    cols = [
        ("pairs", "num_pairs", "d"),
        ("err_smp", "tissue_error_sampled", ".3f"),
        ("err_enc", "tissue_error_encoded", ".3f"),
        ("err_ph", "tissue_error_phantom", ".3f"),
        ("ssim_enc", "ssim_encoded", ".3f"),
        ("ssim_smp", "ssim_sampled", ".3f"),
        ("psnr_enc", "psnr_encoded", ".2f"),
        ("psnr_smp", "psnr_sampled", ".2f"),
        ("dice_ph", "dice_real", ".3f"),
        ("dice_syn", "dice_synthetic", ".3f"),
        ("ratio", "dice_ratio", ".3f"),
        ("ratio_min", "dice_ratio_min", ".3f"),
        ("transfer", "style_transfer_fraction", ".2f"),
        ("spread_gen", "style_spread_generated", ".4f"),
        ("spread_ph", "style_spread_phantom", ".4f"),
        ("div_ratio", "style_diversity_ratio", ".3f"),
    ]
    print("contrast " + " ".join(f"{h:>10s}" for h, _, _ in cols), flush=True)
    for name, r in results.items():
        print(f"{name:8s} " + " ".join(f"{_fmt(r.get(k), s):>10s}" for _, k, s in cols), flush=True)
    print("columns (metrics.json keys): " + ", ".join(f"{h} = {k}" for h, k, _ in cols), flush=True)
    keys = [lab.key for lab in LABELS[1:]]
    for title, fig in (
        ("tissue error (sampled, SD)", "tissue_error_sampled_per_label"),
        ("Dice ratio", "dice_ratio_per_label"),
    ):
        print(f"{title}:\ncontrast " + " ".join(f"{k:>9s}" for k in keys), flush=True)
        for name, r in results.items():
            print(f"{name:8s} " + " ".join(f"{_fmt(r.get(fig, {}).get(k)):>9s}" for k in keys), flush=True)


def check_options(profile, max_pairs, seed, overwrite, style_samples, min_voxels, label_fidelity, output_dir) -> dict:
    """Every option read and checked (the first bad one is the error) before anything is loaded."""
    opts = {
        "prof": get_profile(profile),
        "max_pairs": parse_int(max_pairs, "max_pairs", 0, 10**6),
        "seed": parse_int(seed, "seed", 0, 2**31 - 1),
        "overwrite": parse_bool(overwrite, "overwrite"),
        "style_samples": parse_int(style_samples, "style_samples", 2, 1000),
        "min_voxels": parse_int(min_voxels, "min_voxels", 1, 10**9),
        "label_fidelity": parse_bool(label_fidelity, "label_fidelity"),
    }
    if output_dir is None or not str(output_dir).strip():
        raise InputError("output_dir is not set; accepted: a writable folder (--output_dir eval/)")
    return opts


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
    profile: str = "default",
    style_samples: Any = 8,
    min_voxels: Any = MIN_VOXELS,
    label_fidelity: Any = True,
) -> dict:
    """Figures per contrast over the held-out pairs of `datalist[key]` (the first `max_pairs`; 0: all); writes
    `<output_dir>/metrics.json` and prints them. `segmenter` builds the label-fidelity judge (with `label_fidelity`)."""
    t0 = time.perf_counter()
    opts = check_options(profile, max_pairs, seed, overwrite, style_samples, min_voxels, label_fidelity, output_dir)
    pairs = contrast_pairs(datalist, key, contrasts)
    pairs = pairs[: opts["max_pairs"]] if opts["max_pairs"] else pairs
    network = load_generator(network, ckpt_path, device)
    seg = segmenter() if segmenter is not None and opts["label_fidelity"] else None
    out = prepare_output_dir(output_dir, ["metrics.json"], opts["overwrite"])
    cfg = Settings(device, opts["prof"], opts["style_samples"], opts["min_voxels"], seg)
    records = defaultdict(list)
    for i, (pair, r) in enumerate(zip(pairs, references(pairs), strict=True)):
        pair_seed = int(np.random.SeedSequence([opts["seed"], i]).generate_state(1)[0])
        ref = (preprocessing(dict(pairs[r])), pairs[r]) if r is not None else None
        item = preprocessing(dict(pair))
        records[pair["contrast_name"]].append(score_pair(network, item, pair["contrast_name"], pair_seed, cfg, ref))
    results = {name: summarise_contrast(recs) for name, recs in records.items()}
    report = {
        "datalist": str(Path(datalist).resolve()),
        "key": key,
        "model_version": model_version,
        "ckpt_path": str(Path(ckpt_path).resolve()),
        "seed": opts["seed"],
        "style_samples": cfg.style_samples,
        "min_voxels": cfg.min_voxels,
        "segmenter": seg is not None,
        "per_contrast": results,
        "targets": targets(results),
        "time_s": round(time.perf_counter() - t0, 2),
    }
    save_json(out / "metrics.json", report)
    print_table(results)
    print(f"metrics: {out / 'metrics.json'}", flush=True)
    return report
