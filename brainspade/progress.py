"""Progress bars with ETA for long work (training, generation, experiments), quiet where nobody watches.

Shown when stderr is a terminal and `CI` is unset; `BRAINSPADE_PROGRESS=1` forces them on (e.g. in a
cluster log), `BRAINSPADE_PROGRESS=0` off. Training uses Ignite's own `ProgressBar`; loops use tqdm.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    forced = os.environ.get("BRAINSPADE_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty() and not os.environ.get("CI")


def attach_progress(engine, desc: str = "train"):
    """Attach an Ignite ProgressBar (iterations of the epoch, ETA) to `engine` when progress is enabled."""
    if progress_enabled():
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc=desc).attach(engine)
    return engine


def track(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """`items` with a tqdm bar (count, rate, ETA) when progress is enabled, else unchanged."""
    if not progress_enabled():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
