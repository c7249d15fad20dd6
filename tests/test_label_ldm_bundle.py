"""label_ldm as a MONAI bundle: metadata complete and true to the configs, generative networks run on the
metadata shapes, the paper profile builds the reference's networks."""

from __future__ import annotations

import json

import pytest
import torch
from cli_harness import SPEC_FIELDS as BUNDLE_SPEC_FIELDS
from label_ldm_helpers import BUNDLE, CONFIGS, TINY, common_parser, one_thread  # noqa: F401  (autouse fixture)
from monai.bundle import ConfigParser

from brainspade.labels import CONDITION_KEYS, LABEL_NAMES
from brainspade.profiles import get_profile

META = json.loads((CONFIGS / "metadata.json").read_text())
# the fields of the MONAI Bundle specification (metadata.json) and what this bundle must say in them
SPEC_FIELDS = (*BUNDLE_SPEC_FIELDS, "label_classes", "eval_metrics")


def test_metadata_complete_and_true_to_the_label_table():
    missing = [k for k in SPEC_FIELDS if k not in META or META[k] in (None, "", [])]
    assert not missing, f"metadata.json lacks {missing}"
    assert META["version"] in META["changelog"]
    assert META["monai_version"] and META["pytorch_version"] and META["numpy_version"]
    for pkg in ("nibabel", "pytorch-ignite", "scipy", "brainspade"):
        assert pkg in META["required_packages_version"], pkg
    assert all(f"{code} {name}" in META["label_classes"] for code, name in LABEL_NAMES.items())  # a string (schema)
    out = META["network_data_format"]["outputs"]["pred"]
    assert {int(k): v for k, v in out["channel_def"].items()} == LABEL_NAMES
    cond = META["network_data_format"]["inputs"]["condition"]
    assert list(cond["channel_def"].values()) == list(CONDITION_KEYS)


def test_metadata_shapes_match_the_default_configs():
    p = ConfigParser()
    p.read_config(str(CONFIGS / "common.yaml"))
    p["bundle_root"] = str(BUNDLE)
    nd = META["network_data_format"]
    latent = nd["inputs"]["latent"]
    assert [latent["num_channels"], *latent["spatial_shape"]] == p.get_parsed_content("latent_shape")
    assert nd["inputs"]["condition"]["num_channels"] == p.get_parsed_content("num_conditions")
    pred = nd["outputs"]["pred"]
    assert pred["num_channels"] == p.get_parsed_content("num_labels")
    assert tuple(pred["spatial_shape"]) == get_profile("default").shape == tuple(p.get_parsed_content("image_shape"))


@torch.no_grad()
def test_generative_networks_run_on_metadata_shapes():
    """Both networks on the declared shapes (narrow widths; latent channels and grid as declared)."""
    nd = META["network_data_format"]
    lat, cond, pred = nd["inputs"]["latent"], nd["inputs"]["condition"], nd["outputs"]["pred"]
    p = common_parser(profile="default", latent_channels=lat["num_channels"])
    ae, unet = p.get_parsed_content("autoencoder_def").eval(), p.get_parsed_content("network_def").eval()
    z = torch.randn(1, lat["num_channels"], *lat["spatial_shape"])
    c = torch.rand(1, *cond["spatial_shape"], cond["num_channels"])
    eps = unet(z, timesteps=torch.tensor([500]), context=c)
    assert eps.shape == z.shape and torch.isfinite(eps).all()
    x = ae.decode(z)
    assert x.shape == (1, pred["num_channels"], *pred["spatial_shape"])
    z_mu, _ = ae.encode(torch.softmax(x, 1))
    assert z_mu.shape == z.shape


def _paper_parser(files: list[str]) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p["bundle_root"] = str(BUNDLE)
    return p


def test_paper_profile_builds_the_reference_networks():
    p = _paper_parser(["common.yaml", "train_diffusion.yaml", "paper.yaml"])
    assert p.get_parsed_content("profile") == "paper" and p.get_parsed_content("image_shape") == [128, 160, 128]
    assert p.get_parsed_content("latent_shape") == [8, 32, 40, 32]
    ae = p.get_parsed_content("autoencoder_def")
    assert ae.encoder.blocks[0].conv.out_channels == 16 and ae.latent_channels == 8
    assert ae.use_checkpoint  # gradient checkpointing (encoder and decoder each recomputed) for the GPU budget
    assert not _paper_parser(["common.yaml"]).get_parsed_content("autoencoder_def").use_checkpoint
    with torch.device("meta"):  # parameters without memory: the 197 M-parameter UNet is only counted
        unet = p.get_parsed_content("network_def")
    n_unet = sum(t.numel() for t in unet.parameters())
    n_ae = sum(t.numel() for t in ae.parameters())
    assert list(unet.unet.block_out_channels) == [64, 128, 256, 512]
    assert 190e6 < n_unet < 205e6, n_unet  # the reference UNet: 197 M parameters
    assert 1e6 < n_ae < 2e6, n_ae
    assert p.get_parsed_content("diffusion_path").endswith("model_paper.pt")
    # inference/evaluation take the same sizes through inference.yaml's common_overrides
    q = _paper_parser(["inference.yaml", "paper.yaml"])
    common = q.get_parsed_content("common")
    assert common.get_parsed_content("latent_shape") == [8, 32, 40, 32]
    assert common.get_parsed_content("ldm_channels") == [64, 128, 256, 512]
    assert q.get_parsed_content("autoencoder_path").endswith("model_autoencoder_paper.pt")


@pytest.mark.parametrize("name", ["train_autoencoder.yaml", "train_diffusion.yaml"])
def test_paper_profile_layers_over_training_configs(name):
    p = _paper_parser(["common.yaml", name, "paper.yaml"])
    assert p.get_parsed_content("export_path").endswith("_paper.pt")
    assert p.get_parsed_content("ae_channels") == [16, 32, 64]
