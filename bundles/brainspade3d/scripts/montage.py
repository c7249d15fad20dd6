"""Preview montage for the docs: one synthetic subject per pathology (healthy, WMH, tumour, both), every contrast.

Run through configs/montage.yaml (layered over inference.yaml, so the same generator, weights and chained
label_ldm sampler are used). Lesions are requested at the median training volume of each present lesion type
(tumour parts other than the core are drawn jointly with it); a pathology the label model was not trained on is
skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainspade.cli import parse_bool, parse_int
from brainspade.contrasts import CONTRASTS, check_contrasts
from brainspade.errors import InputError
from brainspade.io import prepare_output_dir
from brainspade.labels import CONDITION_KEYS
from brainspade.preview import save_montage
from brainspade.profiles import get_profile
from brainspade.sharding import sample_seed

from .generation import generate_images, load_generator, sampled_style

# pathology -> lesion types present (the rest are set to 0)
PATHOLOGIES: dict[str, tuple[str, ...]] = {
    "healthy": (),
    "wmh": ("wmh_ml",),
    "tumour": ("tumour_ml",),
    "both": ("wmh_ml", "tumour_ml"),
}
_TUMOUR_PARTS = ("oedema_ml", "enhancing_ml")


def pathology_request(space, present: tuple[str, ...]) -> dict[str, float | None]:
    """Conditioning (mL) of one pathology: median trained volume of each present type, tumour parts drawn."""
    req: dict[str, float | None] = {}
    for j, k in enumerate(CONDITION_KEYS):
        vals = space.train[space.train[:, j] > 0, j]
        if k in present:
            req[k] = float(np.median(vals)) if len(vals) else 0.0
        elif k in _TUMOUR_PARTS and "tumour_ml" in present:
            req[k] = None
        else:
            req[k] = 0.0
    return req


def pathology_montage(
    network: torch.nn.Module,
    ckpt_path: str,
    device,
    profile: str,
    label_sampler: Callable[[], Any],
    contrast: Any = None,
    seed: Any = 0,
    path: Any = "montage.png",
    overwrite: Any = False,
) -> str:
    """One row per pathology (label map + every contrast, sampled style) in one PNG at `path`; returns its path.

    Each row has its own seed from (seed, row) and its style code from that seed's style stream, as the main
    command's samples do, so the montage shows what `inference.yaml` would make."""
    prof = get_profile(profile)
    contrasts = check_contrasts(contrast if contrast else list(CONTRASTS))
    base_seed = parse_int(seed, "seed", 0, 2**31 - 1)
    overwrite = parse_bool(overwrite, "overwrite")
    if not path or not str(path).strip():
        raise InputError("montage_path is not set; accepted: a .png file path")
    out = Path(str(path))
    prepare_output_dir(out.parent, [out.name], overwrite)
    network = load_generator(network, ckpt_path, device)
    sampler = label_sampler()
    sampler.load()
    rows = []
    for i, (name, present) in enumerate(PATHOLOGIES.items()):
        s = sample_seed(base_seed, i)
        try:
            smp = next(sampler.iter_samples(num_samples=1, seed=s, **pathology_request(sampler.space, present)))
        except InputError as exc:
            print(f"{name}: skipped ({exc})", flush=True)
            continue
        z, _ = sampled_style(network, s)
        images = generate_images(network, np.asarray(smp["pv"], dtype=np.float32), contrasts, z, device)
        rows.append((name, images, np.asarray(smp["labels"])))
        print(f"{name}: achieved {smp['achieved']}", flush=True)
    if not rows:
        raise InputError("no pathology could be sampled; accepted: label_ldm weights trained on the phantom data")
    save_montage(out, rows)
    print(f"montage ({len(rows)} pathologies x {len(contrasts)} contrasts, profile {prof.name}): {out}", flush=True)
    return str(out)
