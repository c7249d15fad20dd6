"""The generator's validation curve: evaluate.yaml's figures for each EMA snapshot a training run kept
(run_dir/snapshots, one every `snapshot_interval` epochs), against the training iteration, as JSON lines and a plot.

A GAN's losses do not say when the images stopped improving, so the curve is the evaluation itself, on the
validation split: per-tissue intensity error (sampled style), SSIM, and the style figures, per contrast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from brainspade.bundle import bundle_config
from brainspade.errors import InputError

CURVE_FIGURES = (
    "tissue_error_sampled",
    "tissue_error_encoded",
    "tissue_error_phantom",
    "ssim_sampled",
    "style_transfer_fraction",
    "style_diversity_ratio",
)
# the plot's panels: (y label, [(figure, line style)])
PANELS = (
    (
        "tissue intensity error (SD): sampled -, encoded --",
        [("tissue_error_sampled", "-"), ("tissue_error_encoded", "--")],
    ),
    ("SSIM (sampled style)", [("ssim_sampled", "-")]),
    ("style diversity / phantom scanners", [("style_diversity_ratio", "-")]),
)
_EPOCH = re.compile(r"epoch=(\d+)\.pt$")


def snapshots(snapshot_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, file) of every snapshot in `snapshot_dir`, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(snapshot_dir).glob("*.pt") if (m := _EPOCH.search(p.name))]
    if not found:
        raise InputError(
            f"no snapshot_*_epoch=N.pt file in {str(snapshot_dir)!r}; accepted: a run_dir/snapshots folder"
        )
    return sorted(found)


def curve_row(metrics: dict, iteration: int) -> dict:
    """One point of the curve from an evaluation's metrics.json content."""
    per = metrics["per_contrast"]
    return {"iteration": iteration, **{f: {c: per[c].get(f) for c in per} for f in CURVE_FIGURES}}


def snapshot_curve(
    bundle_root: str,
    snapshot_dir: str,
    output_dir: str,
    epoch_length: int,
    evaluate_overrides: dict | None = None,
    every: int = 1,
    start_weights: str | None = None,
    start_iteration: int = 0,
) -> Path:
    """Evaluate every `every`-th snapshot (and the newest) with evaluate.yaml; write curve.jsonl and curve.png in
    `output_dir`. `start_weights`: the weights the run started from (a fine-tune's), the point at `start_iteration`
    (iterations they had); snapshots count on from it. A point already on the curve is not evaluated again (rerun
    as training goes on)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "curve.jsonl"
    done = {json.loads(line)["iteration"] for line in jsonl.read_text().splitlines()} if jsonl.exists() else set()
    found = snapshots(snapshot_dir)
    points = [(int(start_iteration), Path(start_weights))] if start_weights else []
    keep = [k for k in range(len(found)) if k % max(1, int(every)) == 0 or k == len(found) - 1]
    points += [(int(start_iteration) + found[k][0] * int(epoch_length), found[k][1]) for k in keep]
    for iteration, path in points:
        if iteration in done:
            continue
        over = {"label_fidelity": False, **dict(evaluate_overrides or {})}
        over.update(ckpt_path=str(path), output_dir=str(out / f"iteration_{iteration}"), overwrite=True)
        bundle_config(bundle_root, "evaluate.yaml", over).get_parsed_content("evaluator").run()
        metrics = json.loads((out / f"iteration_{iteration}" / "metrics.json").read_text())
        with jsonl.open("a") as f:
            f.write(json.dumps(curve_row(metrics, iteration)) + "\n")
    return plot_curve([json.loads(line) for line in jsonl.read_text().splitlines()], out / "curve.png")


def plot_curve(rows: list[dict], png: Path) -> Path:
    """Tissue error (sampled and encoded style), SSIM and style diversity per contrast against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["iteration"])
    its = [r["iteration"] for r in rows]
    contrasts = list(rows[-1]["tissue_error_sampled"])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(14, 4))
    for ax, (label, lines) in zip(axes, PANELS, strict=True):
        for i, contrast in enumerate(contrasts):
            for figure, style in lines:
                values = [r.get(figure, {}).get(contrast) for r in rows]
                ax.plot(its, [v if v is not None else float("nan") for v in values], style, color=f"C{i}", marker=".")
        ax.set(xlabel="training iteration", title=label)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.15, color="k", ls=":", lw=1)  # the target
    axes[2].axhline(1.0, color="k", ls=":", lw=1)
    axes[0].legend([plt.Line2D([], [], color=f"C{i}") for i in range(len(contrasts))], contrasts, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
