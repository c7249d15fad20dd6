"""Run the segmenter experiment described by configs/experiment.yaml and report it.

    python bundles/segmenter/scripts/experiment.py --config_file bundles/segmenter/configs/experiment.yaml --jobs 2

For each (arm, seed) it runs `python -m monai.bundle run` on configs/train.yaml with the arm's
`train_sources` and the shared overrides, then configs/train.yaml + configs/evaluate.yaml on the test
set; finished runs are skipped, so an interrupted experiment resumes. Finally it writes
docs/experiment.json (Dice per label per run, mean ± sd per arm, targets), docs/experiment.md (table)
and docs/experiment.png (plot).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parent.parent
REPO = BUNDLE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from brainspade.io import save_json  # noqa: E402
from brainspade.labels import LABELS  # noqa: E402

FG = [lab for lab in LABELS if lab.code > 0]  # DiceMetric(include_background=False): class{k} = label k+1
ARM_TITLES = {"real_only": "real only", "synthetic_only": "synthetic only", "real_synthetic": "real + synthetic",
              "real_dr": "real + domain rand."}


def load_experiment(config_file: str, overrides: dict | None = None) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = str(BUNDLE)
    for k, v in (overrides or {}).items():
        parser[k] = v
    ids = ["repo_root", "work_dir", "docs_dir", "real_datalist", "test_datalist", "synthetic_kind", "seeds",
           "train_overrides", "eval_overrides", "test_sources", "seen_labels", "brainspade3d_dir"]
    conf = {k: parser.get_parsed_content(k) for k in ids}
    conf["arms"] = {k: parser.get_parsed_content(f"arms#{k}") for k in parser["arms"]}
    return conf


def _bundle_cmd(configs: list[Path], args_file: Path) -> list[str]:
    files = str([str(c) for c in configs])
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--args_file", str(args_file)]


def plan_runs(conf: dict, arms: list[str], seeds: list[int]) -> list[dict]:
    runs = []
    for arm in arms:
        for seed in seeds:
            run_dir = Path(conf["work_dir"]) / arm / f"seed{seed}"
            train_args = {**conf["train_overrides"], "train_sources": conf["arms"][arm], "seed": seed,
                          "output_dir": str(run_dir), "dataset_dir": str(Path(conf["real_datalist"]).parent)}
            eval_args = {k: v for k, v in conf["train_overrides"].items() if k in ("profile", "channels", "torch_threads")}
            eval_args.update({**conf["eval_overrides"], "test_sources": conf["test_sources"], "seed": seed,
                              "ckpt_path": str(run_dir / "model_final.pt"), "output_dir": str(run_dir / "eval"),
                              "dataset_dir": str(Path(conf["real_datalist"]).parent)})
            runs.append({"arm": arm, "seed": seed, "dir": run_dir, "train_args": train_args, "eval_args": eval_args})
    return runs


def _jobs_for(run: dict) -> list[tuple[str, list[str], Path, Path]]:
    d = run["dir"]
    d.mkdir(parents=True, exist_ok=True)
    out = []
    if not (d / "model_final.pt").is_file():
        (d / "train_args.json").write_text(json.dumps(run["train_args"], indent=1))
        out.append(("train", _bundle_cmd([BUNDLE / "configs" / "train.yaml"], d / "train_args.json"), d / "train.log",
                    d / "model_final.pt"))
    if not (d / "eval" / "val_mean_dice_raw.csv").is_file():
        (d / "eval_args.json").write_text(json.dumps(run["eval_args"], indent=1))
        out.append(("eval", _bundle_cmd([BUNDLE / "configs" / "train.yaml", BUNDLE / "configs" / "evaluate.yaml"],
                                        d / "eval_args.json"), d / "eval.log", d / "eval" / "val_mean_dice_raw.csv"))
    return out


def execute(runs: list[dict], jobs: int) -> None:
    """Each run's train then eval, `jobs` runs at a time, one CPU thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    queue = [(run, _jobs_for(run)) for run in runs]
    queue = [q for q in queue if q[1]]
    active: list[tuple[dict, list, subprocess.Popen, float, tuple]] = []
    while queue or active:
        while queue and len(active) < jobs:
            run, steps = queue.pop(0)
            step = steps.pop(0)
            log = open(step[2], "a")
            print(f"[{time.strftime('%H:%M:%S')}] start {step[0]} {run['arm']} seed {run['seed']}", flush=True)
            proc = subprocess.Popen(step[1], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
            active.append((run, steps, proc, time.time(), step))
        time.sleep(2)
        for item in list(active):
            run, steps, proc, t0, step = item
            if proc.poll() is None:
                continue
            active.remove(item)
            dt = time.time() - t0
            timing = run["dir"] / "timing.json"
            times = json.loads(timing.read_text()) if timing.is_file() else {}
            times[step[0]] = round(dt, 1)
            timing.write_text(json.dumps(times))
            ok = proc.returncode == 0 and step[3].is_file()
            print(f"[{time.strftime('%H:%M:%S')}] {'done' if ok else 'FAILED'} {step[0]} {run['arm']} seed {run['seed']} "
                  f"in {dt:.0f} s (log {step[2]})", flush=True)
            if ok and steps:
                queue.insert(0, (run, steps))


def read_run(run_dir: Path) -> dict | None:
    raw = run_dir / "eval" / "val_mean_dice_raw.csv"
    if not raw.is_file():
        return None
    with raw.open() as f:
        rows = list(csv.DictReader(f))
    per_label = {}
    for lab in FG:
        vals = np.array([float(r[f"class{lab.code - 1}"]) for r in rows], dtype=float)
        per_label[lab.key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    per_label_n = {lab.key: int(np.isfinite([float(r[f"class{lab.code - 1}"]) for r in rows]).sum()) for lab in FG}
    timing = run_dir / "timing.json"
    return {"dice": per_label, "n_images_with_label": per_label_n, "n_images": len(rows),
            "seconds": json.loads(timing.read_text()) if timing.is_file() else {}}


def _ms(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(conf: dict, runs: list[dict]) -> dict:
    seen = list(conf["seen_labels"])
    unseen = [lab.key for lab in FG if lab.key not in seen]
    arms: dict[str, dict] = {}
    for run in runs:
        res = read_run(run["dir"])
        if res is None:
            continue
        res["seen_mean"] = float(np.nanmean([res["dice"][k] for k in seen]))
        res["unseen_mean"] = float(np.nanmean([res["dice"][k] for k in unseen]))
        a = arms.setdefault(run["arm"], {"runs": {}})
        a["runs"][str(run["seed"])] = res
    for a in arms.values():
        rs = list(a["runs"].values())
        a["dice_mean_sd"] = {k: _ms([r["dice"][k] for r in rs]) for k in [lab.key for lab in FG]}
        a["seen_mean_sd"] = _ms([r["seen_mean"] for r in rs])
        a["unseen_mean_sd"] = _ms([r["unseen_mean"] for r in rs])
        a["seeds"] = len(rs)
    targets = {}
    m = {arm: {k: v[0] for k, v in a["dice_mean_sd"].items()} | {"seen": a["seen_mean_sd"][0]} for arm, a in arms.items()}
    if {"real_only", "synthetic_only"} <= m.keys():
        ratio = m["synthetic_only"]["seen"] / m["real_only"]["seen"]
        targets["synthetic_only_vs_real_only_seen_ratio"] = {"value": ratio, "target": ">= 0.9", "met": ratio >= 0.9}
    if {"real_only", "real_synthetic"} <= m.keys():
        gain = m["real_synthetic"]["tumour"] - m["real_only"]["tumour"]
        targets["tumour_gain_real_synthetic_minus_real_only"] = {"value": gain, "target": ">= 0.2", "met": gain >= 0.2}
        drops = {k: m["real_only"][k] - m["real_synthetic"][k] for k in seen}
        worst = max(drops, key=drops.get)
        targets["largest_drop_on_other_labels"] = {"value": drops[worst], "label": worst, "target": "<= 0.02",
                                                   "met": drops[worst] <= 0.02}
    if {"real_dr", "real_synthetic"} <= m.keys():
        diff = m["real_synthetic"]["tumour"] - m["real_dr"]["tumour"]
        targets["tumour_real_synthetic_minus_real_dr"] = {"value": diff, "target": "> 0", "met": diff > 0}
    best = max(arms, key=lambda k: np.nanmean(list(m[k][lab.key] for lab in FG))) if arms else None
    return {"arms": arms, "targets": targets, "best_arm_by_mean_dice": best, "seen_labels": seen, "unseen_labels": unseen}


def write_reports(conf: dict, summary: dict, docs: Path, settings: dict) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    summary = {"settings": settings, **summary}
    save_json(docs / "experiment.json", summary)
    arms = summary["arms"]
    order = [a for a in ARM_TITLES if a in arms]
    keys = [lab.key for lab in FG]
    fmt = lambda ms: "n/a" if not math.isfinite(ms[0]) else f"{ms[0]:.3f} ± {ms[1]:.3f}"  # noqa: E731
    lines = ["| arm | seeds | " + " | ".join(keys) + " | seen mean | unseen mean |",
             "|---|---|" + "---|" * (len(keys) + 2)]
    for a in order:
        r = arms[a]
        lines.append(f"| {ARM_TITLES[a]} | {r['seeds']} | " + " | ".join(fmt(r["dice_mean_sd"][k]) for k in keys)
                     + f" | {fmt(r['seen_mean_sd'])} | {fmt(r['unseen_mean_sd'])} |")
    tl = ["", "| target | value | met |", "|---|---|---|"]
    for name, t in summary["targets"].items():
        extra = f" ({t['label']})" if "label" in t else ""
        tl.append(f"| {name} {t['target']} | {t['value']:.3f}{extra} | {'yes' if t['met'] else 'NO'} |")
    text = ("Dice per label on the held-out test set (mean ± sd over seeds; a label counts only on images that "
            "contain it).\n\n" + "\n".join(lines) + "\n" + "\n".join(tl) + "\n")
    tmp = docs / ".experiment.md.part"
    tmp.write_text(text)
    os.replace(tmp, docs / "experiment.md")
    _plot(arms, order, keys, docs / "experiment.png")
    print(text)


def _plot(arms: dict, order: list[str], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / max(1, len(order))
    x = np.arange(len(keys))
    for i, a in enumerate(order):
        ms = np.array([arms[a]["dice_mean_sd"][k] for k in keys], dtype=float)
        ax.bar(x + (i - (len(order) - 1) / 2) * width, np.nan_to_num(ms[:, 0]), width, yerr=np.nan_to_num(ms[:, 1]),
               label=f"{ARM_TITLES[a]} (n={arms[a]['seeds']})", capsize=2)
    ax.set_xticks(x, keys)
    ax.set_ylabel("Dice (test set, style b)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.16))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(".experiment.part.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config_file", default=str(BUNDLE / "configs" / "experiment.yaml"))
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    ap.add_argument("--arms", default="", help="comma list (default: all arms of the config)")
    ap.add_argument("--seeds", default="", help="comma list (default: the config's seeds)")
    ap.add_argument("--report_only", action="store_true", help="only aggregate finished runs")
    ap.add_argument("--set", action="append", default=[], metavar="ID=JSON",
                    help="override a config id, e.g. --set 'train_overrides#max_epochs=2' (JSON value)")
    a = ap.parse_args(argv)
    sets = {}
    for item in a.set:
        key, _, val = item.partition("=")
        try:
            sets[key] = json.loads(val)
        except json.JSONDecodeError:
            sets[key] = val
    conf = load_experiment(a.config_file, sets)
    arms = [x for x in a.arms.split(",") if x] or list(conf["arms"])
    seeds = [int(x) for x in a.seeds.split(",") if x] or list(conf["seeds"])
    runs = plan_runs(conf, arms, seeds)
    if not a.report_only:
        execute(runs, a.jobs)
    summary = summarise(conf, runs)
    settings = {"synthetic_kind": conf["synthetic_kind"], "train_overrides": conf["train_overrides"],
                "real_datalist": os.path.relpath(conf["real_datalist"], conf["repo_root"]),
                "test_datalist": os.path.relpath(conf["test_datalist"], conf["repo_root"]),
                "arms": {k: v for k, v in conf["arms"].items() if k in arms}, "seeds": seeds,
                "command": "python bundles/segmenter/scripts/experiment.py --config_file "
                           "bundles/segmenter/configs/experiment.yaml --jobs " + str(a.jobs)}
    settings = json.loads(json.dumps(settings).replace(str(conf["repo_root"]) + "/", ""))
    write_reports(conf, summary, Path(conf["docs_dir"]), settings)


if __name__ == "__main__":
    main()
