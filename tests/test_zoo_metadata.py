"""Model Zoo metadata check, offline: every bundle's configs/metadata.json validates against the schema it names
(copies in tests/data/schemas/), through jsonschema and through MONAI's own `verify_metadata`; the label fields
are the ones brainspade.metadata computes from the label table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from monai.bundle import verify_metadata

from brainspade import metadata as bundle_metadata
from brainspade.labels import LABELS

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "data" / "schemas"
BUNDLES = bundle_metadata.BUNDLE_NAMES


def _meta(bundle: str) -> dict:
    return json.loads(bundle_metadata.metadata_path(bundle).read_text(encoding="utf-8"))


def schema_for(meta: dict) -> Path:
    """The local copy of the schema file that the metadata names by URL."""
    path = SCHEMAS / meta["schema"].rsplit("/", 1)[-1]
    assert path.is_file(), f"schema {meta['schema']} has no copy in {SCHEMAS}"
    return path


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_validates_against_its_named_schema(bundle):
    meta = _meta(bundle)
    jsonschema.validate(instance=meta, schema=json.loads(schema_for(meta).read_text()))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_monai_verify_metadata_offline(bundle, tmp_path):
    """MONAI's own check, as the Zoo CI calls it; the schema is already at `filepath`, so nothing is downloaded."""
    meta = _meta(bundle)
    local = tmp_path / "schema.json"
    shutil.copy(schema_for(meta), local)
    verify_metadata(meta_file=str(bundle_metadata.metadata_path(bundle)), filepath=str(local))


def test_label_ldm_names_the_latent_diffusion_schema():
    """label_ldm is an autoencoder + latent generator: the LDM schema, with both data formats filled."""
    meta = _meta("label_ldm")
    assert "generator_ldm" in meta["schema"]
    for key in ("autoencoder_data_format", "generator_data_format", "optional_packages_version"):
        assert meta.get(key), key
    assert meta["optional_packages_version"] == meta["required_packages_version"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_label_fields_are_generated_from_the_label_table(bundle):
    meta = _meta(bundle)
    assert bundle_metadata.apply(meta, bundle) == meta, "metadata.json drifted: run python -m brainspade.metadata"
    for field in ("label_classes", "pred_classes"):
        if field in meta:
            assert isinstance(meta[field], str), field
    assert all(f"{lab.code} {lab.name}" in meta["label_classes"] for lab in LABELS)


def test_metadata_check_command_reports_a_drifted_file(tmp_path, capsys):
    for b in BUNDLES:
        dst = tmp_path / b / "configs"
        dst.mkdir(parents=True)
        shutil.copy(bundle_metadata.metadata_path(b), dst / "metadata.json")
    assert bundle_metadata.main(["--check", "--bundles_dir", str(tmp_path)]) == 0
    meta_file = tmp_path / "segmenter" / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["label_classes"] = {"0": "background"}
    meta_file.write_text(json.dumps(meta, indent=4))
    assert bundle_metadata.main(["--check", "--bundles_dir", str(tmp_path)]) == 1
    assert "segmenter" in capsys.readouterr().out
    assert bundle_metadata.main(["--bundles_dir", str(tmp_path)]) == 0
    assert bundle_metadata.main(["--check", "--bundles_dir", str(tmp_path)]) == 0
