"""Drive a real MONAI Label server through the loop a user makes: upload a scan, segment it, upload labelled
images, train, segment again with the trained weights; and one bad upload (NaN values), which must come back as
the bundle's one-line error. Run with MONAI Label's own interpreter (integrations/monailabel/install.sh):

    VENV/bin/python integrations/monailabel/roundtrip.py --venv VENV --app APP --studies STUDIES \
        --scan scan.nii.gz --nan_scan nan.nii.gz --train image1.nii.gz:label1.nii.gz ... --report out.json

APP is MONAI Label's `monaibundle` sample app with the exported segmenter in APP/model/segmenter. The server
listens on 127.0.0.1 only and is stopped when the script ends. Uses only what MONAI Label installs (requests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

MODEL = "segmenter"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_server(venv: Path, app: Path, studies: Path, port: int, log: Path) -> subprocess.Popen:
    """MONAI Label offline: bundles from APP/model (zoo_source other than the Zoo's hosting), no SAM2 weights."""
    cmd = [
        str(venv / "bin" / "monailabel"),
        "start_server",
        "--app",
        str(app),
        "--studies",
        str(studies),
        "--conf",
        "models",
        MODEL,
        "--conf",
        "zoo_source",
        "local",
        "--conf",
        "sam2",
        "false",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(base: str, server: subprocess.Popen, timeout_s: float) -> dict:
    end = time.time() + timeout_s
    while time.time() < end:
        if server.poll() is not None:
            raise RuntimeError(f"MONAI Label exited with status {server.returncode} while starting")
        try:
            r = requests.get(f"{base}/info/", timeout=5)
            if r.status_code == 200:
                return r.json()
        except requests.ConnectionError:
            pass
        time.sleep(2)
    raise RuntimeError(f"MONAI Label did not answer within {timeout_s:.0f} s")


def upload_image(base: str, image_id: str, path: Path) -> int:
    with path.open("rb") as f:
        return requests.put(
            f"{base}/datastore/image", params={"image": image_id}, files={"file": (path.name, f)}, timeout=120
        ).status_code


def upload_label(base: str, image_id: str, path: Path) -> int:
    with path.open("rb") as f:
        return requests.put(
            f"{base}/datastore/label",
            params={"image": image_id, "tag": "final"},
            files={"label": (path.name, f)},
            timeout=120,
        ).status_code


def infer(base: str, image_id: str, out: Path) -> dict:
    t0 = time.time()
    r = requests.post(f"{base}/infer/{MODEL}", params={"image": image_id, "output": "image"}, timeout=900)
    if r.status_code == 200:
        out.write_bytes(r.content)
    return {
        "status": r.status_code,
        "seconds": round(time.time() - t0, 1),
        "file": str(out) if r.ok else None,
        "body": None if r.ok else r.text[:2000],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--app", type=Path, required=True)
    ap.add_argument("--studies", type=Path, required=True)
    ap.add_argument("--scan", type=Path, required=True)
    ap.add_argument("--nan_scan", type=Path, required=True)
    ap.add_argument("--train", nargs="+", required=True, help="image:label pairs")
    ap.add_argument("--iterations", type=int, default=4, help="training iterations (one epoch)")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--report", type=Path, required=True)
    a = ap.parse_args(argv)

    base = f"http://127.0.0.1:{a.port}"
    weights = a.app / "model" / MODEL / "models" / "model.pt"
    out_dir = a.report.parent
    report: dict = {"weights_before": sha256(weights)}
    server = start_server(a.venv, a.app, a.studies, a.port, out_dir / "server.log")
    try:
        info = wait_ready(base, server, timeout_s=300)
        report["models"] = sorted(info.get("models", {}))
        report["trainers"] = sorted(info.get("trainers", {}))
        report["upload_scan"] = upload_image(base, "scan", a.scan)
        report["infer_before"] = infer(base, "scan", out_dir / "infer_before.nii.gz")
        report["upload_nan"] = upload_image(base, "nan_scan", a.nan_scan)
        report["infer_nan"] = infer(base, "nan_scan", out_dir / "infer_nan.nii.gz")
        for i, pair in enumerate(a.train):
            image, label = (Path(p) for p in pair.split(":"))
            report[f"upload_train_{i}"] = [
                upload_image(base, f"train_{i}", image),
                upload_label(base, f"train_{i}", label),
            ]
        params = {
            "max_epochs": 1,
            "iterations_per_epoch": a.iterations,
            "val_split": 0.5,
            "device": "cpu",
            "multi_gpu": False,
            "pretrained": True,
            "run_id": "run",
            "tracking": "None",
        }
        t0 = time.time()
        r = requests.post(f"{base}/train/{MODEL}", params={"run_sync": "true"}, json=params, timeout=1800)
        report["train"] = {"status": r.status_code, "seconds": round(time.time() - t0, 1), "body": r.text[:2000]}
        report["weights_after_train"] = sha256(weights)
        report["infer_after"] = infer(base, "scan", out_dir / "infer_after.nii.gz")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        a.report.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
