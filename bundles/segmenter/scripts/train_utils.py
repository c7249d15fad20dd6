"""Checkpoint helpers for resuming a training run."""

from __future__ import annotations

import re
from pathlib import Path

_ITER = re.compile(r"checkpoint_(?:epoch|iteration)=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | Path) -> str:
    """Path of the newest `checkpoint_epoch=N.pt` in `ckpt_dir`, or '' when there is none."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return ""
    found = [(int(m.group(1)), p) for p in d.glob("*checkpoint_*.pt") if (m := _ITER.search(p.name))]
    return str(max(found)[1]) if found else ""
