"""Mass generation split over processes/ranks: deterministic per-sample seeds, resumable, one datalist.

A sample's seed depends only on (base seed, sample index), never on the shard count, so 1 or 16
processes produce the same samples. A sample counts as done once its sidecar JSON exists (written
last, atomically), so a killed run resumes without duplicating or keeping half-written samples.
"""

from __future__ import annotations

import fcntl
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
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


def read_sidecar(path: str | Path) -> dict | None:
    """A sample's sidecar as a dict, or None when it is missing, unreadable or not a JSON object (`[]`, `3`):
    such a sample counts as unfinished and is made again, never trusted."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def sidecar_files_exist(output_dir: str | Path, meta: dict | None) -> bool:
    """`meta` (a read sidecar) lists its files as plain names in `output_dir`, and every one exists."""
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not all(isinstance(f, str) for f in files.values()):
        return False
    return all(Path(f).name == f and (Path(output_dir) / f).is_file() for f in files.values())


def sample_complete(output_dir: str | Path, sid: str) -> bool:
    """The sidecar of `sid` is a JSON object and every file it lists exists (a deleted image makes it unfinished)."""
    return sidecar_files_exist(output_dir, read_sidecar(Path(output_dir) / f"{sid}.json"))


def completed(output_dir: str | Path, indices: Iterable[int]) -> set[int]:
    """Indices whose sample is complete (`sample_complete`; partial samples have no sidecar yet)."""
    return {i for i in indices if sample_complete(output_dir, sample_id(i))}


def clear_stale_parts(output_dir: str | Path, sids: Iterable[str]) -> list[str]:
    """Remove temporary files (`.<sid>_*.part*`, `.<sid>.*.part*`) that a run killed mid-write left behind for
    samples `sids`; returns their names. Called only for samples this process has claimed (SampleLocks), so no
    live writer owns them; other shards' temporary files are left alone."""
    out = Path(output_dir)
    removed = []
    for sid in sids if out.is_dir() else []:
        for f in list(out.glob(f".{sid}_*.part*")) + list(out.glob(f".{sid}.*.part*")):
            if f.is_file():
                f.unlink(missing_ok=True)
                removed.append(f.name)
    return removed


def pending(output_dir: str | Path, indices: Sequence[int]) -> list[int]:
    done = completed(output_dir, indices)
    return [i for i in indices if i not in done]


def write_datalist(output_dir: str | Path, key: str = "training") -> Path:
    """MONAI datalist of every finished sample in `output_dir` (paths relative to it), from the sidecars."""
    out = Path(output_dir)
    entries = []
    for side in sorted(out.glob("sample-*.json")):
        sid = side.stem
        meta = read_sidecar(side)
        if not sidecar_files_exist(out, meta):
            continue
        # exactly what the sidecar says this sample wrote: a stale image of an earlier run is never paired
        entry = {"id": sid, "label": meta["files"]["label"]}
        for name, f in sorted(meta["files"].items()):
            if name not in ("label", "preview"):
                entry[name] = f
        for k, v in (meta.get("achieved") or {}).items():
            entry[k] = v
        entry["synthetic"] = True
        entries.append(entry)
    return save_json(out / "datalist.json", {key: entries})


class SampleLocks:
    """Exclusive claims on samples of an output folder, so two runs never write the same sample at once.

    One lock file (`<output_dir>/.samples.lock`), one POSIX record lock per sample: a byte at an offset derived
    from the sample id. Shards of one dataset claim disjoint samples and run side by side; a second run over a
    sample another process is writing is refused before it writes anything. The kernel drops the locks when the
    process ends, however it ends, so a killed run never leaves a folder locked.
    """

    NAME = ".samples.lock"

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / self.NAME
        self._fd: int | None = None

    @staticmethod
    def offset(sid: str) -> int:
        return zlib.crc32(sid.encode("utf-8")) & 0x3FFFFFFF

    def acquire(self, sids: Iterable[str]) -> "SampleLocks":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        for sid in sids:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self.offset(sid), os.SEEK_SET)
            except OSError:
                self.release()
                raise InputError(
                    f"another run is writing {sid} into output_dir {str(self.path.parent)!r} right now; "
                    "accepted: wait for it to finish (then --resume true), or another --output_dir "
                    "(shards of one dataset: --shard i --num_shards n)"
                ) from None
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops every record lock this process holds on the file
            self._fd = None

    def __enter__(self) -> "SampleLocks":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
