"""`python -m brainspade.export`: self-contained bundles (Model Zoo / MONAI Label layout) that need no installed
`brainspade`. The exported bundles run in processes where `brainspade` cannot be imported (a shadowing package
that raises ImportError comes first on PYTHONPATH, and the working directory is not the repository)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _segmenter_helpers import write_nifti

from brainspade import export as bundle_export

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "data" / "schemas"
ENV = {"OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert bundle_export.main(["--bundle", "all", "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def no_brainspade(tmp_path_factory) -> dict[str, str]:
    """An environment where `import brainspade` fails."""
    shadow = tmp_path_factory.mktemp("shadow")
    (shadow / "brainspade").mkdir()
    (shadow / "brainspade" / "__init__.py").write_text("raise ImportError('brainspade is not installed here')\n")
    return {**os.environ, **ENV, "PYTHONPATH": str(shadow)}


def _python(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_export_writes_each_bundle_whole_with_the_vendored_library(exported):
    for bundle in bundle_export.BUNDLE_NAMES:
        b = exported / bundle
        for part in (
            "configs/metadata.json",
            "configs/inference.yaml",
            "docs/README.md",
            "models/model.pt",
            "LICENSE",
            "scripts/__init__.py",
            f"scripts/{bundle_export.LIB}/__init__.py",
        ):
            assert (b / part).is_file(), f"{bundle}: {part}"
        lib = b / "scripts" / bundle_export.LIB
        for src in (ROOT / "brainspade").rglob("*.py"):
            rel = src.relative_to(ROOT / "brainspade")
            if "__pycache__" not in rel.parts and rel.name not in bundle_export.NOT_VENDORED:
                assert (lib / rel).is_file(), f"{bundle}: {rel} not vendored"


def test_brainspade3d_export_brings_the_chained_label_ldm(tmp_path):
    paths = bundle_export.export("brainspade3d", tmp_path)
    assert [p.name for p in paths] == ["brainspade3d", "label_ldm"]


def test_nothing_in_an_export_imports_brainspade(exported):
    for path in exported.rglob("*"):
        if path.suffix == ".py":
            text = path.read_text()
            bad = re.findall(r"^\s*(?:from brainspade[\s.]|import brainspade\b).*$", text, re.M)
            assert not bad, f"{path}: {bad}"
        elif (
            path.suffix == ".yaml"
        ):  # (metadata.json text may name the phantom generator; its packages are checked below)
            for line in path.read_text().splitlines():
                code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
                uses = re.findall(r"(?<![\w.])brainspade\.\w+", code)
                assert not uses, f"{path}: {line.strip()}"
    meta = json.loads((exported / "segmenter" / "configs" / "metadata.json").read_text())
    assert "brainspade" not in meta["required_packages_version"]


def test_export_refuses_bad_options_with_one_line(tmp_path):
    res = _python(
        ["-m", "brainspade.export", "--bundle", "nope", "--output_dir", str(tmp_path)],
        {**os.environ, "PYTHONPATH": str(ROOT)},
        tmp_path,
    )
    assert res.returncode == 2 and res.stderr.strip().startswith("error: unknown bundle 'nope'")
    res = _python(
        ["-m", "brainspade.export", "--bundle", "segmenter", "--output_dir", str(ROOT / "bundles")],
        {**os.environ, "PYTHONPATH": str(ROOT)},
        tmp_path,
    )
    assert res.returncode == 2 and "inside the repository's bundles/" in res.stderr


def test_exported_segmenter_runs_without_brainspade_and_matches_the_repository(exported, no_brainspade, tmp_path):
    import nibabel as nib
    from _segmenter_helpers import run_bundle

    aff = np.array([[-3.0, 0, 0, 30], [0, 2.5, 0, -30], [0, 0, 3.0, -20], [0, 0, 0, 1]])
    img = write_nifti(tmp_path / "scan.nii.gz", np.random.default_rng(1).random((18, 22, 16)).astype(np.float32), aff)
    cfg = exported / "segmenter" / "configs" / "inference.yaml"
    res = _python(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(cfg),
            "--input_image",
            str(img),
            "--output_dir",
            str(tmp_path / "export_out"),
            "--profile",
            "tiny",
        ],
        no_brainspade,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run_bundle(
        str(ROOT / "bundles" / "segmenter" / "configs" / "inference.yaml"),
        input_image=str(img),
        output_dir=str(tmp_path / "repo_out"),
        profile="tiny",
        bundle_root=str(ROOT / "bundles" / "segmenter"),
    )
    a = nib.load(tmp_path / "export_out" / "scan_seg.nii.gz")
    b = nib.load(tmp_path / "repo_out" / "scan_seg.nii.gz")
    assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and np.allclose(a.affine, b.affine)
    assert json.loads((tmp_path / "export_out" / "scan_volumes.json").read_text()) == json.loads(
        (tmp_path / "repo_out" / "scan_volumes.json").read_text()
    )


@pytest.mark.parametrize(
    "bundle,args,message",
    [
        ("segmenter", ["--input_image", "missing.nii.gz"], r"^error: input image '.*missing.nii.gz' does not exist"),
        # raised inside the chained label_ldm (its own copy of the library), reported by brainspade3d's run
        ("brainspade3d", ["--tumour_ml", "999"], r"^error: tumour_ml=999 mL is outside the trained range"),
    ],
)
def test_a_bad_input_to_an_export_is_one_error_line(exported, no_brainspade, tmp_path, bundle, args, message):
    cfg = exported / bundle / "configs" / "inference.yaml"
    res = _python(
        ["-m", "monai.bundle", "run", "--config_file", str(cfg), "--output_dir", str(tmp_path / "o"), *args],
        no_brainspade,
        tmp_path,
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(lines) == 1 and re.search(message, lines[0]), res.stderr[-3000:]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("bundle", bundle_export.BUNDLE_NAMES)
def test_exports_pass_the_zoo_checks_offline(exported, no_brainspade, bundle):
    """tests/zoo_verify.py: the Zoo's checks in our words, on the export laid out as the Zoo's models/ folder."""
    res = _python(
        [
            str(ROOT / "tests" / "zoo_verify.py"),
            "--models_path",
            str(exported),
            "--bundle",
            bundle,
            "--schemas",
            str(SCHEMAS),
        ],
        no_brainspade,
        exported,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    expected = ["directory", "version", "metadata", "properties"]
    if bundle not in ("label_ldm", "brainspade3d"):  # the Zoo's own exclusions for generative bundles
        expected += ["data shape", "torchscript"]
    assert [ln[4:] for ln in res.stdout.splitlines() if ln.startswith("ok: ")] == expected


@pytest.mark.slow
def test_exported_main_command_runs_from_the_bundle_folder(exported, no_brainspade, tmp_path):
    """The Zoo's way: from the bundle folder, `--config_file configs/inference.yaml`; brainspade3d chains the
    exported label_ldm beside it (shipped weights, one sample)."""
    res = _python(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.yaml",
            "--output_dir",
            str(tmp_path / "o"),
            "--preview",
            "false",
        ],
        no_brainspade,
        exported / "brainspade3d",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "o" / "sample-000000_t1.nii.gz").is_file()
