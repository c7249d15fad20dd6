"""The shipped segmenter's quality figures, against the targets it is held to, in one command:

    python bundles/segmenter/scripts/quality_report.py [--ckpt_path models/model.pt] [--output_dir runs/segmenter/quality]

1. the held-out phantom set (style b, every pathology) through `configs/evaluate.yaml`, per contrast, in each test
   condition (as rendered; exactly-zero background; 5 mm axial slices): Dice per label;
2. the real MNI152 2009 T1 through `configs/inference.yaml`, as shipped and re-saved (brainspade.realscan):
   GM and WM Dice and the time per volume.
Writes `quality.json` and `quality.md` into `--output_dir` (and, with `--docs`, into the bundle's docs folder).
`--profile` scores weights trained on another profile's grid through the same two configs (default: inference.yaml's
`profile`, the grid of the shipped weights).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parent.parent
CONFIGS = BUNDLE / "configs"
SEEN_TARGETS = {
    "csf": 0.80,
    "gm": 0.90,
    "wm": 0.90,
    "dgm": 0.80,
    "brainstem": 0.85,
    "wmh": 0.60,
    "tumour": 0.70,
    "oedema": 0.70,
    "enhancing": 0.60,
}
CONDITION_TOLERANCE = 0.05  # zero background and thick slices: within this of the as-rendered Dice
REAL_SCAN_TARGET = 0.85


def shipped_profile() -> str:
    """The grid the shipped weights work on: inference.yaml's `profile`, read from there, not kept here as a second
    copy (with 0.4.0 it moved to 1.5 mm, and a default of this script's own would have scored it on the 2 mm grid)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    return str(parser["profile"])


def _run(config_file, **overrides) -> None:
    from monai.bundle import run

    run(
        config_file=config_file,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        **overrides,
    )


def phantom_dice(
    ckpt: str, out: Path, contrasts: list[str], conditions: list[str], threads: int, profile: str | None = None
) -> dict:
    """{condition: {contrast: {label: dice}}} on the held-out style-b set (on `profile`'s grid; the shipped one)."""
    profile = profile or shipped_profile()
    result: dict = {}
    for cond in conditions:
        for con in contrasts:
            run_dir = out / "phantom" / cond / con
            _run(
                [str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")],
                bundle_root=str(BUNDLE),
                ckpt_path=ckpt,
                output_dir=str(run_dir),
                test_contrasts=[con],
                test_condition=cond,
                overwrite=True,
                torch_threads=threads,
                profile=profile,
                **{"validate#additional_metrics": {}},
            )
            table = json.loads((run_dir / "metrics_per_label.json").read_text())["per_label"]["dice"]
            result.setdefault(cond, {})[con] = {k: round(v["mean"], 4) for k, v in table.items()}
    return result


def real_scan_dice(ckpt: str, out: Path, profile: str | None = None) -> dict:
    """{variant: {gm, wm, seconds}} for the MNI152 T1 re-saved every way brainspade.realscan knows."""
    profile = profile or shipped_profile()
    import nibabel as nib

    from brainspade.realscan import VARIANTS, tissue_scores, write_mni_t1

    result = {}
    for variant in VARIANTS:
        scan = write_mni_t1(out / "real" / f"mni152_{variant}.nii.gz", variant)
        t0 = time.perf_counter()
        _run(
            str(CONFIGS / "inference.yaml"),
            bundle_root=str(BUNDLE),
            input_image=str(scan),
            ckpt_path=ckpt,
            output_dir=str(out / "real" / "seg"),
            overwrite=True,
            profile=profile,
        )
        seconds = time.perf_counter() - t0
        seg = nib.load(str(out / "real" / "seg" / f"mni152_{variant}_seg.nii.gz"))
        labels = np.asarray(seg.dataobj)
        result[variant] = {**tissue_scores(labels, seg.affine), "seconds_with_startup": round(seconds, 1)}
    return result


def read_curve(paths: str | Path) -> list[dict]:
    """The training run's validation curve (train_utils.ValidationCurve's JSON lines). Several files, comma-separated,
    are the stages of one model (a fine-tune started from the previous stage's weights): they are joined end to end,
    each stage's iterations counted on from where the previous one ended, and every row says its `stage`."""
    curve: list[dict] = []
    for stage, path in enumerate(str(paths).split(",")):
        offset = curve[-1]["iteration"] if curve else 0
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        curve += [{**row, "iteration": row["iteration"] + offset, "stage": stage} for row in rows]
    return curve


def plot_curve(curve: list[dict], png: Path) -> Path:
    """Validation Dice per label against training iterations: where training flattened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    its = [r["iteration"] for r in curve]
    for label in SEEN_TARGETS:
        ax.plot(
            its,
            [r["dice"].get(label) if r["dice"].get(label) is not None else float("nan") for r in curve],
            label=label,
        )
    ax.plot(its, [r["mean_dice"] for r in curve], "k--", lw=2, label="mean")
    for prev, row in zip(curve, curve[1:], strict=False):
        if row.get("stage", 0) != prev.get("stage", 0):  # a fine-tune starts from the previous stage's weights
            ax.axvline(prev["iteration"], color="grey", lw=1, ls=":")
    ax.set(
        xlabel="training iteration (batch of 4 patches of 64^3)",
        ylabel="validation Dice",
        ylim=(0, 1),
        title="segmenter validation (phantom validation split, every contrast)",
    )
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def judge(phantom: dict, real: dict) -> list[dict]:
    """One row per target: what was asked, what was measured, met or not."""
    rows = []
    base = phantom.get("as_rendered", {})
    for con, dice in base.items():
        for label, target in SEEN_TARGETS.items():
            value = dice.get(label)
            rows.append(
                {
                    "target": f"as rendered, {con}, {label} >= {target}",
                    "value": value,
                    "met": value is not None and math.isfinite(value) and value >= target,
                }
            )
    for cond in (c for c in phantom if c != "as_rendered"):
        for con, dice in phantom[cond].items():
            drops = {
                k: base[con][k] - v
                for k, v in dice.items()
                if k in base.get(con, {}) and v is not None and math.isfinite(v) and math.isfinite(base[con][k])
            }
            worst = max(drops, key=drops.get) if drops else None
            rows.append(
                {
                    "target": f"{cond}, {con}: every label within {CONDITION_TOLERANCE} of as rendered",
                    "value": f"largest drop {drops[worst]:.3f} ({worst})" if worst else None,
                    "met": bool(drops) and max(drops.values()) <= CONDITION_TOLERANCE,
                }
            )
    for variant, r in real.items():
        for key in ("gm", "wm"):
            rows.append(
                {
                    "target": f"real MNI152 T1 {variant}: {key} Dice >= {REAL_SCAN_TARGET}",
                    "value": r[key],
                    "met": r[key] >= REAL_SCAN_TARGET,
                }
            )
    return rows


def to_markdown(phantom: dict, real: dict, rows: list[dict]) -> str:
    labels = list(SEEN_TARGETS)
    lines = ["| condition | contrast | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for cond, per in phantom.items():
        for con, dice in per.items():
            cells = [f"{dice[k]:.3f}" if dice.get(k) is not None and math.isfinite(dice[k]) else "n/a" for k in labels]
            lines.append(f"| {cond} | {con} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| real MNI152 T1 | GM Dice | WM Dice | GM/WM boundary at WM fraction (reference 0.5) | s per volume (with start-up) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {v} | {r['gm']:.3f} | {r['wm']:.3f} | {r.get('boundary_wm_fraction', 'n/a')} | {r['seconds_with_startup']} |"
        for v, r in real.items()
    ]
    met = sum(r["met"] for r in rows)
    lines += ["", f"Targets met: {met} of {len(rows)}.", "", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {r['target']} | {r['value']} | {'yes' if r['met'] else 'NO'} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from brainspade.contrasts import CONTRASTS

    p = argparse.ArgumentParser(prog="quality_report.py", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt_path", default=str(BUNDLE / "models" / "model.pt"))
    p.add_argument("--output_dir", default=str(BUNDLE.parent.parent / "runs" / "segmenter" / "quality"))
    p.add_argument("--contrasts", default=",".join(CONTRASTS))
    p.add_argument("--conditions", default="as_rendered,zero_background,thick_axial_5mm")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--profile", default=None, help="the grid the model works on (default: inference.yaml's)")
    p.add_argument("--docs", action="store_true", help="also write docs/quality.{json,md}")
    p.add_argument(
        "--curve", default="", help="validation_curve.jsonl of the training run (stages comma-separated): plotted, kept"
    )
    a = p.parse_args(argv)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    profile = a.profile or shipped_profile()
    phantom = phantom_dice(a.ckpt_path, out, a.contrasts.split(","), a.conditions.split(","), a.threads, profile)
    real = real_scan_dice(a.ckpt_path, out, profile)
    rows = judge(phantom, real)
    report = {
        "ckpt_path": a.ckpt_path,
        "profile": profile,
        "phantom_style_b_dice": phantom,
        "real_mni152_t1": real,
        "targets": rows,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
    }
    if a.curve:
        report["validation_curve"] = read_curve(a.curve)
    for folder in [out] + ([BUNDLE / "docs"] if a.docs else []):
        (folder / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
        (folder / "quality.md").write_text(to_markdown(phantom, real, rows))
        if a.curve:
            plot_curve(report["validation_curve"], folder / "validation_curve.png")
    print(to_markdown(phantom, real, rows))
    return report


if __name__ == "__main__":
    main()
