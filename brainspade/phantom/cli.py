"""`python -m brainspade.phantom` / `brainspade-phantoms`: write a phantom dataset + datalist."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli import run_guarded
from ..contrasts import CONTRASTS, check_contrasts
from ..errors import InputError
from ..profiles import PROFILES
from .dataset import generate_dataset, write_montage
from .subject import PATHOLOGIES, STYLES


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m brainspade.phantom", description=__doc__)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_subjects", type=int, default=100)
    p.add_argument("--profile", choices=list(PROFILES), default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pathologies", default=",".join(PATHOLOGIES), help=f"comma list of {', '.join(PATHOLOGIES)}")
    p.add_argument("--style", choices=STYLES, default="a", help="a: training scanner, b: held-out scanner")
    p.add_argument("--contrasts", default=",".join(CONTRASTS))
    p.add_argument("--split", default="0.7,0.15,0.15", help="training,validation,test fractions")
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    p.add_argument("--first_index", type=int, default=0, help="subject numbering start (disjoint sets)")
    p.add_argument("--montage", default="", help="also write a PNG montage of one subject per pathology here")
    a = p.parse_args(argv)

    def go() -> None:
        if a.seed < 0 or a.seed > 2**32 - 1:
            raise InputError(f"--seed {a.seed} is out of range; accepted: 0..{2**32 - 1}")
        if Path(a.output_dir).exists() and not Path(a.output_dir).is_dir():
            raise InputError(f"--output_dir {a.output_dir!r} is a file; accepted: a new or existing folder")
        t0 = time.perf_counter()
        split = [float(x) for x in a.split.split(",")]
        path = generate_dataset(
            a.output_dir,
            a.num_subjects,
            a.profile,
            a.seed,
            [x.strip() for x in a.pathologies.split(",") if x.strip()],
            a.style,
            check_contrasts(a.contrasts),
            split,
            a.workers or None,
            a.first_index,
        )
        dt = time.perf_counter() - t0
        print(f"wrote {a.num_subjects} subjects + {path} in {dt:.1f} s ({a.num_subjects / dt * 60:.1f} subjects/min)")
        if a.montage:
            print(f"montage: {write_montage(path, a.montage)}")

    run_guarded(go)


if __name__ == "__main__":
    main()
