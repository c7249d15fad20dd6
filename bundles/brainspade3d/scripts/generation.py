"""Running the trained generator, the same way in every workflow (inference, montage, evaluation): its weights,
checked before use; a sample's sampled style code; the images of one label map in each contrast."""

from __future__ import annotations

import numpy as np
import torch

from brainspade.contrasts import CONTRASTS
from brainspade.sharding import sample_seed
from brainspade.weights import load_into, read_weights, state_dict_in

GENERATOR_ACCEPTED = "models/model.pt or a file written by train.yaml (run_dir/model.pt), given as --ckpt_path"
GENERATOR_FITS = "weights trained with the same configs (profile, channel widths)"
STYLE_STREAM = 7919  # style seed of a sample = sample_seed(sample's seed, STYLE_STREAM): independent of its noise


def load_generator(network: torch.nn.Module, path: str, device) -> torch.nn.Module:
    """Load generator weights (plain state dict, or a training checkpoint's 'generator') with weights_only=True."""
    state = read_weights(path, "generator weights", GENERATOR_ACCEPTED)
    load_into(network, state_dict_in(state, ("generator",)), path, "generator weights", GENERATOR_FITS)
    return network.to(device).eval()


IDENTITY_AT_START = ("film.", "regions.")  # zero-initialised style paths (networks.py): the identity until trained


def load_initial_generator(network: torch.nn.Module, path: str, device) -> torch.nn.Module:
    """A fine-tune's starting weights (`init_weights`): as `load_generator`, except that weights written before a
    zero-initialised style path existed (`IDENTITY_AT_START`) load too, that path starting as the identity, so the
    fine-tune starts from exactly the image the weights made. Any other mismatch is refused as before."""
    state = dict(state_dict_in(read_weights(path, "generator weights", GENERATOR_ACCEPTED), ("generator",)))
    own = getattr(network, "module", network).state_dict()
    new = [k for k in own if k not in state]
    if new and all(k.startswith(IDENTITY_AT_START) for k in new):
        state.update({k: own[k] for k in new})
    load_into(network, state, path, "generator weights", GENERATOR_FITS)
    return network.to(device)


def sampled_style(network: torch.nn.Module, seed: int) -> tuple[torch.Tensor, int]:
    """(style code, its seed) of the sample with seed `seed`: drawn from a stream of its own, so the style does
    not change with the label model's use of the sample's noise."""
    style_seed = sample_seed(seed, STYLE_STREAM)
    return network.sample_z(1, generator=torch.Generator().manual_seed(style_seed)), style_seed


@torch.no_grad()
def generate_images(network, pv: np.ndarray, contrasts: list[str], z: torch.Tensor, device) -> dict[str, np.ndarray]:
    """One label map, one style code -> {contrast: (X, Y, Z) image}. On CUDA under bf16 autocast: half the
    activation memory of the paper-size generator; the CPU path stays float32."""
    pv_t = torch.as_tensor(pv, dtype=torch.float32, device=device)[None]
    out = {}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        for c in contrasts:
            idx = torch.tensor([CONTRASTS.index(c)], device=device)
            out[c] = network.synthesise(pv_t, idx, z.to(device))[0, 0].float().cpu().numpy()
    return out
