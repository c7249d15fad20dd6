"""Benchmark (c): segmenter inference seconds per real 1 mm whole-brain volume (nilearn's MNI152 T1, 197x233x189)
and peak RSS, through the bundle's own configs/inference.yaml (load, reorient/resample to its grid: 1.5 mm since
0.4.0; sliding 96^3 windows since 0.4.1, invert the probabilities to the input grid, write seg + volumes JSON), against the
target of <= 10 s per volume and <= 3 GB on 2 CPU cores.

    python benchmarks/segmenter_inference.py [--volumes 5] [--threads 2]
    python benchmarks/segmenter_inference.py --quick          # smoke test: 1 timed volume

Uses bundles/segmenter/models/model.pt when present, else random weights of the same network (the time
does not depend on the weights' values; the JSON says which). The first volume is a warm-up and is reported
separately. Writes benchmarks/results/segmenter_inference.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from brainspade.io import save_json, save_nifti  # noqa: E402
from brainspade.profiles import get_profile  # noqa: E402

BUNDLE = ROOT / "bundles" / "segmenter"
TARGET_S = 10.0


def _inputs(n: int, tmp: Path, quick: bool) -> list[str]:
    """Real 1 mm whole-brain volumes: the MNI152 2009 T1, as shipped (RAS) and re-saved in another orientation,
    in turn; --quick: smooth random volumes on the default grid."""
    if not quick:
        from brainspade.realscan import write_mni_t1

        variants = ("ras_1mm", "reoriented")
        return [str(write_mni_t1(tmp / f"mni{i}_{variants[i % 2]}.nii.gz", variants[i % 2])) for i in range(n)]
    from scipy.ndimage import gaussian_filter

    prof = get_profile("default")
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        vol = gaussian_filter(rng.random(prof.shape).astype(np.float32), 3) * 1000
        out.append(str(save_nifti(tmp / f"vol{i}.nii.gz", vol, prof.affine)))
    return out


def _weights(tmp: Path) -> tuple[str, str]:
    shipped = BUNDLE / "models" / "model.pt"
    if shipped.is_file():
        return str(shipped), "shipped models/model.pt"
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    path = tmp / "random.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return str(path), "random (no models/model.pt yet)"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volumes", type=int, default=5, help="timed volumes (after one warm-up volume)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for 2 cores)")
    p.add_argument("--quick", action="store_true", help="smoke test: one volume (warm-up included), random input")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "segmenter_inference.json"))
    a = p.parse_args(argv)
    n = 1 if a.quick else max(1, a.volumes)

    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        images = _inputs(n if a.quick else n + 1, tmp, a.quick)  # quick: no separate warm-up
        ckpt, weights = _weights(tmp)
        items = [{"image": im, "id": f"v{i}"} for i, im in enumerate(images)]
        (tmp / "list.json").write_text(json.dumps({"testing": items}))
        wf = ConfigWorkflow(
            config_file=str(BUNDLE / "configs" / "inference.yaml"),
            workflow_type="inference",
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            logging_file=str(BUNDLE / "configs" / "logging.conf"),
            bundle_root=str(BUNDLE),
            datalist=str(tmp / "list.json"),
            output_dir=str(tmp / "out"),
            ckpt_path=ckpt,
        )
        wf.initialize()
        evaluator = wf.parser.get_parsed_content("evaluator")
        stamps: list[float] = []
        # the dataloader's loading/preprocessing happens between ITERATION_COMPLETED events: time them all
        evaluator.add_event_handler(Events.STARTED, lambda e: stamps.append(time.perf_counter()))
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
        wf.run()
        wf.finalize()
        written = sorted(f.name for f in (tmp / "out").glob("*_seg.nii.gz"))
    per = np.diff(stamps)
    timed = per[1:] if len(per) > 1 else per
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    res = {
        "benchmark": "segmenter_inference",
        "input": (
            "random default-grid volumes"
            if a.quick
            else "MNI152 2009 T1, 1 mm, 197x233x189 (RAS and reoriented in turn)"
        ),
        "weights": weights,
        "quick": bool(a.quick),
        "volumes": int(len(timed)),
        "threads": a.threads,
        "warmup_seconds": round(float(per[0]), 2),
        "seconds_per_volume": round(float(np.mean(timed)), 2),
        "max_seconds": round(float(np.max(timed)), 2),
        "target_seconds": TARGET_S,
        "ratio_to_target": round(float(np.mean(timed)) / TARGET_S, 3),
        "peak_rss_mb": round(rss_mb, 1),
        "target_peak_rss_mb": 3072,
        "outputs_written": len(written),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    print(json.dumps(res))
    save_json(a.output, res)
    return res


if __name__ == "__main__":
    main()
