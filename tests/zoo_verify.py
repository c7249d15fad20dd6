"""The Model Zoo's bundle checks, offline, in our own words, for a folder laid out as the Zoo's `models/<bundle>/`:

    python tests/zoo_verify.py --models_path DIR --bundle segmenter --schemas tests/data/schemas

1. directory: configs/metadata.json, LICENSE, models/model.pt and configs/inference.(json|yaml|yml) are there;
2. version: metadata's version is a key of its changelog;
3. metadata: validates against the schema its `schema` field names (a local copy: nothing is downloaded);
4. properties: the inference config's `check_properties()` finds every required property (MONAI builds them);
5. data shape (`verify_net_in_out`) and TorchScript export of models/model.pt, except for generative bundles,
   which the Zoo excludes from both for its own generative bundles (GENERATIVE below).

Run it in a process where `brainspade` cannot be imported to show an exported bundle needs nothing else.
Exit status 0 and one `ok: <check>` line per check; the first failing check raises.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# the Zoo's exclusions (ci/bundle_custom_data.py) apply to generators: no fixed input/output shape, no TorchScript
GENERATIVE = {"label_ldm", "brainspade3d"}


def _config(bundle_path: Path, name: str) -> Path:
    for suffix in ("json", "yaml", "yml"):
        p = bundle_path / "configs" / f"{name}.{suffix}"
        if p.is_file():
            return p
    raise ValueError(f"configs/{name}.(json|yaml|yml) is missing")


def verify(models_path: Path, bundle: str, schemas: Path) -> list[str]:
    from monai.bundle import ckpt_export, create_workflow, verify_metadata, verify_net_in_out

    path = models_path / bundle
    done = []
    for rel in ("configs/metadata.json", "LICENSE", "models/model.pt"):
        if not (path / rel).is_file():
            raise ValueError(f"{bundle}: {rel} is missing")
    inference = _config(path, "inference")
    done.append("directory")
    meta_file = path / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("version") not in meta.get("changelog", {}):
        raise ValueError(f"{bundle}: version {meta.get('version')} is not in the changelog")
    done.append("version")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "schema.json"
        shutil.copy(schemas / meta["schema"].rsplit("/", 1)[-1], local)
        verify_metadata(meta_file=str(meta_file), filepath=str(local))
    done.append("metadata")
    sys.path.insert(0, str(path))  # as the Zoo's verify does, for bundles whose configs import `scripts`
    with tempfile.TemporaryDirectory() as tmp:
        wf = create_workflow(
            config_file=str(inference),
            meta_file=str(meta_file),
            workflow_type="inference",
            logging_file=False,
            bundle_root=str(path),
            output_dir=os.path.join(tmp, "out"),
        )
        missing = wf.check_properties()
        if missing:
            raise ValueError(f"{bundle}: inference properties missing: {missing}")
    done.append("properties")
    if bundle in GENERATIVE:
        return done
    verify_net_in_out(
        net_id="network_def", meta_file=str(meta_file), config_file=str(inference), bundle_root=str(path), device="cpu"
    )
    done.append("data shape")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_export(
            net_id="network_def",
            filepath=os.path.join(tmp, "verify_model.ts"),
            ckpt_file=str(path / "models" / "model.pt"),
            meta_file=str(meta_file),
            config_file=str(inference),
            bundle_root=str(path),
            key_in_ckpt="",
        )
    done.append("torchscript")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models_path", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--schemas", required=True)
    args = ap.parse_args(argv)
    for check in verify(Path(args.models_path), args.bundle, Path(args.schemas)):
        print(f"ok: {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
