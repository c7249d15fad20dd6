"""Run the study described by experiment.yaml (what synthetic pairs are worth to a segmenter) and report it.

    python experiments/synthetic_value/experiment.py --jobs 2

For each (arm, seed) one process runs `monai.bundle.run` on configs/train.yaml with the arm's
`train_sources` and the shared overrides, then configs/train.yaml + configs/evaluate.yaml on the test
set (`--jobs` such processes at a time, one CPU thread each). Finished runs are skipped and an unfinished
training resumes from its last epoch checkpoint, so an interrupted experiment continues where it stopped.
Finally it writes experiment.json (Dice per label per run, mean ± sd per arm, targets), experiment.md (table) and
experiment.png (plot) beside this file. A study, not a bundle component: it drives the segmenter bundle's configs.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUNDLE = REPO / "bundles" / "segmenter"  # the bundle every arm trains
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from brainspade.cli import run_guarded  # noqa: E402
from brainspade.errors import InputError  # noqa: E402
from brainspade.io import save_json  # noqa: E402
from brainspade.labels import LABELS  # noqa: E402

FG = [lab for lab in LABELS if lab.code > 0]  # DiceMetric(include_background=False): class{k} = label k+1
ARM_TITLES = {
    "real_only": "real only",
    "synthetic_only": "synthetic only",
    "real_synthetic": "real + synthetic",
    "real_dr": "real + domain rand.",
    "real_spade_on_phantom_labels": "real + SPADE on phantom labels",
}


def load_experiment(config_file: str, overrides: dict | None = None) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = str(BUNDLE)
    for k, v in (overrides or {}).items():
        parser[k] = v
    ids = [
        "repo_root",
        "work_dir",
        "docs_dir",
        "real_datalist",
        "test_datalist",
        "synthetic_kind",
        "seeds",
        "train_overrides",
        "eval_overrides",
        "test_sources",
        "seen_labels",
        "brainspade3d_dir",
    ]
    conf = {k: parser.get_parsed_content(k) for k in ids}
    conf["arms"] = {k: parser.get_parsed_content(f"arms#{k}") for k in parser["arms"]}
    return conf


def plan_runs(conf: dict, arms: list[str], seeds: list[int]) -> list[dict]:
    runs = []
    for arm in arms:
        for seed in seeds:
            run_dir = Path(conf["work_dir"]) / arm / f"seed{seed}"
            common = {"bundle_root": str(BUNDLE), "dataset_dir": str(Path(conf["real_datalist"]).parent), "seed": seed}
            train_args = {
                **conf["train_overrides"],
                **common,
                "train_sources": conf["arms"][arm],
                "output_dir": str(run_dir),
                "publish_model": False,  # an arm's model stays in its run folder, never replaces models/model.pt
            }
            same = ("profile", "channels", "torch_threads")
            eval_args = {k: v for k, v in conf["train_overrides"].items() if k in same}
            # the driver decides what is finished; an unfinished evaluation is simply redone
            eval_args.update(
                {
                    **conf["eval_overrides"],
                    **common,
                    "test_sources": conf["test_sources"],
                    "overwrite": True,
                    "ckpt_path": str(run_dir / "model_final.pt"),
                    "output_dir": str(run_dir / "eval"),
                }
            )
            runs.append({"arm": arm, "seed": seed, "dir": run_dir, "train_args": train_args, "eval_args": eval_args})
    return runs


def _finished(run_dir: Path) -> bool:
    return (run_dir / "eval" / "val_mean_dice_raw.csv").is_file()


def run_one(run_dir: str | Path) -> None:
    """Train (resuming from its checkpoints) then evaluate one (arm, seed) in this process: one interpreter
    start per run instead of two. Steps already finished are skipped."""
    from monai.bundle import run

    d = Path(run_dir)
    meta, logging_file = str(BUNDLE / "configs" / "metadata.json"), str(BUNDLE / "configs" / "logging.conf")
    timing = d / "timing.json"
    times = json.loads(timing.read_text()) if timing.is_file() else {}
    if not (d / "model_final.pt").is_file():
        args = json.loads((d / "train_args.json").read_text())
        t0 = time.time()
        run(config_file=str(BUNDLE / "configs" / "train.yaml"), meta_file=meta, logging_file=logging_file, **args)
        times["train"] = round(time.time() - t0, 1)
        iters = int(args.get("max_epochs", 0)) * int(args.get("iterations_per_epoch", 0))
        times["train_iterations"] = iters
        save_json(timing, times)
    if not _finished(d):
        args = json.loads((d / "eval_args.json").read_text())
        t0 = time.time()
        run(
            config_file=[str(BUNDLE / "configs" / "train.yaml"), str(BUNDLE / "configs" / "evaluate.yaml")],
            meta_file=meta,
            logging_file=logging_file,
            **args,
        )
        times["eval"] = round(time.time() - t0, 1)
        save_json(timing, times)


def execute(runs: list[dict], jobs: int) -> list[dict]:
    """Unfinished runs, `jobs` at a time, one CPU thread each; returns the runs that failed."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    }
    queue = []
    for run in runs:
        if _finished(run["dir"]):
            print(f"skip {run['arm']} seed {run['seed']}: finished earlier", flush=True)
            continue
        run["dir"].mkdir(parents=True, exist_ok=True)
        save_json(run["dir"] / "train_args.json", run["train_args"])
        save_json(run["dir"] / "eval_args.json", run["eval_args"])
        queue.append(run)
    total, done, durations, failed = len(queue), 0, [], []
    active: list[tuple[dict, subprocess.Popen, float, object]] = []
    t_start = time.time()
    while queue or active:
        while queue and len(active) < max(1, jobs):
            run = queue.pop(0)
            log = open(run["dir"] / "run.log", "a")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--run_one", str(run["dir"])]
            print(f"[{time.strftime('%H:%M:%S')}] start {run['arm']} seed {run['seed']}", flush=True)
            active.append(
                (
                    run,
                    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)),
                    time.time(),
                    log,
                )
            )
        time.sleep(0.5)
        for item in list(active):
            run, proc, t0, log = item
            if proc.poll() is None:
                continue
            active.remove(item)
            log.close()
            dt = time.time() - t0
            ok = proc.returncode == 0 and _finished(run["dir"])
            done += 1
            durations.append(dt)
            if not ok:
                failed.append(run)
            left = total - done
            eta = left * (sum(durations) / len(durations)) / max(1, jobs)
            print(
                f"[{time.strftime('%H:%M:%S')}] {'done' if ok else 'FAILED'} {run['arm']} seed {run['seed']} in "
                f"{dt:.0f} s ({done}/{total}; ETA {eta / 60:.1f} min; log {run['dir'] / 'run.log'})",
                flush=True,
            )
    if total:
        print(f"{total} runs in {(time.time() - t_start) / 60:.1f} min", flush=True)
    return failed


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
    return {
        "dice": per_label,
        "n_images_with_label": per_label_n,
        "n_images": len(rows),
        "seconds": json.loads(timing.read_text()) if timing.is_file() else {},
    }


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
    m = {
        arm: {k: v[0] for k, v in a["dice_mean_sd"].items()} | {"seen": a["seen_mean_sd"][0]} for arm, a in arms.items()
    }
    if {"real_only", "synthetic_only"} <= m.keys():
        ratio = m["synthetic_only"]["seen"] / m["real_only"]["seen"]
        targets["synthetic_only_vs_real_only_seen_ratio"] = {"value": ratio, "target": ">= 0.9", "met": ratio >= 0.9}
    if {"real_only", "real_synthetic"} <= m.keys():
        gain = m["real_synthetic"]["tumour"] - m["real_only"]["tumour"]
        targets["tumour_gain_real_synthetic_minus_real_only"] = {"value": gain, "target": ">= 0.2", "met": gain >= 0.2}
        drops = {k: m["real_only"][k] - m["real_synthetic"][k] for k in seen}
        worst = max(drops, key=drops.get)
        targets["largest_drop_on_other_labels"] = {
            "value": drops[worst],
            "label": worst,
            "target": "<= 0.02",
            "met": drops[worst] <= 0.02,
        }
    if {"real_dr", "real_synthetic"} <= m.keys():
        diff = m["real_synthetic"]["tumour"] - m["real_dr"]["tumour"]
        targets["tumour_real_synthetic_minus_real_dr"] = {"value": diff, "target": "> 0", "met": diff > 0}
    best = max(arms, key=lambda k: np.nanmean([m[k][lab.key] for lab in FG])) if arms else None
    return {
        "arms": arms,
        "targets": targets,
        "best_arm_by_mean_dice": best,
        "seen_labels": seen,
        "unseen_labels": unseen,
    }


def write_reports(conf: dict, summary: dict, docs: Path, settings: dict) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    summary = {"settings": settings, **summary}
    save_json(docs / "experiment.json", summary)
    arms = summary["arms"]
    order = [a for a in ARM_TITLES if a in arms]
    keys = [lab.key for lab in FG]
    fmt = lambda ms: "n/a" if not math.isfinite(ms[0]) else f"{ms[0]:.3f} ± {ms[1]:.3f}"  # noqa: E731
    lines = [
        "| arm | seeds | " + " | ".join(keys) + " | seen mean | unseen mean |",
        "|---|---|" + "---|" * (len(keys) + 2),
    ]
    for a in order:
        r = arms[a]
        lines.append(
            f"| {ARM_TITLES[a]} | {r['seeds']} | "
            + " | ".join(fmt(r["dice_mean_sd"][k]) for k in keys)
            + f" | {fmt(r['seen_mean_sd'])} | {fmt(r['unseen_mean_sd'])} |"
        )
    tl = ["", "| target | value | met |", "|---|---|---|"]
    for name, t in summary["targets"].items():
        extra = f" ({t['label']})" if "label" in t else ""
        tl.append(f"| {name} {t['target']} | {t['value']:.3f}{extra} | {'yes' if t['met'] else 'NO'} |")
    st = summary["settings"]
    tr = st["train_overrides"]
    budget = f"{tr.get('max_epochs')} epochs x {tr.get('iterations_per_epoch')} iterations"
    secs = {
        a: [r["seconds"].get("train") for r in arms[a]["runs"].values() if r["seconds"].get("train")] for a in order
    }
    times = ", ".join(f"{ARM_TITLES[a]} {np.mean(v) / 60:.1f} min" for a, v in secs.items() if v)
    head = (
        f"Command: `{st['command']}`  \nSynthetic data: `{st['synthetic_kind']}`; real set `{st['real_datalist']}` "
        f"(healthy + WMH only); test set `{st['test_datalist']}` (every pathology, held-out style b); "
        f"budget {budget} per run, seeds {st['seeds']}."
        + (f"  \nMean training time per run: {times}." if times else "")
        + "\n\n"
    )
    text = (
        head + "Dice per label on the held-out test set (mean ± sd over seeds; a label counts only on images "
        "that contain it).\n\n" + "\n".join(lines) + "\n" + "\n".join(tl) + "\n"
    )
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
        ax.bar(
            x + (i - (len(order) - 1) / 2) * width,
            np.nan_to_num(ms[:, 0]),
            width,
            yerr=np.nan_to_num(ms[:, 1]),
            label=f"{ARM_TITLES[a]} (n={arms[a]['seeds']})",
            capsize=2,
        )
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


def check_data(conf: dict, arms: list[str]) -> None:
    """Every arm's training sources and the test set resolve to existing files, before any run starts."""
    from brainspade.bundle import load_scripts

    scripts = load_scripts(BUNDLE, "segmenter_scripts")
    for arm in arms:
        if arm not in conf["arms"]:
            raise InputError(f"unknown arm {arm!r}; accepted: {', '.join(conf['arms'])}")
        scripts.check_items(scripts.build_datalist(conf["arms"][arm]), f"arm {arm} training", need_image=False)
    scripts.check_items(scripts.build_datalist(conf["test_sources"]), "test")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config_file", default=str(HERE / "experiment.yaml"))
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    ap.add_argument("--arms", default="", help="comma list (default: all arms of the config)")
    ap.add_argument("--seeds", default="", help="comma list (default: the config's seeds)")
    ap.add_argument("--report_only", action="store_true", help="only aggregate finished runs")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ID=JSON",
        help="override a config id, e.g. --set 'train_overrides#max_epochs=2' (JSON value)",
    )
    ap.add_argument("--run_one", default="", help=argparse.SUPPRESS)  # internal: one run, in this process
    a = ap.parse_args(argv)
    if a.run_one:
        run_one(a.run_one)
        return
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
    run_guarded(check_data, conf, arms)
    runs = plan_runs(conf, arms, seeds)
    failed = [] if a.report_only else execute(runs, a.jobs)
    summary = summarise(conf, runs)
    settings = {
        "synthetic_kind": conf["synthetic_kind"],
        "train_overrides": conf["train_overrides"],
        "real_datalist": os.path.relpath(conf["real_datalist"], conf["repo_root"]),
        "test_datalist": os.path.relpath(conf["test_datalist"], conf["repo_root"]),
        "arms": {k: v for k, v in conf["arms"].items() if k in arms},
        "seeds": seeds,
        "command": "python experiments/synthetic_value/experiment.py --jobs " + str(a.jobs),
    }
    settings = json.loads(json.dumps(settings).replace(str(conf["repo_root"]) + "/", ""))
    if summary["arms"]:
        write_reports(conf, summary, Path(conf["docs_dir"]), settings)
    if failed:
        names = ", ".join(f"{r['arm']}/seed{r['seed']}" for r in failed)
        print(
            f"error: {len(failed)} run(s) failed ({names}); see run.log in each run folder, fix, and rerun the same "
            "command (finished runs are skipped)",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
