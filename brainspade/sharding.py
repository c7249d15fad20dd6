"""Mass generation split over processes/ranks: deterministic per-sample seeds, resumable, one datalist.

A sample's seed depends only on (base seed, sample index), never on the shard count, so 1 or 16
processes produce the same samples. A sample counts as done once its sidecar JSON exists (written
last, atomically), so a killed run resumes without duplicating or keeping half-written samples; a finished
sample made with other settings is refused rather than mixed into the dataset.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cli import parse_int
from .contrasts import CONTRASTS
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


def resolve_shard(shard: Any = None, num_shards: Any = None) -> tuple[int, int]:
    """(shard, num_shards) from the options, else from torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if shard is None and num_shards is None:
        shard, num_shards = os.environ.get("RANK", 0), os.environ.get("WORLD_SIZE", 1)
        where = "RANK/WORLD_SIZE"
    else:
        shard, num_shards = (0 if shard is None else shard), (1 if num_shards is None else num_shards)
        where = "--shard/--num_shards"
    n = parse_int(num_shards, "num_shards", 1, 4096)
    try:
        i = parse_int(shard, "shard", 0, n - 1)
    except InputError:
        raise InputError(
            f"shard={shard!r} is not accepted for num_shards={n} ({where}); accepted: 0..{n - 1}"
        ) from None
    return i, n


def sample_files(sid: str, contrasts: list[str], preview: bool) -> list[str]:
    """A sample's files; its sidecar JSON comes last (written last: it marks the sample complete)."""
    return (
        [f"{sid}_{c}.nii.gz" for c in contrasts]
        + [f"{sid}_label.nii.gz"]
        + ([f"{sid}.png"] if preview else [])
        + [f"{sid}.json"]
    )


def remove_sample(output_dir: str | Path, sid: str) -> None:
    """Delete every file of sample `sid` (its sidecar first, so a kill mid-way leaves it unfinished, not mixed)."""
    out = Path(output_dir)
    (out / f"{sid}.json").unlink(missing_ok=True)
    for name in sample_files(sid, list(CONTRASTS), True):
        (out / name).unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    """Digest of a file (the generator's weights), recorded in every sidecar so resume refuses other weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonable(obj: Any) -> Any:
    """`obj` as it reads back from a sidecar (tuples become lists, keys strings), so resume compares like with like."""
    return json.loads(json.dumps(obj, default=str))


def check_inputs_not_outputs(out: Path, inputs: list[str], names: Callable[[], Iterable[str]]) -> None:
    """Refuse a run whose outputs would replace one of its own inputs (an input is never an output).

    `names` gives the run's output file names; it is only asked for when an input lies in `out` itself (a
    million-sample run does not list its names to check a label file kept elsewhere)."""
    inside = [p for p in inputs if Path(p).resolve().parent == out.resolve()]
    if not inside:
        return
    planned = set(names())
    for path in inside:
        name = Path(path).resolve().name
        if name in planned:
            raise InputError(
                f"input {str(path)!r} would be overwritten by this run's output {name!r}; accepted: "
                "an input outside output_dir or under another name (e.g. --output_dir elsewhere)"
            )


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


def complete_sample(out: Path, sid: str, contrasts: list[str], preview: bool, expect: dict) -> bool:
    """True when `sid` was finished by an earlier run with the same settings (resume skips it).

    A sample without a readable sidecar is unfinished (a killed run) and is made again. A finished one
    made with other settings (seed, profile, label source, missing contrasts) is refused rather than
    mixed into this dataset.
    """
    side = read_sidecar(out / f"{sid}.json")
    if side is None:  # missing, unreadable, or not a JSON object: unfinished
        return False
    for key, val in expect.items():
        if side.get(key) != val:
            raise InputError(
                f"output_dir {str(out)!r} already holds {sid} made with {key}={side.get(key)!r}, not "
                f"{val!r}; accepted: the same settings to resume, a new folder, or --overwrite true"
            )
    missing = [c for c in contrasts if c not in (side.get("contrast") or [])]
    if missing:
        raise InputError(
            f"output_dir {str(out)!r} already holds {sid} without contrast {missing[0]!r}; accepted: the "
            "same --contrast to resume, a new folder, or --overwrite true"
        )
    return sidecar_files_exist(out, side) and all((out / f).is_file() for f in sample_files(sid, contrasts, preview))


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


def merge_datalist(output_dir: Any, num_samples: Any = 1, first_index: Any = 0) -> Path:
    """Write `<output_dir>/datalist.json` once every sample first_index..first_index+num_samples-1 is complete."""
    out = Path(str(output_dir))
    n = parse_int(num_samples, "num_samples", 1, 10_000_000)
    first = parse_int(first_index, "first_index", 0, 10**9)
    todo = pending(out, list(range(first, first + n)))
    if todo:
        raise InputError(
            f"output_dir {str(out)!r} lacks {len(todo)} of {n} samples (first missing: {sample_id(todo[0])}); "
            "accepted: --merge once every shard has finished (rerun the missing shards, they resume)"
        )
    path = write_datalist(out)
    print(f"datalist of {n} sample(s): {path}", flush=True)
    return path


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
