"""Faults (issue 8): a training run killed mid-epoch resumes from its last checkpoint, losing at most one
epoch, with the same configuration; the same seed gives the same output on the same machine."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from _segmenter_helpers import TRAIN, tiny_train_overrides
from cli_harness import ROOT

from brainspade.bundle import latest_checkpoint


def _latest_epoch(ckpt_dir: Path) -> int:
    """The epoch training would resume from (the bundles' own rule, which skips a file cut off mid-write)."""
    path = latest_checkpoint(ckpt_dir, "checkpoint_*.pt")
    if path is None:
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["trainer"]
    except (OSError, RuntimeError, EOFError, KeyError):  # replaced between the check and the load
        return 0
    return int(state["iteration"]) // int(state["epoch_length"])


def _train_cmd(override_file: Path) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([TRAIN, str(override_file)])]


def test_killed_training_resumes_from_its_last_checkpoint(tiny_phantoms, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_train_overrides(tiny_phantoms, out, max_epochs=40, iterations_per_epoch=2, val_interval=1000)
    override_file = tmp_path / "override.yaml"
    override_file.write_text(yaml.safe_dump(overrides))
    ckpt_dir = out / "checkpoints"
    env_log = tmp_path / "first.log"
    with env_log.open("w") as log:
        proc = subprocess.Popen(
            _train_cmd(override_file), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and _latest_epoch(ckpt_dir) < 2:
            time.sleep(0.5)
        assert proc.poll() is None, "training ended before it could be killed:\n" + env_log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: as a pre-empted cluster job
        proc.wait(timeout=30)
    killed_at = _latest_epoch(ckpt_dir)
    assert killed_at >= 2

    # resume with the same configuration and a budget of two more epochs
    overrides["max_epochs"] = killed_at + 2
    override_file.write_text(yaml.safe_dump(overrides))
    res = subprocess.run(_train_cmd(override_file), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    completed = sorted({int(e) for e in re.findall(r"Epoch\[(\d+)\] Complete", log)})
    assert completed == [killed_at + 1, killed_at + 2], f"resumed run trained epochs {completed}, killed at {killed_at}"
    assert _latest_epoch(ckpt_dir) == killed_at + 2


def test_same_seed_same_phantom():
    """Determinism: the same seed and index give byte-identical data (the generator is the data source)."""
    from brainspade.phantom import generate_subject

    a = generate_subject(11, 5, profile="tiny", pathology="both", contrasts=("t1",))
    b = generate_subject(11, 5, profile="tiny", pathology="both", contrasts=("t1",))
    c = generate_subject(11, 6, profile="tiny", pathology="both", contrasts=("t1",))
    assert json.dumps(a["params"], sort_keys=True, default=str) == json.dumps(b["params"], sort_keys=True, default=str)
    assert (a["pv"] == b["pv"]).all() and (a["images"]["t1"] == b["images"]["t1"]).all()
    assert not (a["pv"] == c["pv"]).all(), "another index must give another subject"
