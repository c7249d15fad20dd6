"""MONAI Bundle specification checks for all three bundles, offline (the Model Zoo CI's checks, minus
the schema download: the fields are tested directly)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_harness import SPEC_FIELDS
from monai.bundle import ConfigParser

from brainspade.labels import LABELS

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = ("label_ldm", "brainspade3d", "segmenter")
REQUIRED_META = SPEC_FIELDS
# the label map each bundle reads or writes (network_data_format side, port name)
LABEL_PORTS = {"label_ldm": ("outputs", "pred"), "brainspade3d": ("inputs", "label"), "segmenter": ("outputs", "pred")}
INFERENCE_IDS = ("bundle_root", "device", "network_def", "inferer", "run", "output_dir")
ZOO_FILE_LIMIT = 25 * 1024 * 1024


def _meta(bundle: str) -> dict:
    return json.loads((ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_required_files_present(bundle):
    b = ROOT / "bundles" / bundle
    for rel in ("configs/metadata.json", "configs/inference.yaml", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (b / rel).is_file(), f"{bundle}: {rel} missing"
    weights = [p for p in (b / "models").glob("*") if p.suffix in (".pt", ".pth", ".ts")]
    assert weights, f"{bundle}: no shipped weights in models/"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_fields_filled_and_version_in_changelog(bundle):
    meta = _meta(bundle)
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    assert not missing, f"{bundle}: metadata lacks {missing}"
    assert meta["version"] in meta["changelog"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    nd = meta["network_data_format"]
    assert nd.get("inputs") and nd.get("outputs")
    for req in ("monai", "torch", "nibabel"):
        assert any(req in k for k in [*meta["required_packages_version"], "monai", "torch"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_label_classes_come_from_the_one_table(bundle):
    meta = _meta(bundle)
    side, name = LABEL_PORTS[bundle]
    port = meta["network_data_format"][side][name]
    assert port["channel_def"] == {str(lab.code): lab.name for lab in LABELS}, f"{bundle}: {side} {name} channel_def"
    assert port["num_channels"] == len(LABELS), f"{bundle}: {side} {name} num_channels"
    missing = [lab.name for lab in LABELS if f"{lab.code} {lab.name}" not in meta["label_classes"]]
    assert not missing, f"{bundle}: label_classes lacks {missing}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_config_has_conventional_ids_and_no_absolute_paths(bundle):
    cfg_dir = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config(str(cfg_dir / "inference.yaml"))
    missing = [i for i in INFERENCE_IDS if i not in parser]
    assert not missing, f"{bundle}: inference.yaml lacks ids {missing}"
    for f in cfg_dir.glob("*.yaml"):
        text = f.read_text()
        assert not re.search(r"['\" ](/work|/home|/tmp|/root)/", text), f"{f.name} holds an absolute path"


def test_file_sizes_within_zoo_and_project_limits():
    total = 0
    for bundle in BUNDLES:
        for p in (ROOT / "bundles" / bundle).rglob("*"):
            if p.is_file():
                assert p.stat().st_size <= ZOO_FILE_LIMIT, f"{p} exceeds the Model Zoo's 25 MB per file"
                if "models" in p.parts:
                    total += p.stat().st_size
    assert total <= 60 * 1024 * 1024, f"shipped weights total {total / 2**20:.1f} MB > 60 MB"
