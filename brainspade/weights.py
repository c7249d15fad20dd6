"""Reading weight files, the same way in every bundle: `torch.load(weights_only=True)` (nothing in a file is
executed), and one clear error line for a missing, damaged or mismatched file instead of a traceback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .bundle import latest_checkpoint
from .cli import parse_bool
from .errors import InputError


def read_weights(path: str | Path, what: str, accepted: str, map_location="cpu") -> Mapping:
    """The dict a weight file holds (a state dict, or a dict holding one), or InputError naming `what`."""
    p = Path(str(path))
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist; accepted: {accepted}")
    try:
        obj = torch.load(str(p), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, non-torch or pickled-code files
        raise InputError(
            f"{what} {str(p)!r} is not a readable weights file ({type(exc).__name__}); accepted: {accepted}"
        ) from None
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f"{what} {str(p)!r} holds {type(obj).__name__}, not a state dict; accepted: {accepted}")
    return obj


def state_dict_in(obj: Mapping, keys: Sequence[str]) -> Mapping:
    """The state dict under the first of `keys` that holds one (a training checkpoint, an exported file), else
    `obj` itself (a plain state dict)."""
    for key in keys:
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    return obj


def load_into(network: torch.nn.Module, state: Mapping, path: str | Path, what: str, accepted: str) -> None:
    """Load `state` into `network` (unwrapping DistributedDataParallel) exactly, or InputError naming `what`."""
    target = getattr(network, "module", network)
    try:
        target.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        first = " ".join(lines[:2])[:200]  # torch's first line only says "Error(s) in loading state_dict for X:"
        raise InputError(f"{what} {str(path)!r} does not fit this network ({first}); accepted: {accepted}") from None


RESUME_ACCEPTED = (
    "the network settings the run was started with (profile, channel widths, options that add layers), "
    "or a new run folder"
)


def resumable_checkpoint(
    ckpt_dir: str | Path,
    networks: Mapping[str, torch.nn.Module],
    pattern: str = "*.pt",
    enabled: bool | str = True,
    accepted: str = RESUME_ACCEPTED,
) -> str | None:
    """The checkpoint a restarted training run resumes from (`bundle.latest_checkpoint`), or None for a fresh run
    (none there, or `enabled` off: parsed with `cli.parse_bool`, so `--resume false` is off). Checked before the
    run builds or writes anything else: readable, and holding under each key of `networks` weights that load into
    that network exactly. A run resumed with other network settings is refused with one InputError line, not
    Ignite's traceback once training has started."""
    path = latest_checkpoint(ckpt_dir, pattern) if parse_bool(enabled, "resume") else None
    if path is None:
        return None
    state = read_weights(path, "checkpoint", accepted)
    for key, net in networks.items():
        if not isinstance(state.get(key), Mapping):
            raise InputError(f"checkpoint {path!r} holds no {key!r} weights; accepted: {accepted}")
        load_into(net, state[key], path, f"checkpoint ({key})", accepted)
    return path
