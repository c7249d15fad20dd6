"""Conditioning users can read: lesion volumes in mL, checked against what the model was trained on.

Rules (documented in docs/README.md):
- each of wmh_ml, tumour_ml, oedema_ml, enhancing_ml is null (drawn from the training distribution), 0 (absent)
  or a number inside the trained range of that lesion type (smallest to largest non-zero training volume);
  negative, non-numeric, non-finite and out-of-range values are refused with the accepted range;
- combinations: the pattern of present/absent lesion types among the values given must occur in the training
  data. In the phantom data every tumour has a core, an enhancing part and oedema, so e.g. oedema_ml > 0 with
  tumour_ml = 0 (oedema without a tumour) is refused as contradictory; WMH combine freely with tumours;
- omitted values are drawn jointly: from a training subject compatible with the given values (one of the
  nearest in log-volume), so drawn tumour parts stay plausible for the requested ones.

The network sees each volume as log(1 + mL) / log(1 + training maximum): a linear fraction of the maximum packs
the common small lesions (1-5 mL against a 36 mL maximum) next to 0, which means absent, and the first weights
ranked small tumours poorly. Weight files record the transform (`cond_transform`); files without it are linear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from brainspade.errors import InputError
from brainspade.labels import CONDITION_KEYS, LESIONS

COND_TRANSFORMS = ("linear", "log1p")


def normalise_volumes(vols_ml, cond_max, transform: str) -> np.ndarray:
    """Lesion volumes (mL) -> the network's conditioning in [0, 1] (0 = absent, 1 = the training maximum)."""
    v, m = np.asarray(vols_ml, dtype=np.float64), np.asarray(cond_max, dtype=np.float64)
    if transform == "linear":
        return v / m
    if transform == "log1p":
        return np.log1p(v) / np.log1p(m)
    raise InputError(f"conditioning transform {transform!r} is not known; accepted: {', '.join(COND_TRANSFORMS)}")


def _fmt(v: float) -> str:
    return f"{v:.2f}"


class ConditionSpace:
    """The trained conditioning: normalisation maxima and the training subjects' lesion volumes (mL)."""

    def __init__(
        self, cond_max, train_conditions, keys=CONDITION_KEYS, neighbours: int = 5, transform: str = "linear"
    ) -> None:
        self.keys = tuple(keys)
        self.transform = str(transform)
        self.cond_max = np.asarray(cond_max, dtype=np.float64).reshape(-1)
        self.train = np.asarray(train_conditions, dtype=np.float64).reshape(-1, len(self.keys))
        if not len(self.train):
            raise InputError("the diffusion weights carry no training conditioning table; retrain with this bundle")
        self.neighbours = int(neighbours)
        present = self.train > 0
        self.patterns = sorted({tuple(bool(v) for v in row) for row in present})
        self.ranges: dict[str, tuple[float, float] | None] = {}
        for j, k in enumerate(self.keys):
            vals = self.train[present[:, j], j]
            # rounded outwards to 0.01 mL so the message states exactly what is accepted
            self.ranges[k] = (
                (math.floor(vals.min() * 100) / 100, math.ceil(vals.max() * 100) / 100) if len(vals) else None
            )

    def accepted(self, key: str) -> str:
        r = self.ranges[key]
        return (
            "0 (absent) only: never present in the training data"
            if r is None
            else f"0 (absent) or {_fmt(r[0])} to {_fmt(r[1])} mL (the trained range), or null to draw it"
        )

    def describe_pattern(self, pattern) -> str:
        names = [les for les, p in zip(LESIONS, pattern, strict=True) if p]
        return "+".join(names) if names else "none (healthy)"

    def parse(self, values: Mapping[str, object]) -> dict[str, float | None]:
        """Validate user values (None, numbers or numeric strings) -> {key: float or None}."""
        out: dict[str, float | None] = {}
        for k in self.keys:
            raw = values.get(k)
            if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
                out[k] = None
                continue
            if isinstance(raw, bool):
                raise InputError(f"{k}={raw!r} is not a volume; accepted: {self.accepted(k)}")
            try:
                v = float(raw)  # numbers and numeric strings from the command line
            except (TypeError, ValueError):
                raise InputError(f"{k}={raw!r} is not a number; accepted: {self.accepted(k)}") from None
            if not math.isfinite(v):
                raise InputError(f"{k}={raw!r} is not finite; accepted: {self.accepted(k)}")
            if v < 0:
                raise InputError(f"{k}={v:g} is negative; accepted: {self.accepted(k)}")
            if v > 0:
                r = self.ranges[k]
                if r is None or not (r[0] <= v <= r[1]):
                    raise InputError(f"{k}={v:g} mL is outside the trained range; accepted: {self.accepted(k)}")
            out[k] = v
        self.check_combination(out)
        return out

    def compatible(self, given: Mapping[str, float | None]) -> np.ndarray:
        mask = np.ones(len(self.train), dtype=bool)
        for j, k in enumerate(self.keys):
            if given.get(k) is not None:
                mask &= (self.train[:, j] > 0) == (given[k] > 0)
        return mask

    def check_combination(self, given: Mapping[str, float | None]) -> None:
        if not self.compatible(given).any():
            asked = ", ".join(f"{k}{'>0' if given[k] > 0 else '=0'}" for k in self.keys if given.get(k) is not None)
            seen = "; ".join(self.describe_pattern(p) for p in self.patterns)
            raise InputError(
                f"the combination {asked} never occurs in the training data (tumour parts come "
                f"together: a tumour has core, enhancing part and oedema); accepted combinations "
                f"of present lesions: {seen}"
            )

    def draw(self, given: Mapping[str, float | None], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Requested volumes (mL, keys order): given values kept, omitted ones from a compatible training subject."""
        idx = np.flatnonzero(self.compatible(given))
        set_pos = [j for j, k in enumerate(self.keys) if given.get(k) is not None and given[k] > 0]
        if set_pos and len(idx) > 1:
            want = np.log([given[self.keys[j]] for j in set_pos])
            dist = np.abs(np.log(np.maximum(self.train[idx][:, set_pos], 1e-6)) - want).sum(1)
            idx = idx[np.argsort(dist, kind="stable")[: self.neighbours]]
        row = self.train[int(rng.choice(idx))]
        vols = np.array([given[k] if given.get(k) is not None else row[j] for j, k in enumerate(self.keys)])
        source = {k: ("requested" if given.get(k) is not None else "drawn") for k in self.keys}
        return vols, source

    def normalise(self, vols_ml: np.ndarray) -> np.ndarray:
        """mL -> the network's conditioning (see normalise_volumes)."""
        return normalise_volumes(vols_ml, self.cond_max, self.transform)

    def summary(self) -> dict:
        return {
            "ranges_ml": {k: (list(r) if r else None) for k, r in self.ranges.items()},
            "combinations": [self.describe_pattern(p) for p in self.patterns],
            "normalisation_max_ml": dict(zip(self.keys, self.cond_max.round(3).tolist(), strict=True)),
        }
