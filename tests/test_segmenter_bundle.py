"""Segmenter bundle: Model Zoo checks (metadata from the label table, properties, verify_net_in_out,
TorchScript export) and MONAI Label's view of the bundle."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _segmenter_helpers import BUNDLE, INFER, META, TINY_CHANNELS, TRAIN, tiny_train_overrides, write_nifti
from cli_harness import SPEC_FIELDS
from monai.bundle import ConfigParser, ckpt_export, create_workflow, verify_net_in_out

from brainspade.labels import LABELS, NUM_LABELS


def _metadata_module():
    spec = importlib.util.spec_from_file_location("segmenter_metadata", BUNDLE / "scripts" / "metadata.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_metadata_label_parts_equal_the_label_table():
    meta = json.loads(Path(META).read_text())
    expected = _metadata_module().apply(json.loads(Path(META).read_text()))
    assert meta == expected, "metadata.json drifted from brainspade.labels: run bundles/segmenter/scripts/metadata.py"
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == NUM_LABELS
    assert out["channel_def"] == {str(lab.code): lab.name for lab in LABELS}
    assert meta["version"] in meta["changelog"]
    # (optional_packages_version is deprecated in MONAI 1.6: its packages are in required_packages_version)
    for field in (*SPEC_FIELDS, "label_classes", "supported_apps", "eval_metrics"):
        assert meta.get(field), field


def test_network_def_is_the_same_in_train_and_inference():
    a, b = ConfigParser(), ConfigParser()
    a.read_config(TRAIN)
    b.read_config(INFER)
    keys = ("network_def", "network", "channels", "profile", "spacing", "roi_size", "bf16", "use_bf16", "amp")
    for key in (*keys, "channels_last", "use_channels_last"):
        assert a[key] == b[key], key
    # the same sliding window, under the same precision, mirror-averaging and class-offset switches, in validation
    # and at inference (the mirror averaging's and the offsets' defaults differ: tests/test_segmenter_inferers.py,
    # tests/test_segmenter_calibration.py)
    assert a["validate"]["inferer"] == b["inferer"]
    assert b["inferer"]["inferer"]["inferer"]["inferer"]["_target_"] == "SlidingWindowInferer"


def test_inference_workflow_properties(tmp_path):
    wf = create_workflow(
        config_file=INFER,
        meta_file=META,
        workflow_type="inference",
        bundle_root=str(BUNDLE),
        output_dir=str(tmp_path / "o"),
    )
    # monai 1.6.1 raises KeyError for a missing required id instead of returning it
    assert wf.check_properties() == []
    for pid in (
        "bundle_root",
        "device",
        "network_def",
        "network",
        "dataset_dir",
        "dataset",
        "preprocessing",
        "postprocessing",
        "inferer",
        "evaluator",
        "initialize",
        "run",
        "finalize",
        "output_dir",
    ):
        assert pid in wf.parser, pid


def test_train_workflow_properties_and_monai_label_train_ids(tiny_phantoms, tmp_path):
    ov = tiny_train_overrides(tiny_phantoms, tmp_path / "t")
    wf = create_workflow(config_file=TRAIN, meta_file=META, workflow_type="train", **ov)
    assert wf.check_properties() == []
    # the ids MONAI Label's BundleTrainTask overrides
    for pid in (
        "bundle_root",
        "device",
        "train#trainer#max_epochs",
        "train#dataset#data",
        "train#handlers",
        "validate#dataset#data",
        "network",
    ):
        assert pid in wf.parser, pid
    assert isinstance(wf.parser["train#handlers"], list)
    assert all("_target_" in h for h in wf.parser["train#handlers"])


def _tiny_weights(path: Path, channels=TINY_CHANNELS) -> Path:
    """A state dict of network_def as models/model.pt holds it (random values: only the format matters here);
    `channels=None`: the shipped (default) network."""
    parser = ConfigParser()
    parser.read_config(INFER)
    parser.update({"bundle_root": str(BUNDLE), **({"channels": channels} if channels else {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def test_monai_label_train_task_runs_with_its_overrides(tiny_phantoms, tmp_path):
    """What BundleTrainTask.run_single_gpu does: monai.bundle.run on configs/train.yaml with init_id/final_id None
    and its overrides, a CheckpointLoader (models/model.pt, strict False) inserted first in train#handlers."""
    from monai.bundle import run

    weights = _tiny_weights(tmp_path / "models" / "model.pt")
    parser = ConfigParser()
    parser.read_config(TRAIN)
    handlers = list(parser.get("train#handlers"))
    handlers.insert(
        0,
        {
            "_target_": "CheckpointLoader",
            "load_path": str(weights),
            "load_dict": {"model": "$@network"},
            "strict": False,
        },
    )
    d = tiny_phantoms.parent
    entries = json.loads(tiny_phantoms.read_text())
    data = [{"image": str(d / e["t1"]), "label": str(d / e["label"])} for e in entries["training"]]
    val = [{"image": str(d / e["flair"]), "label": str(d / e["label"])} for e in entries["validation"][:1]]
    ov = tiny_train_overrides(tiny_phantoms, tmp_path / "run")
    # publish_path stands in for <bundle>/models/model.pt (the repository's shipped weights stay untouched)
    ov.update(
        {
            "bundle_root": str(BUNDLE),
            "train#trainer#max_epochs": 1,
            "train#dataset#data": data,
            "device": torch.device("cpu"),
            "train#handlers": handlers,
            "validate#dataset#data": val,
            "publish_model": True,
            "publish_path": str(weights),
        }
    )
    before = weights.read_bytes()
    run(run_id="run", init_id=None, final_id=None, meta_file=META, config_file=TRAIN, **ov)
    assert (tmp_path / "run" / "model_final.pt").is_file()
    best = (tmp_path / "run" / "model.pt").read_bytes()  # best validation model
    assert weights.read_bytes() == best != before  # published where MONAI Label's infer loads it
    # a second train request is a new round from the published weights, not a no-op resume of the finished run
    ov["train#handlers"] = list(parser.get("train#handlers"))
    ov["train#handlers"].insert(0, dict(handlers[0]))
    run(run_id="run", init_id=None, final_id=None, meta_file=META, config_file=TRAIN, **ov)
    assert weights.read_bytes() not in (best, before)


def test_publish_skipped_when_training_stops_early(tiny_phantoms, tmp_path):
    """A run ended by its time limit leaves models/model.pt alone (a resume that finishes publishes)."""
    from monai.bundle import run

    target = _tiny_weights(tmp_path / "models" / "model.pt")
    before = target.read_bytes()
    ov = tiny_train_overrides(
        tiny_phantoms, tmp_path / "run", publish_model=True, publish_path=str(target), max_epochs=100000, time_limit_s=1
    )
    run(meta_file=META, config_file=TRAIN, **ov)
    assert (tmp_path / "run" / "model_final.pt").is_file()  # the run did stop, and saved what it had
    assert target.read_bytes() == before


def test_multi_gpu_config_layers_over_train():
    p = ConfigParser()
    p.read_config([TRAIN, str(Path(TRAIN).parent / "multi_gpu_train.yaml")])
    assert p["network"] == "$brainspade.distributed.ddp(@network_def, @device)"  # tests/test_foundation_distributed.py
    assert p["train"]["dataloader"]["sampler"] == "@train#sampler"
    assert p["train"]["sampler"]["_target_"] == "DistributedSampler"


def test_verify_net_in_out_on_network_def():
    # defaults (n=1), as the Model Zoo CI calls it: 16^3 is the smallest input (3 downsamplings, instance norm)
    verify_net_in_out(
        net_id="network_def",
        meta_file=META,
        config_file=INFER,
        device="cpu",
        bundle_root=str(BUNDLE),
        channels=TINY_CHANNELS,
    )


def test_ckpt_export_to_torchscript(tmp_path):
    ckpt = _tiny_weights(tmp_path / "model.pt")
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(ckpt),
        meta_file=META,
        config_file=INFER,
        key_in_ckpt="",
        bundle_root=str(BUNDLE),
        channels=TINY_CHANNELS,
    )
    net = torch.jit.load(str(ts))
    x = torch.randn(1, 1, 16, 16, 16)
    ref = ConfigParser()
    ref.read_config(INFER)
    ref.update({"bundle_root": str(BUNDLE), "channels": TINY_CHANNELS})
    eager = ref.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(ckpt, weights_only=True))
    eager.eval()
    with torch.no_grad():
        out = net(x)
        assert tuple(out.shape) == (1, NUM_LABELS, 16, 16, 16)
        assert torch.allclose(out, eager(x), atol=1e-5)  # the exported graph computes what the weights do


def test_monai_label_infer_task_view(tmp_path):
    """What MONAI Label's BundleInferTask does with a bundle folder (here a copy elsewhere on disk, with
    models/model.pt in the format training writes): configs/inference.yaml with bundle_root set to the folder,
    network_def + models/model.pt, the first input/output of network_data_format and labels from the output's
    channel_def, device / preprocessing / inferer / postprocessing applied one transform at a time, its own
    writer instead of the bundle's."""
    import shutil
    import sys

    from monai.transforms import Compose, SaveImaged

    app = tmp_path / "apps" / "segmenter"
    for part in ("configs", "scripts"):
        shutil.copytree(BUNDLE / part, app / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(BUNDLE / "LICENSE", app / "LICENSE")
    _tiny_weights(app / "models" / "model.pt", channels=None)  # the shipped (default) network
    path = str(app)
    assert (app / "configs" / "inference.yaml").is_file()
    sys.path.insert(0, path)
    try:
        parser = ConfigParser()
        parser.read_config(str(app / "configs" / "inference.yaml"))
        parser.config.update({"bundle_root": path})
        network = parser.get_parsed_content("network_def", instantiate=True)
        meta = json.loads((app / "configs" / "metadata.json").read_text())
        key_image, image = next(iter(meta["network_data_format"]["inputs"].items()))
        key_pred, pred = next(iter(meta["network_data_format"]["outputs"].items()))
        labels = {v.lower(): int(k) for k, v in pred["channel_def"].items() if v.lower() != "background"}
        assert (key_image, key_pred) == ("image", "pred")
        assert labels["tumour core (non-enhancing/necrotic)"] == 7 and len(labels) == NUM_LABELS - 1
        assert len(image["spatial_shape"]) == 3
        parser.config.update({"device": "cpu"})  # BundleInferTask._update_device
        pre = parser.get_parsed_content("preprocessing", instantiate=True)
        pre = list(pre.transforms) if isinstance(pre, Compose) else pre
        inferer = parser.get_parsed_content("inferer", instantiate=True)
        post = parser.get_parsed_content("postprocessing", instantiate=True)
        post = [
            t for t in (list(post.transforms) if isinstance(post, Compose) else post) if not isinstance(t, SaveImaged)
        ]
        ckpt = torch.load(app / "models" / "model.pt", map_location="cpu", weights_only=True)
        network.load_state_dict(ckpt.get("model", ckpt), strict=False)
        network.eval()
    finally:
        sys.path.remove(path)
    aff = np.array([[-4.0, 0, 0, 60], [0, 0, 3.0, -40], [0, 3.5, 0, -30], [0, 0, 0, 1]])  # LSA, not 2 mm
    img = write_nifti(tmp_path / "vol.nii.gz", np.random.default_rng(0).random((30, 40, 36)).astype(np.float32), aff)
    d = {key_image: str(img)}
    for t in pre:
        d = t(d)
    with torch.no_grad():
        d[key_pred] = inferer(d[key_image][None].to("cpu"), network)[0]
    for t in post:
        d = t(d)
    assert tuple(d[key_pred].shape[1:]) == (30, 40, 36)
    assert np.allclose(np.asarray(d[key_pred].affine), aff)
    assert set(np.unique(d[key_pred].numpy()).astype(int)) <= set(range(NUM_LABELS))


def test_shipped_weights_fit_the_network_and_the_size_limit():
    path = BUNDLE / "models" / "model.pt"
    if not path.is_file():
        pytest.skip("no shipped weights yet")
    assert path.stat().st_size <= 10 * 2**20
    parser = ConfigParser()
    parser.read_config(INFER)
    parser.update({"bundle_root": str(BUNDLE)})
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
