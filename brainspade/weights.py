"""Reading weight files, the same way in every bundle: `torch.load(weights_only=True)` (nothing in a file is
executed), and one clear error line for a missing, damaged or mismatched file instead of a traceback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

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
        first = str(exc).strip().splitlines()[0][:160]
        raise InputError(f"{what} {str(path)!r} does not fit this network ({first}); accepted: {accepted}") from None
