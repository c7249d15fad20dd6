"""Checks and helpers around training/evaluation runs: input validation before anything is written,
checkpoints for resume, the per-label evaluation tables, and rank-aware handler lists for torchrun.

The checks run first in each config's `run` list (inside brainspade.cli.run_guarded), so bad input becomes
one line `error: ...` with exit status 2 instead of a traceback from deep inside an Ignite engine.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from brainspade.bundle import latest_checkpoint
from brainspade.cli import parse_bool
from brainspade.errors import InputError
from brainspade.io import atomic_write, save_json
from brainspade.labels import LABELS
from brainspade.weights import load_into, read_weights, state_dict_in

_ITER = re.compile(r"checkpoint_(?:epoch|iteration)=(\d+)\.pt$")
CKPT_ACCEPTED = "a PyTorch state-dict file written by this bundle (torch.save of a dict of tensors)"


def check_checkpoint(path: str | Path, what: str = "checkpoint") -> Mapping:
    """Refuse a missing or unreadable weights file before an engine starts (CheckpointLoader would raise an
    UnpicklingError traceback)."""
    return read_weights(path, what, CKPT_ACCEPTED)


def check_fits(path: str | Path, network, what: str = "checkpoint") -> None:
    """The weights in `path` (a state dict, or a training checkpoint's 'model') are readable (`check_checkpoint`)
    and load into `network` exactly."""
    load_into(
        network,
        state_dict_in(check_checkpoint(path, what), ("model",)),
        path,
        what,
        "weights written with the same network settings (channels, profile), or start over with --resume false "
        "--overwrite true / a new --output_dir",
    )


def check_readable(path: str, what: str) -> None:
    """The file opens as a NIfTI image (header only: cheap), so a wrong file is named before training starts."""
    import nibabel as nib

    try:
        nib.load(path)
    except Exception as exc:  # nibabel raises several types for non-image files
        raise InputError(
            f"{what} {path!r} is not a readable NIfTI image ({type(exc).__name__}); accepted: .nii or .nii.gz files"
        ) from None


def check_items(items: Sequence, what: str, need_image: bool = True) -> None:
    """Every datalist entry has a label (and an image unless domain-randomised) that exists on disk."""
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise InputError(f"{what} datalist is empty; accepted: a non-empty list of {{'image': path, 'label': path}}")
    for i, e in enumerate(items):
        name = f"{what} entry {i}" + (f" ({e.get('id')})" if isinstance(e, Mapping) and e.get("id") else "")
        if not isinstance(e, Mapping) or "label" not in e:
            raise InputError(
                f"{name} has no 'label'; accepted: {{'image': path, 'label': path}} "
                "(or {'label': path} with kind dr)"
            )
        keys = ["image", "label"] if need_image or "image" in e else ["label"]
        for k in keys:
            if k not in e:
                raise InputError(f"{name} has no {k!r}; accepted: {{'image': path, 'label': path}}")
            if not Path(str(e[k])).is_file():
                raise InputError(f"{name}: {k} file {str(e[k])!r} does not exist")
            check_readable(str(e[k]), f"{name}: {k} file")


def check_training(
    train_items: Sequence,
    val_items: Sequence,
    ckpt_dir: str | Path,
    output_dir: str | Path,
    resume: bool,
    overwrite: bool = False,
    network=None,
    init_weights: str | Path = "",
) -> str:
    """Validate the training run before it starts; returns the checkpoint it will resume from ('' if none).

    An earlier run's results are never silently replaced: resume it (`resume: true`), or pass
    `overwrite: true` to start over (stale checkpoints are then removed so a later resume cannot pick them).
    A checkpoint that does not fit `network` (other channels, another network) is refused here, before the
    engine starts: once it runs, MONAI's saver would write the untrained weights as `model_final.pt`.
    A new run (not a resume) starts from `init_weights` when given (fine-tuning, e.g. the shipped
    `models/model.pt`): they are checked and loaded into `network` here.
    """
    resume, overwrite = parse_bool(resume, "resume"), parse_bool(overwrite, "overwrite")
    check_items(train_items, "training", need_image=False)
    check_items(val_items, "validation")
    latest = latest_checkpoint(ckpt_dir, "checkpoint_*.pt") or ""
    if resume and latest:
        if network is not None:
            check_fits(latest, network, "checkpoint to resume from")
        else:
            check_checkpoint(latest, "checkpoint to resume from")
        return latest
    earlier = [p for p in (Path(latest) if latest else None, Path(output_dir) / "model_final.pt") if p and p.is_file()]
    if earlier and not overwrite:
        raise InputError(
            f"output_dir {str(output_dir)!r} already holds results of an earlier run ({earlier[0].name}); "
            "accepted: resume=true to continue it, overwrite=true to start over, or a new output_dir"
        )
    if earlier:
        for p in Path(ckpt_dir).glob("*checkpoint_*.pt"):
            if _ITER.search(p.name):
                p.unlink(missing_ok=True)  # every torchrun rank runs this check
    if init_weights and network is not None:
        check_fits(init_weights, network, "init_weights")  # loads them: the run starts from these weights
    return ""


EVAL_TABLES = ("metrics_per_label.json", "metrics_per_label.md")


def check_evaluation(items: Sequence, ckpt_path: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Validate the test set, the weights and the output folder of an evaluation; returns the staging folder
    MetricsSaver writes into (its CSVs are moved into place only when the run completes)."""
    overwrite = parse_bool(overwrite, "overwrite")
    check_items(items, "test")
    check_checkpoint(ckpt_path, "model weights")
    out = Path(output_dir)
    if not overwrite and out.is_dir():
        clash = [f for f in EVAL_TABLES if (out / f).exists()] + sorted(p.name for p in out.glob("*_raw.csv"))
        if clash:
            raise InputError(
                f"output_dir {str(out)!r} already holds {clash[0]!r}; accepted: a new output_dir, "
                "or --overwrite true"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"output_dir {str(out)!r} cannot be created ({exc.strerror}); accepted: a writable folder"
        ) from None
    staging = out / ".metrics.part"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def _read_summary(path: Path) -> dict[str, dict[str, float]]:
    with path.open() as f:
        return {r["class"]: {k: float(v) for k, v in r.items() if k != "class"} for r in csv.DictReader(f)}


# MetricsSaver's metric names -> table names; HD95 is computed in voxels of the (isotropic) profile grid
METRIC_NAMES = {"val_mean_dice": "dice", "val_hd95": "hd95_mm"}


def finish_evaluation(output_dir: str | Path, spacing_mm: float = 1.0, include_background: bool = False) -> dict:
    """Move MetricsSaver's CSVs from the staging folder into `output_dir` and write the per-label tables
    (MetricsSaver names columns class0..; these tables use the label table's names, HD95 in mm)."""
    out = Path(output_dir)
    staging = out / ".metrics.part"
    if staging.is_dir():
        for f in staging.iterdir():
            os.replace(f, out / f.name)
        staging.rmdir()
    offset = 0 if include_background else 1
    table: dict[str, dict] = {}
    for summ in sorted(out.glob("*_summary.csv")):
        raw_name = summ.name[: -len("_summary.csv")]
        metric = METRIC_NAMES.get(raw_name, raw_name)
        scale = float(spacing_mm) if metric.endswith("_mm") else 1.0
        table[metric] = {}
        for cls, vals in _read_summary(summ).items():
            key = "mean_over_labels" if cls == "mean" else LABELS[int(cls[5:]) + offset].key
            table[metric][key] = {
                "mean": vals["mean"] * scale,
                "std": vals["std"] * scale,
                "n_images": int(round(vals["notnans"])),
            }
    save_json(
        out / "metrics_per_label.json",
        {
            "per_label": table,
            "note": "mean/std over test images; a label "
            "counts only on images where it is present; hd95_mm = HD95 in "
            "voxels of the profile grid x its spacing (raw CSVs: voxels)",
        },
    )
    metrics = list(table)
    keys = [lab.key for lab in LABELS[offset:]] + ["mean_over_labels"]

    def fmt(v: dict | None) -> str:
        return "n/a" if v is None or not math.isfinite(v["mean"]) else f"{v['mean']:.3f} ± {v['std']:.3f}"

    lines = ["| label | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(fmt(table[m].get(k)) for m in metrics) + " |")
    tmp = out / ".metrics_per_label.md.part"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "metrics_per_label.md")
    return table


class ValidationCurve:
    """Record Dice per label after every validation: one JSON line per round in `path` (with the trainer's
    iteration and time), so the docs can show where training flattened. Reads the per-image, per-label scores
    MONAI's MeanDice handler keeps (`save_details`); MONAI's stats handlers log only the scalar mean."""

    def __init__(
        self, path: str | Path, trainer=None, metric_name: str = "val_mean_dice", include_background: bool = False
    ) -> None:
        self.path, self.trainer, self.metric_name = Path(path), trainer, metric_name
        self.offset = 0 if include_background else 1

    def attach(self, evaluator) -> None:
        from ignite.engine import Events

        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, evaluator) -> None:
        import time

        import torch

        details = evaluator.state.metric_details.get(self.metric_name)
        if details is None:
            return
        scores = torch.as_tensor(details, dtype=torch.float32).reshape(-1, details.shape[-1])
        present = ~torch.isnan(scores)
        means = torch.where(present, scores, torch.zeros_like(scores)).sum(0) / present.sum(0).clamp(min=1)
        per_label = {
            LABELS[i + self.offset].key: (round(float(m), 4) if bool(present[:, i].any()) else None)
            for i, m in enumerate(means)
        }
        state = self.trainer.state if self.trainer is not None else evaluator.state
        record = {
            "iteration": int(state.iteration),
            "epoch": int(state.epoch),
            "time": round(time.time(), 1),
            "mean_dice": round(float(evaluator.state.metrics.get(self.metric_name, float("nan"))), 4),
            "dice": per_label,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def client_loads_weights(handlers: Sequence) -> bool:
    """True when a client put its own weight loader among the training handlers: MONAI Label's BundleTrainTask
    inserts a CheckpointLoader of `models/model.pt` (its `pretrained` option) into `train#handlers`. Such a
    request is a new round from the published weights, not a resume: resuming the run folder's finished
    checkpoint would do nothing, and its loader would overwrite the client's weights."""
    from monai.handlers import CheckpointLoader

    return any(isinstance(h, CheckpointLoader) for h in handlers)


class PublishModel:
    """When training has run all its epochs, write the best validation model (or, without one, the final
    weights) to `path`, the bundle's `models/model.pt` by default: the file inference.yaml and MONAI Label
    load, as in the Model Zoo's bundles, so a MONAI Label train request closes the loop. A run stopped early
    (`time_limit_s`, a crash) publishes nothing: resuming it publishes when it finishes. Written next to the
    target and renamed over it, so a reader never loads a half-written file. Only rank 0 writes."""

    def __init__(self, path: str | Path, best_model: str | Path, network, enabled: bool = True) -> None:
        self.path, self.best_model, self.network = Path(path), Path(best_model), network
        self.enabled = parse_bool(enabled, "publish_model")

    def attach(self, trainer) -> None:
        from ignite.engine import Events

        if self.enabled:
            trainer.add_event_handler(Events.COMPLETED, self)

    def __call__(self, trainer) -> None:
        import logging

        import ignite.distributed as idist
        import torch

        log = logging.getLogger(__name__)
        if trainer.state.epoch < (trainer.state.max_epochs or 0):
            log.info(
                f"training stopped at epoch {trainer.state.epoch}/{trainer.state.max_epochs}: "
                f"{self.path} not updated (resume to finish)"
            )
            return
        if idist.get_rank() != 0:
            return
        if self.best_model.is_file():
            atomic_write(self.path, lambda tmp: shutil.copyfile(self.best_model, tmp))
        else:
            atomic_write(
                self.path, lambda tmp: torch.save(getattr(self.network, "module", self.network).state_dict(), tmp)
            )
        log.info(f"published the trained model to {self.path}")
