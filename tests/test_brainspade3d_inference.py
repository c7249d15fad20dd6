"""brainspade3d's main command on tiny configs: the chain after label_ldm, outputs, label_file and style_image
modes, sharded + resumable generation, the metadata shapes and the paper profile."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from brainspade3d_helpers import CONFIGS, TINY, common_parser, make_tiny_chain, one_torch_thread, run_inference
from monai.bundle import ConfigParser

from brainspade.labels import NUM_LABELS
from brainspade.profiles import get_profile
from brainspade.sharding import SampleLocks

_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def chain(tiny_phantoms, tmp_path_factory):
    return make_tiny_chain(tiny_phantoms, tmp_path_factory.mktemp("b3d_weights"))


def _files(folder: Path) -> list[str]:
    """The samples' files (not the folder's claim file, brainspade.sharding.SampleLocks)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != SampleLocks.NAME)


def test_chained_inference_writes_pairs_of_several_contrasts(chain, tmp_path):
    out = tmp_path / "out"
    run_inference(chain, output_dir=str(out), contrast="t1,flair", num_samples=2, seed=3)
    ids = ["sample-000000", "sample-000001"]
    expected = sorted(
        [f"{i}{s}" for i in ids for s in ("_t1.nii.gz", "_flair.nii.gz", "_label.nii.gz", ".json", ".png")]
        + ["datalist.json"]
    )
    assert _files(out) == expected
    prof = get_profile("tiny")
    side = json.loads((out / "sample-000001.json").read_text())
    assert side["synthetic"] is True and side["contrast"] == ["t1", "flair"] and side["base_seed"] == 3
    assert set(side["requested"]) == set(side["achieved"]) == {"wmh_ml", "tumour_ml", "oedema_ml", "enhancing_ml"}
    assert side["models"]["brainspade3d"] and "label_ldm" in side["models"] and side["label_source"] == "label_ldm"
    lab = nib.load(str(out / "sample-000001_label.nii.gz"))
    labels = np.asarray(lab.dataobj)
    assert labels.shape == prof.shape and labels.min() >= 0 and labels.max() < NUM_LABELS
    np.testing.assert_allclose(lab.affine, prof.affine)
    t1, flair = (nib.load(str(out / f"sample-000001_{c}.nii.gz")) for c in ("t1", "flair"))
    for img in (t1, flair):
        assert img.shape == prof.shape
        np.testing.assert_allclose(img.affine, lab.affine)
        assert np.isfinite(img.get_fdata()).all()
    # one label map, two contrasts: the contrast condition changes the image
    assert not np.allclose(t1.get_fdata(), flair.get_fdata())
    dl = json.loads((out / "datalist.json").read_text())["training"]
    assert [e["id"] for e in dl] == ids and dl[0]["t1"] == "sample-000000_t1.nii.gz" and dl[0]["synthetic"]


def _content(folder: Path) -> dict:
    """Everything a sample holds except timings and the shard that made it."""
    out = {}
    for p in sorted(folder.glob("sample-*")):
        if p.suffix == ".json":
            d = json.loads(p.read_text())
            for k in ("time_s", "shard"):
                d.pop(k)
            d["label_ldm"].pop("time_s", None)
            out[p.name] = d
        elif p.name.endswith(".nii.gz"):
            out[p.name] = np.asarray(nib.load(str(p)).dataobj).tobytes()
    return out


def test_two_shards_make_exactly_the_samples_of_one_and_a_rerun_skips(chain, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    run_inference(chain, output_dir=str(one), num_samples=3, seed=5, preview=False)
    run_inference(chain, output_dir=str(two), num_samples=3, seed=5, preview=False, shard=1, num_shards=2)
    assert not (two / "datalist.json").exists()  # shard 0 still missing: no datalist yet
    assert _files(two) == ["sample-000001.json", "sample-000001_label.nii.gz", "sample-000001_t1.nii.gz"]
    run_inference(chain, output_dir=str(two), num_samples=3, seed=5, preview=False, shard=0, num_shards=2)
    assert _files(one) == _files(two)
    assert _content(one) == _content(two)
    assert (one / "datalist.json").read_text() == (two / "datalist.json").read_text()

    # a killed run leaves a sample without its sidecar: the rerun redoes only that one
    stamp = {p.name: p.stat().st_mtime_ns for p in two.iterdir()}
    (two / "sample-000002.json").unlink()
    capsys.readouterr()
    run_inference(chain, output_dir=str(two), num_samples=3, seed=5, preview=False, resume=True)
    log = capsys.readouterr().out
    assert "resuming: 2 of 3" in log and "wrote 1 sample(s)" in log
    for name in ("sample-000000_t1.nii.gz", "sample-000001.json"):
        assert (two / name).stat().st_mtime_ns == stamp[name]
    assert _content(one) == _content(two)


def test_merge_writes_the_datalist_only_when_every_sample_exists(chain, tmp_path):
    out = tmp_path / "out"
    run_inference(chain, output_dir=str(out), num_samples=2, seed=1, preview=False, shard=0, num_shards=2)
    with pytest.raises(SystemExit):
        run_inference(chain, output_dir=str(out), num_samples=2, merge=True)
    assert not (out / "datalist.json").exists()
    run_inference(chain, output_dir=str(out), num_samples=2, seed=1, preview=False, shard=1, num_shards=2)
    (out / "datalist.json").unlink()
    run_inference(chain, output_dir=str(out), num_samples=2, merge=True)
    assert len(json.loads((out / "datalist.json").read_text())["training"]) == 2


def _user_label_map(tmp_path: Path, pv: bool = False) -> tuple[Path, np.ndarray, np.ndarray]:
    """A label map on the user's own grid: LAS orientation, 4 mm x 5 mm x 4 mm, another shape."""
    prof = get_profile("tiny")
    shape = (40, 30, 44)
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(ii**2 + jj**2 + kk**2)
    labels = np.zeros(shape, np.int16)
    labels[r < 0.9] = 1
    labels[r < 0.8] = 2
    labels[r < 0.6] = 3
    labels[(r < 0.2) & (ii > 0)] = 7
    labels[(r < 0.3) & (ii < 0)] = 8
    affine = np.diag([-4.0, 5.0, 4.0, 1.0])
    affine[:3, 3] = [80, -100, -70]
    data = labels
    if pv:
        data = np.eye(NUM_LABELS, dtype=np.float32)[labels]  # (X, Y, Z, 10): NIfTI stores channels last
    path = tmp_path / ("user_pv.nii.gz" if pv else "user_labels.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), str(path))
    assert prof.shape != shape
    return path, labels, affine


@pytest.mark.parametrize("pv", [False, True])
def test_label_file_image_comes_back_on_the_users_grid(chain, tmp_path, pv):
    path, labels, affine = _user_label_map(tmp_path, pv)
    out = tmp_path / "out"
    run_inference(chain, output_dir=str(out), label_file=str(path), contrast="t2")
    stem = "user" if not pv else "user_pv"  # a trailing _labels is dropped: user_t2.nii.gz, not user_labels_t2
    assert _files(out) == sorted(f"{stem}{s}" for s in ("_t2.nii.gz", "_label.nii.gz", ".json", ".png"))
    img, lab = nib.load(str(out / f"{stem}_t2.nii.gz")), nib.load(str(out / f"{stem}_label.nii.gz"))
    assert img.shape == lab.shape == labels.shape
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(lab.affine, affine)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), labels)
    arr = img.get_fdata()
    assert np.isfinite(arr).all() and np.abs(arr[labels > 0]).sum() > 0
    side = json.loads((out / f"{stem}.json").read_text())
    assert side["label_source"] == "label_file" and side["achieved"]["tumour_ml"] > 0 and side["requested"] is None


def test_style_image_sets_the_appearance(chain, tiny_phantoms, tmp_path):
    dl = json.loads(Path(tiny_phantoms).read_text())
    ref = Path(tiny_phantoms).parent / dl["training"][0]["t2"]
    a, b = tmp_path / "a", tmp_path / "b"
    run_inference(chain, output_dir=str(a), style_image=str(ref), preview=False, seed=2)
    run_inference(chain, output_dir=str(b), preview=False, seed=2)
    side = json.loads((a / "sample-000000.json").read_text())
    assert side["style_image"] == str(ref.resolve()) and side["style_seed"] is None
    img_a, img_b = (nib.load(str(d / "sample-000000_t1.nii.gz")).get_fdata() for d in (a, b))
    np.testing.assert_array_equal(
        nib.load(str(a / "sample-000000_label.nii.gz")).get_fdata(),
        nib.load(str(b / "sample-000000_label.nii.gz")).get_fdata(),
    )
    assert not np.allclose(img_a, img_b)  # same label map, other style code


def _style_run(chain: dict, out: Path, style: Path, label_file: str, seed: int) -> np.ndarray:
    run_inference(chain, output_dir=str(out), style_image=str(style), label_file=label_file, preview=False, seed=seed)
    (img,) = out.glob("*_t1.nii.gz")
    return np.asarray(nib.load(str(img)).dataobj)


def test_style_image_from_a_real_scan_on_any_grid(chain, tiny_phantoms, tmp_path):
    """`--style_image` end to end with a real scan (nilearn's MNI152 T1, 1 mm, re-saved permuted and flipped) on the
    tiny grid: the style code comes from the image alone (same image, other seed: identical output), and another
    style image gives another output. Whether the appearance carries over needs trained weights (the slow test)."""
    from brainspade.realscan import write_mni_t1

    dl = json.loads(Path(tiny_phantoms).read_text())
    label_file = str(Path(tiny_phantoms).parent / dl["test"][0]["pv"])
    real = write_mni_t1(tmp_path / "mni_reoriented.nii.gz", "reoriented")
    assert nib.aff2axcodes(nib.load(str(real)).affine) != ("R", "A", "S")
    phantom = Path(tiny_phantoms).parent / dl["training"][0]["t2"]
    a = _style_run(chain, tmp_path / "a", real, label_file, seed=2)
    again = _style_run(chain, tmp_path / "again", real, label_file, seed=9)
    other = _style_run(chain, tmp_path / "other", phantom, label_file, seed=2)
    assert np.isfinite(a).all() and np.abs(a).sum() > 0
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, other)
    side = json.loads(next((tmp_path / "a").glob("*.json")).read_text())
    assert side["style_image"] == str(real.resolve()) and side["style_seed"] is None


# issue 16: the 0.2.0 generator uses its style code (sampled styles spread 0.5-0.6x the phantom scanners, 0.1.0:
# 0.04x), but --style_image does not yet carry a reference's appearance reliably (2 of 5 pairs here, 50-100 % in
# evaluate.yaml); the test stays the target
STYLE_NOT_YET = (
    "shipped brainspade3d 0.2.0 weights: the style-transferred profile is closer to the reference than the "
    "sampled-style median in 2 of 5 pairs (target >= 90 %, issue 16)"
)
PHANTOMS = Path(__file__).resolve().parent.parent / "data" / "phantoms" / "default" / "datalist.json"


@pytest.mark.slow
@pytest.mark.xfail(reason=STYLE_NOT_YET, raises=AssertionError, strict=False)
@pytest.mark.skipif(not PHANTOMS.is_file(), reason="needs data/phantoms/default (python -m brainspade.phantom ...)")
def test_style_image_carries_the_appearance_with_the_shipped_weights(tmp_path):
    """Main command, default profile, shipped weights: for held-out phantom pairs (style image X = subject i's image,
    label map = subject j's), the per-tissue profile (evaluate.style_profile) of the image made with --style_image X
    is closer to X's than the median profile over sampled styles of the same label map is (issue 16: >= 90 %)."""
    from monai.bundle import run

    from brainspade.bundle import load_scripts
    from brainspade.labels import pv_to_int

    ev = load_scripts(CONFIGS.parent, "brainspade3d_scripts").evaluate
    test = json.loads(PHANTOMS.read_text())["test"]
    root, cpu = PHANTOMS.parent, "$torch.device('cpu')"
    results = []
    for i, (contrast, x, j) in enumerate(
        [("t1", 0, 1), ("t2", 1, 2), ("flair", 2, 3), ("t1ce", 3, 4), ("flair", 4, 5)]
    ):
        ref, label_file = root / test[x][contrast], str(root / test[j]["pv"])
        common = {"config_file": str(CONFIGS / "inference.yaml"), "label_file": label_file, "contrast": contrast}
        run(**common, output_dir=str(tmp_path / f"style{i}"), style_image=str(ref), preview=False, device=cpu)
        run(**common, output_dir=str(tmp_path / f"smp{i}"), num_samples=5, seed=i, preview=False, device=cpu)
        labels = pv_to_int(nib.load(label_file).get_fdata(dtype=np.float32).transpose(3, 0, 1, 2))
        ref_labels = pv_to_int(nib.load(str(root / test[x]["pv"])).get_fdata(dtype=np.float32).transpose(3, 0, 1, 2))
        prof = [ev.style_profile(nib.load(str(p)).get_fdata(), labels) for p in tmp_path.glob(f"smp{i}/*_{contrast}.*")]
        (made,) = (tmp_path / f"style{i}").glob(f"*_{contrast}.nii.gz")
        results.append(
            ev.transfer_closer(
                ev.style_profile(nib.load(str(made)).get_fdata(), labels),
                ev.style_profile(nib.load(str(ref)).get_fdata(), ref_labels),
                ev.median_profile(prof),
            )
        )
    print("style transfer (closer, d_transfer, d_sampled_median):", results)
    assert len(prof) == 5 and np.mean([r[0] for r in results]) >= 0.9, results


def test_default_main_command_resolves_to_the_shipped_files():
    """`python -m monai.bundle run --config_file .../inference.yaml` with no arguments: default profile, shipped weights
    of both bundles, outputs in ./output (the run itself needs the weights; the lead's end-to-end check runs it)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    assert parser["output_dir"] == "output" and parser["contrast"] == "t1" and parser["num_samples"] == 1
    ckpt = Path(parser.get_parsed_content("ckpt_path"))
    assert ckpt.parts[-3:] == ("brainspade3d", "models", "model.pt")
    net = parser.get_parsed_content("network_def")
    assert net.input_shape == get_profile("default").shape
    ldm = parser.get_parsed_content("label_ldm")
    assert Path(ldm.get_parsed_content("diffusion_path")).parts[-3:] == ("label_ldm", "models", "model.pt")
    assert ldm["num_samples"] == 1 and ldm["profile"] == "default"


def test_generator_runs_on_its_metadata_shapes():
    meta = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]
    lab, con, sty = (meta["inputs"][k] for k in ("label", "contrast", "style"))
    pred = meta["outputs"]["pred"]
    net = common_parser(profile="default").get_parsed_content("network_def").eval()
    assert tuple(lab["spatial_shape"]) == net.input_shape and lab["num_channels"] == NUM_LABELS
    shipped = ConfigParser.load_config_file(str(CONFIGS / "common.yaml"))
    assert sty["num_channels"] == shipped["z_dim"] and tuple(pred["spatial_shape"]) == net.input_shape
    pv = torch.zeros(1, lab["num_channels"], *lab["spatial_shape"])
    pv[:, 3] = 1.0
    with torch.no_grad():
        z = torch.randn(1, TINY["z_dim"])  # tiny width; the shipped width is the metadata's num_channels
        out = net(pv, torch.tensor([con["value_range"][1]]), z=z)
    assert out.shape == (1, pred["num_channels"], *pred["spatial_shape"]) and str(out.dtype).endswith(pred["dtype"])
    assert set(con["channel_def"].values()) == {"t1", "t2", "flair", "t1ce"}


def test_paper_profile_config_resolves_at_reference_sizes():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "common.yaml"), str(CONFIGS / "paper.yaml")])
    parser.update({"device": "$torch.device('cpu')"})
    assert parser.get_parsed_content("image_shape") == [128, 160, 128]
    with torch.device("meta"):  # shapes and counts only: no memory for ~100M weights on a CI machine
        net = parser.get_parsed_content("network_def")
    n = sum(p.numel() for p in net.parameters())
    assert 20e6 < n < 400e6, n
    assert net.z_dim == 256 and len(parser.get_parsed_content("channels")) == 5
    assert net.use_checkpoint  # paper training recomputes decoder activations (GPU memory budget)
    # inference reads the same sizes through common_overrides
    inf = ConfigParser()
    inf.read_config([str(CONFIGS / "inference.yaml"), str(CONFIGS / "paper.yaml")])
    assert inf.get_parsed_content("common_overrides")["channels"] == parser.get_parsed_content("channels")
    assert inf["profile"] == "paper" and inf.get_parsed_content("ckpt_path").endswith("model_paper.pt")


def test_main_command_from_a_copied_bundle_folder(chain, tmp_path):
    """A real `python -m monai.bundle run` from the bundle's own folder, with brainspade3d and label_ldm copied
    elsewhere on disk: the chain finds its sibling bundle and its scripts by the config's location."""
    import shutil

    from brainspade3d_helpers import write_overrides
    from cli_harness import run_cmd

    for name in ("brainspade3d", "label_ldm"):
        shutil.copytree(
            CONFIGS.parent.parent / name,
            tmp_path / "zoo" / name,
            ignore=shutil.ignore_patterns("models", "runs", "__pycache__"),
        )
    own = tmp_path / "zoo" / "brainspade3d"
    meta = own / "configs" / "metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "9.9.9"}))  # marks the copy
    over = write_overrides(chain, tmp_path / "tiny.json")
    res = run_cmd(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            repr(["configs/inference.yaml", "configs/tiny.yaml", over]),
            "--output_dir",
            "out",
            "--contrast",
            "t1ce",
            "--preview",
            "false",
        ],
        cwd=own,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (own / "out" / "sample-000000_t1ce.nii.gz").is_file() and (own / "out" / "datalist.json").is_file()
    side = json.loads((own / "out" / "sample-000000.json").read_text())
    assert side["models"]["brainspade3d"] == "9.9.9" and side["models"]["label_ldm"] and side["contrast"] == ["t1ce"]


def test_shard_comes_from_torchrun_environment_or_options(monkeypatch):
    from brainspade3d_helpers import common_parser as _cp

    from brainspade.errors import InputError

    inf = _cp().get_parsed_content("scripts").inference
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert inf.resolve_shard() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert inf.resolve_shard() == (3, 4)
    assert inf.resolve_shard(1, 2) == (1, 2)  # options win over the environment
    with pytest.raises(InputError, match=r"accepted: 0\.\.1"):
        inf.resolve_shard(2, 2)


def test_pathology_montage_for_the_docs(chain, tmp_path, capsys):
    png = tmp_path / "docs" / "montage.png"
    run_inference(chain, "montage.yaml", montage_path=str(png))
    log = capsys.readouterr().out
    assert png.is_file() and png.stat().st_size > 1000
    assert "montage (" in log and "x 4 contrasts" in log and "healthy: achieved" in log
