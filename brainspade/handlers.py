"""Ignite handlers the bundles share, in the form MONAI's handler lists take (an object with `attach`)."""

from __future__ import annotations

from ignite.engine import Engine, Events
from ignite.handlers import TimeLimit


class TimeLimitHandler:
    """End training cleanly after `limit_s` seconds (0 or None: no limit). The run stops after an iteration and
    its end-of-run handlers still run (final checkpoint, exports), so it can be resumed. Wraps Ignite's
    `TimeLimit`, which has no `attach` and counts from when it is built: here the clock starts at `attach`,
    just before the run."""

    def __init__(self, limit_s: float | None = None) -> None:
        self.limit_s = float(limit_s) if limit_s else 0.0

    def attach(self, engine: Engine) -> None:
        if self.limit_s > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(max(1, round(self.limit_s))))
