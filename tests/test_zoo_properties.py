"""MONAI bundle properties (`ConfigWorkflow.check_properties()`, what the Model Zoo CI and MONAI Label ask of a
bundle) for every workflow of every bundle: each config file, alone or in the layers it is documented with.

Fast: the required property ids exist and optional ones are referenced by their conventional ids (MONAI's own
property tables and `_check_optional_id`, without building anything). Then MONAI's full `check_properties()`,
which builds every required property, on the inference workflows (and, marked slow, on training with tiny data)."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow, create_workflow
from monai.bundle.properties import InferProperties, TrainProperties
from monai.bundle.reference_resolver import ReferenceResolver
from monai.bundle.utils import ID_SEP_KEY
from monai.utils import BundleProperty, BundlePropertyConfig

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = ROOT / "bundles"

# (bundle, config files layered in order, MONAI workflow type); the layers are the documented command lines
WORKFLOWS = [
    ("label_ldm", ["inference.yaml"], "inference"),
    ("label_ldm", ["inference.yaml", "paper.yaml"], "inference"),
    ("label_ldm", ["evaluate.yaml"], "eval"),
    ("label_ldm", ["common.yaml", "calibrate_autoencoder.yaml"], "eval"),
    ("label_ldm", ["common.yaml", "train_autoencoder.yaml"], "train"),
    ("label_ldm", ["common.yaml", "train_diffusion.yaml"], "train"),
    ("label_ldm", ["common.yaml", "train_autoencoder.yaml", "paper.yaml"], "train"),
    ("label_ldm", ["inference.yaml", "tiny.yaml"], "inference"),
    ("label_ldm", ["common.yaml", "train_diffusion.yaml", "tiny.yaml"], "train"),
    ("label_ldm", ["common.yaml", "train_autoencoder.yaml", "multi_gpu_train_autoencoder.yaml"], "train"),
    ("label_ldm", ["common.yaml", "train_diffusion.yaml", "multi_gpu_train_diffusion.yaml"], "train"),
    ("brainspade3d", ["inference.yaml"], "inference"),
    ("brainspade3d", ["inference.yaml", "paper.yaml"], "inference"),
    ("brainspade3d", ["inference.yaml", "montage.yaml"], "inference"),
    ("brainspade3d", ["evaluate.yaml"], "eval"),
    ("brainspade3d", ["common.yaml", "train.yaml"], "train"),
    ("brainspade3d", ["common.yaml", "train.yaml", "paper.yaml"], "train"),
    ("brainspade3d", ["inference.yaml", "tiny.yaml"], "inference"),
    ("brainspade3d", ["common.yaml", "train.yaml", "tiny.yaml"], "train"),
    ("brainspade3d", ["common.yaml", "train.yaml", "multi_gpu_train.yaml"], "train"),
    ("segmenter", ["inference.yaml"], "inference"),
    ("segmenter", ["train.yaml"], "train"),
    ("segmenter", ["train.yaml", "multi_gpu_train.yaml"], "train"),
    ("segmenter", ["inference.yaml", "tiny.yaml"], "inference"),
    ("segmenter", ["train.yaml", "tiny.yaml"], "train"),
    ("segmenter", ["train.yaml", "evaluate.yaml"], "eval"),
    ("segmenter", ["train.yaml", "calibrate.yaml"], "eval"),
]
# configs that are no workflow of their own: shared definitions
NOT_WORKFLOWS = {("label_ldm", "common.yaml"), ("brainspade3d", "common.yaml")}


def _files(bundle: str, configs: list[str]) -> list[str]:
    return [str(BUNDLES / bundle / "configs" / c) for c in configs]


def _workflow(bundle: str, configs: list[str], wtype: str, **override) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=_files(bundle, configs),
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=wtype,
        bundle_root=str(BUNDLES / bundle),
        **override,
    )


def _optional_id_conventional(wf: ConfigWorkflow, prop: dict) -> bool:
    """Where the config refers to an optional property from its conventional place (e.g. the trainer's
    `train_handlers`), the reference must be the property's own id (`@train#handlers`), not another id;
    expressions are not checked (MONAI's rule; ids compared in MONAI's normal form, `#` or `::`)."""
    ref_id = prop.get(BundlePropertyConfig.REF_ID)
    if ref_id is None or ref_id.rsplit(ID_SEP_KEY, 1)[-1] in ("validator", "interval"):
        return True  # no reference to check, or one inside a ValidationHandler (checked by MONAI's own run)
    ref = wf.parser.get(ref_id, None)
    if not isinstance(ref, str) or ref.startswith("$"):
        return True
    norm = ReferenceResolver.normalize_id
    return ref.startswith("@") and norm(ref[1:]) == norm(prop[BundlePropertyConfig.ID])


def _ids(w) -> str:
    return f"{w[0]}:{'+'.join(c.removesuffix('.yaml') for c in w[1])}"


def test_every_config_file_is_in_a_checked_workflow():
    covered = {(b, c) for b, cs, _ in WORKFLOWS for c in cs} | NOT_WORKFLOWS
    on_disk = {(p.parent.parent.name, p.name) for p in BUNDLES.glob("*/configs/*.yaml")}
    assert on_disk <= covered, f"configs in no checked workflow: {sorted(on_disk - covered)}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=_ids)
def test_required_properties_defined_and_optional_ones_conventional(workflow):
    bundle, configs, wtype = workflow
    wf = _workflow(bundle, configs, wtype)
    props = TrainProperties if wtype == "train" else InferProperties
    assert wf.properties is not None and set(props) <= set(wf.properties)
    missing = [
        n for n, p in props.items() if p[BundleProperty.REQUIRED] and p[BundlePropertyConfig.ID] not in wf.parser
    ]
    assert not missing, f"{bundle} {configs}: required properties missing: {missing}"
    wrong = [n for n, p in props.items() if not p[BundleProperty.REQUIRED] and not _optional_id_conventional(wf, p)]
    assert not wrong, f"{bundle} {configs}: optional properties under other ids: {wrong}"


@pytest.mark.parametrize("bundle", ["label_ldm", "brainspade3d"])
def test_generative_inference_check_properties_builds_every_property(bundle, tmp_path):
    """MONAI's own check (as the Zoo's verify_bundle calls it: create_workflow, then check_properties)."""
    wf = create_workflow(
        config_file=_files(bundle, ["inference.yaml"]),
        workflow_type="inference",
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=False,
        bundle_root=str(BUNDLES / bundle),
        output_dir=str(tmp_path / "out"),
    )
    assert wf.check_properties() == []
    assert callable(wf.evaluator.run) and wf.dataset is None and wf.dataset_dir is None


@pytest.mark.slow
def test_training_check_properties_build_on_tiny_data(tiny_phantoms, tmp_path):
    d = str(Path(tiny_phantoms).parent)
    cases = [
        (
            "label_ldm",
            ["common.yaml", "train_autoencoder.yaml"],
            {"profile": "tiny", "dataset_dir": d, "run_dir": str(tmp_path / "ae"), "train_limit": 2},
        ),
        (
            "label_ldm",
            ["common.yaml", "train_diffusion.yaml"],
            {"profile": "tiny", "dataset_dir": d, "run_dir": str(tmp_path / "dm"), "train_limit": 2},
        ),
        (
            "brainspade3d",
            ["common.yaml", "train.yaml"],
            {"profile": "tiny", "dataset_dir": d, "run_dir": str(tmp_path / "g")},
        ),
    ]
    for bundle, configs, override in cases:
        wf = create_workflow(
            config_file=_files(bundle, configs),
            workflow_type="train",
            logging_file=False,
            meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
            bundle_root=str(BUNDLES / bundle),
            **override,
        )
        assert wf.check_properties() == [], (bundle, configs)
