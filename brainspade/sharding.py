"""Mass generation split over processes/ranks: deterministic per-sample seeds, resumable, one datalist.

A sample's seed depends only on (base seed, sample index), never on the shard count, so 1 or 16
processes produce the same samples. A sample counts as done once its sidecar JSON exists (written
last, atomically), so a killed run resumes without duplicating or keeping half-written samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .io import save_json


def sample_id(index: int) -> str:
    return f"sample-{int(index):06d}"


def sample_seed(seed: int, index: int) -> int:
    """Independent 31-bit seed of sample `index` (SeedSequence spreads neighbouring indices apart)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def shard_indices(num_samples: int, num_shards: int, shard: int, first_index: int = 0) -> list[int]:
    """Round-robin share of shard `shard` (0-based) of sample indices first_index..first_index+num_samples-1."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} outside 0..{num_shards - 1}")
    return [first_index + i for i in range(shard, num_samples, num_shards)]


def completed(output_dir: str | Path, indices: Iterable[int]) -> set[int]:
    """Indices whose sidecar JSON exists and parses (partial samples have no sidecar yet)."""
    done = set()
    for i in indices:
        f = Path(output_dir) / f"{sample_id(i)}.json"
        try:
            json.loads(f.read_text())
            done.add(i)
        except (OSError, json.JSONDecodeError):
            continue
    return done


def pending(output_dir: str | Path, indices: Sequence[int]) -> list[int]:
    done = completed(output_dir, indices)
    return [i for i in indices if i not in done]


def write_datalist(output_dir: str | Path, key: str = "training") -> Path:
    """MONAI datalist of every finished sample in `output_dir` (paths relative to it), from the sidecars."""
    out = Path(output_dir)
    entries = []
    for side in sorted(out.glob("sample-*.json")):
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError:
            continue
        sid = side.stem
        entry = {"id": sid, "label": f"{sid}_label.nii.gz"}
        for f in sorted(out.glob(f"{sid}_*.nii.gz")):
            name = f.name[len(sid) + 1:-len(".nii.gz")]
            if name != "label":
                entry[name] = f.name
        for k, v in (meta.get("achieved") or {}).items():
            entry[k] = v
        entry["synthetic"] = True
        entries.append(entry)
    return save_json(out / "datalist.json", {key: entries})
