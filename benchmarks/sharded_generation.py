"""Benchmark: sharded generation, N pairs by 1 process vs the same N split over P processes (--shard/--num_shards),
started at once; prints the speed-up and the parallel efficiency (speed-up / P), and checks the P-process output
holds exactly the 1-process samples (same files, same voxels).

    python benchmarks/sharded_generation.py                                  # default profile, shipped weights
    python benchmarks/sharded_generation.py --profile tiny --num_samples 4   # smoke mode, seconds

Each process pays Python/MONAI start-up (~10 s) once, so efficiency grows with samples per process. Threads per
process: --threads (default: cores / P, so both runs use the same cores). Writes
benchmarks/results/sharded_generation.json (sharded_generation_tiny.json in smoke mode).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from _bundle_run import (
    concurrent,
    config_files,
    machine,
    main_command,
    overrides_for,
    workdir,
    write_override,
    write_result,
)


def _digest(folder: Path) -> dict[str, str]:
    """Voxel content of every NIfTI (headers hold no time stamps, but compare voxels to be safe)."""
    import nibabel as nib
    import numpy as np

    return {
        f.name: hashlib.sha1(np.asarray(nib.load(str(f)).dataobj).tobytes()).hexdigest()
        for f in sorted(folder.glob("sample-*.nii.gz"))
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="default", help="default (shipped weights) or tiny (smoke test)")
    p.add_argument("--num_samples", type=int, default=8)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / processes)")
    p.add_argument("--output", default=None)
    a = p.parse_args()
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.processes)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with workdir() as tmp:
        work = Path(tmp)
        over = overrides_for(a.profile, work)
        files = [*config_files(a.profile), *([write_override(over, work / "over.json")] if over else [])]
        opts = {"num_samples": a.num_samples, "seed": 0, "preview": False}
        t1 = concurrent([main_command(files, output_dir=work / "one", **opts)], env)
        tp = concurrent(
            [
                main_command(files, output_dir=work / "many", shard=i, num_shards=a.processes, **opts)
                for i in range(a.processes)
            ],
            env,
        )
        same = _digest(work / "one") == _digest(work / "many") and (work / "many" / "datalist.json").is_file()
        pair_s = [json.loads(f.read_text())["time_s"] for f in sorted((work / "one").glob("sample-*.json"))]
        per_shard = [0.0] * a.processes
        for f in (work / "many").glob("sample-*.json"):
            side = json.loads(f.read_text())
            per_shard[side["shard"][0]] += side["time_s"]
    speedup = t1 / tp
    res = {
        "benchmark": "sharded_generation",
        "profile": a.profile,
        "num_samples": a.num_samples,
        "processes": a.processes,
        "threads_per_process": threads,
        "one_process_s": round(t1, 2),
        "sharded_s": round(tp, 2),
        "speedup": round(speedup, 2),
        "efficiency": round(speedup / a.processes, 3),
        "mean_pair_s": round(sum(pair_s) / len(pair_s), 3),
        # start-up excluded: the samples' own times, 1 process vs the slowest shard (core contention only)
        "generation_efficiency": round(sum(pair_s) / (a.processes * max(per_shard)), 3),
        "identical_samples": same,
        "machine": machine(),
    }
    print(
        f"{a.num_samples} pairs: 1 process {t1:.1f} s, {a.processes} processes {tp:.1f} s -> speed-up x{speedup:.2f}, "
        f"efficiency {speedup / a.processes:.0%}; identical samples: {same}"
    )
    write_result("sharded_generation", a.profile, res, a.output)


if __name__ == "__main__":
    main()
