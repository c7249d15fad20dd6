"""The segmenter's network (scripts/networks.py): MONAI's UNet plus a full-resolution refinement head that a plain
UNet's weights load into unchanged."""

from __future__ import annotations

import pytest
import torch
from _segmenter_helpers import BUNDLE, INFER, TINY_CHANNELS
from monai.bundle import ConfigParser
from monai.networks.nets import UNet

UNET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=10, strides=[2, 2, 2], num_res_units=1, norm="INSTANCE")


def _network_def(refine_channels: int | None = None) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(INFER)
    parser.update({"bundle_root": str(BUNDLE), "channels": TINY_CHANNELS})
    if refine_channels is not None:
        parser["refine_channels"] = refine_channels
    return parser.get_parsed_content("network_def")


def test_network_def_is_the_refined_unet_with_a_head():
    net = _network_def()
    assert isinstance(net, UNet) and net.refine_channels > 0
    assert any(k.startswith("refine.") for k in net.state_dict())


def test_plain_unet_weights_load_unchanged_and_give_the_plain_output():
    torch.manual_seed(0)
    plain = UNet(channels=TINY_CHANNELS, **UNET_ARGS).eval()
    refined = _network_def().eval()
    refined.load_state_dict(plain.state_dict())  # strict: the head's keys are filled as initialised
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(x), refined(x))


def test_a_partial_head_is_refused():
    net = _network_def()
    sd = net.state_dict()
    sd.pop(next(k for k in sd if k.startswith("refine.")))
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(sd)


def test_the_head_learns_a_full_resolution_correction():
    """The zero-initialised last layer still receives gradients: one step moves the output away from the UNet's."""
    torch.manual_seed(0)
    net = _network_def()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        before = net(x)
    opt = torch.optim.SGD(net.refine.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(x), torch.randint(0, 10, (2, 16, 16, 16)))
    loss.backward()
    assert net.refine[-1].conv.weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        assert not torch.allclose(net(x), before)


def test_zero_width_is_the_plain_unet():
    net = _network_def(refine_channels=0)
    plain = UNet(channels=TINY_CHANNELS, **UNET_ARGS)
    assert net.state_dict().keys() == plain.state_dict().keys()
