"""Left-right mirror averaging at inference (scripts/inferers.py): on in inference.yaml and evaluate.yaml, off in
training's validation, switched by one flag that takes what users type."""

from __future__ import annotations

import pytest
import torch
from _segmenter_helpers import BUNDLE, EVALUATE, INFER, TRAIN
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer

from brainspade.bundle import load_scripts

FlipAveragingInferer = load_scripts(str(BUNDLE), "segmenter_scripts").FlipAveragingInferer


def _lopsided_net(x: torch.Tensor) -> torch.Tensor:
    """Two-class logits that depend on position along x (not mirror-equivariant), so the two passes differ."""
    ramp = torch.linspace(-2, 2, x.shape[2]).view(1, 1, -1, 1, 1)
    return torch.cat([x * ramp, -x], dim=1)


def test_enabled_returns_the_log_of_the_mean_of_both_passes_probabilities():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 6, 5, 4)
    out = FlipAveragingInferer(SimpleInferer())(x, _lopsided_net)
    direct = torch.softmax(_lopsided_net(x), 1)
    mirrored = torch.flip(torch.softmax(_lopsided_net(torch.flip(x, dims=[2])), 1), dims=[2])
    assert not torch.allclose(direct, mirrored)  # the test would pass trivially otherwise
    torch.testing.assert_close(torch.softmax(out, 1), (direct + mirrored) / 2)
    torch.testing.assert_close(out.exp().sum(1), torch.ones_like(out[:, 0]))


def test_disabled_is_the_wrapped_inferer_unchanged():
    x = torch.randn(1, 1, 6, 5, 4)
    assert torch.equal(FlipAveragingInferer(SimpleInferer(), enabled=False)(x, _lopsided_net), _lopsided_net(x))


def test_a_mirror_equivariant_network_gives_its_own_prediction():
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    with torch.no_grad():  # kernels symmetric along x: the network commutes with the left-right flip
        conv.weight.copy_((conv.weight + torch.flip(conv.weight, dims=[2])) / 2)
    x = torch.randn(1, 1, 8, 6, 5)
    with torch.no_grad():
        out = FlipAveragingInferer(SimpleInferer())(x, conv)
        torch.testing.assert_close(torch.softmax(out, 1), torch.softmax(conv(x), 1), atol=1e-5, rtol=1e-5)


def _inferer(files, key: str, **overrides):
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser.get_parsed_content(key)


def test_inference_and_evaluation_average_and_training_validation_does_not():
    # the mirror averaging sits inside the class offsets (scripts/calibration.py), which are the shipped weights'
    # in inference and evaluation and none while training validates weights that are still changing
    infer, evaluate, train = (
        _inferer(INFER, "inferer"),
        _inferer([TRAIN, EVALUATE], "validate#inferer"),
        _inferer(TRAIN, "validate#inferer"),
    )
    assert infer.inferer.enabled and evaluate.inferer.enabled and not train.inferer.enabled
    assert infer.offsets is not None and evaluate.offsets is not None and train.offsets is None


@pytest.mark.parametrize("typed", ["false", "False", "no", "0"])
def test_the_flag_takes_what_users_type(typed):
    assert not _inferer(INFER, "inferer", flip_averaging=typed).inferer.enabled
