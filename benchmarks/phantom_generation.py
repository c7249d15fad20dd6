"""Benchmark (d): phantom generation rate on this machine, against the 100-subjects-in-5-minutes target.

    python benchmarks/phantom_generation.py [--num_subjects 100] [--workers 2]

Prints one JSON line and writes benchmarks/results/phantom_generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from brainspade.io import save_json
from brainspade.phantom import generate_dataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num_subjects", type=int, default=100)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--profile", default="default")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_dataset(Path(tmp) / "d", a.num_subjects, a.profile, seed=0, workers=a.workers)
        dt = time.perf_counter() - t0
    target_s = 300.0 * a.num_subjects / 100
    res = {
        "benchmark": "phantom_generation",
        "profile": a.profile,
        "subjects": a.num_subjects,
        "workers": a.workers,
        "seconds": round(dt, 1),
        "subjects_per_min": round(a.num_subjects / dt * 60, 1),
        "target_seconds": target_s,
        "ratio_to_target": round(dt / target_s, 3),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    print(json.dumps(res))
    save_json(Path(__file__).parent / "results" / "phantom_generation.json", res)


if __name__ == "__main__":
    main()
