"""Benchmark (b): the main command end to end, one image + label pair, default sampler vs label_ldm's reference
sampler (PNDM, 300 steps), in one run on one machine: wall time, the pair's own time (from its sidecar, without
the ~10 s of Python/MONAI start-up) and peak RSS of the process, with ratios.

    python benchmarks/end_to_end.py                   # default profile, shipped weights (lead, after training)
    python benchmarks/end_to_end.py --profile tiny    # smoke mode: tiny untrained weights, seconds

Writes benchmarks/results/end_to_end.json (end_to_end_tiny.json in smoke mode). Targets: <= 20 s/pair, <= 3 GB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _bundle_run import (
    config_files,
    machine,
    main_command,
    measured,
    overrides_for,
    workdir,
    write_override,
    write_result,
)


def _one(override_files: list[str], out: Path, contrast: str, threads: int) -> dict:
    m = measured(
        main_command(override_files, output_dir=out, contrast=contrast, seed=0),
        env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
    )
    side = json.loads((out / "sample-000000.json").read_text())
    return {
        "wall_s": round(m["wall_s"], 2),
        "pair_s": side["time_s"],
        "label_s": side.get("label_ldm", {}).get("time_s"),
        "peak_rss_mb": round(m["peak_rss_mb"], 1),
        "sampler": side["label_ldm"].get("sampler"),
        "steps": side["label_ldm"].get("steps"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="default", help="default (shipped weights) or tiny (smoke test)")
    p.add_argument("--contrast", default="t1")
    p.add_argument("--reference", default="pndm300", help="label_ldm sampling setting to compare with")
    p.add_argument(
        "--reference_retries",
        type=int,
        default=0,
        help="label verification retries of the reference row (0: one attempt; on a CPU each costs minutes)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=None)
    a = p.parse_args()
    with workdir() as tmp:
        work = Path(tmp)
        over = overrides_for(a.profile, work)
        if over:  # smoke mode: the default sampler with its own step count (the test overrides use 2 steps)
            over = {**over, "label_ldm_extra": {**over["label_ldm_extra"], "steps": None}}
        base = [*config_files(a.profile), *([write_override(over, work / "base.json")] if over else [])]
        ref_over = {
            **over,
            "label_ldm_extra": {
                **over.get("label_ldm_extra", {}),
                "sampling": a.reference,
                "steps": None,
                "max_retries": a.reference_retries,
            },
        }
        ref = [*config_files(a.profile), write_override(ref_over, work / "ref.json")]
        default = _one(base, work / "default", a.contrast, a.threads)
        reference = _one(ref, work / "reference", a.contrast, a.threads)
    ratios = {k: round(reference[k] / max(default[k], 1e-9), 2) for k in ("wall_s", "pair_s", "peak_rss_mb")}
    res = {
        "benchmark": "end_to_end",
        "profile": a.profile,
        "contrast": a.contrast,
        "threads": a.threads,
        "default": default,
        "reference": reference,
        "reference_over_default": ratios,
        "targets": {"pair_s": 20.0, "peak_rss_mb": 3072.0},
        # per pair: the sidecar's time (start-up is paid once per command, not per pair)
        "meets_targets": (
            (default["pair_s"] <= 20.0 and default["peak_rss_mb"] <= 3072.0) if a.profile == "default" else None
        ),
        "machine": machine(),
    }
    print(
        f"default   ({default['sampler']} {default['steps']} steps): wall {default['wall_s']} s, pair {default['pair_s']} s, "
        f"peak RSS {default['peak_rss_mb']} MB"
    )
    print(
        f"reference ({reference['sampler']} {reference['steps']} steps): wall {reference['wall_s']} s, "
        f"pair {reference['pair_s']} s, "
        f"peak RSS {reference['peak_rss_mb']} MB"
    )
    print(f"reference / default: wall x{ratios['wall_s']}, pair x{ratios['pair_s']}, RSS x{ratios['peak_rss_mb']}")
    write_result("end_to_end", a.profile, res, a.output)


if __name__ == "__main__":
    main()
