"""label_ldm conditioning rules: ranges, refusals with the accepted range, contradictions, drawing."""

from __future__ import annotations

import numpy as np
import pytest
from label_ldm_helpers import BUNDLE

from brainspade.bundle import load_scripts
from brainspade.errors import InputError

scripts = load_scripts(BUNDLE, "label_ldm_scripts")

# training table (mL): healthy, WMH only, tumour (all parts), WMH + tumour
TRAIN = np.array(
    [[0, 0, 0, 0], [2.0, 0, 0, 0], [10.0, 0, 0, 0], [0, 5.0, 20.0, 3.0], [0, 30.0, 80.0, 12.0], [4.0, 8.0, 40.0, 6.0]]
)


@pytest.fixture()
def space():
    return scripts.ConditionSpace(TRAIN.max(0), TRAIN)


def test_ranges_and_accepted_values(space):
    assert space.ranges["wmh_ml"] == (2.0, 10.0)
    assert space.parse({"tumour_ml": "8", "oedema_ml": 40, "enhancing_ml": 6.0}) == {
        "wmh_ml": None,
        "tumour_ml": 8.0,
        "oedema_ml": 40.0,
        "enhancing_ml": 6.0,
    }
    assert space.parse({"wmh_ml": 0})["wmh_ml"] == 0.0  # 0 = absent


@pytest.mark.parametrize(
    "value, pattern",
    [
        (-1, "negative"),
        ("abc", "not a number"),
        (float("nan"), "not finite"),
        (True, "not a volume"),
        (50.0, "outside the trained range"),
        (0.5, "outside the trained range"),
    ],
)
def test_bad_values_refused_with_range(space, value, pattern):
    with pytest.raises(InputError, match=pattern) as exc:
        space.parse({"wmh_ml": value})
    assert "2.00 to 10.00 mL" in str(exc.value)


def test_contradictions_refused(space):
    with pytest.raises(InputError, match="never occurs in the training data.*tumour\\+oedema\\+enhancing"):
        space.parse({"tumour_ml": 0, "oedema_ml": 40})  # oedema without a tumour
    with pytest.raises(InputError, match="never occurs"):
        space.parse({"tumour_ml": 10, "enhancing_ml": 0})


def test_draw_keeps_given_and_fills_compatible(space):
    rng = np.random.default_rng(0)
    for _ in range(10):
        vols, src = space.draw(space.parse({"tumour_ml": 25}), rng)
        assert vols[1] == 25 and vols[2] > 0 and vols[3] > 0 and src["tumour_ml"] == "requested"
        assert src["oedema_ml"] == "drawn"
    vols, _ = space.draw(space.parse({"wmh_ml": 0, "tumour_ml": 0}), rng)
    assert vols.tolist() == [0, 0, 0, 0]
    assert np.allclose(space.normalise(TRAIN.max(0)), 1.0)


def test_log_normalisation_spreads_small_lesions_and_legacy_stays_linear():
    vols, vmax = np.array([0.0, 1.0, 5.0, 36.0]), np.array([36.0] * 4)
    log = scripts.normalise_volumes(vols, vmax, "log1p")
    assert log[0] == 0 and log[-1] == pytest.approx(1.0) and np.all(np.diff(log) > 0)
    assert log[1] > 0.15  # 1 mL of 36: far from 0 (absent); the linear fraction would be 0.03
    assert scripts.normalise_volumes(vols, vmax, "linear")[1] == pytest.approx(1 / 36)
    with pytest.raises(InputError, match="linear, log1p"):
        scripts.normalise_volumes(vols, vmax, "sqrt")
    # weight files from before the transform was recorded are read as linear
    space_legacy = scripts.ConditionSpace(TRAIN.max(0), TRAIN)
    assert space_legacy.normalise(TRAIN[3])[1] == pytest.approx(5.0 / 30.0)
    assert scripts.ConditionSpace(TRAIN.max(0), TRAIN, transform="log1p").normalise(TRAIN[3])[1] == pytest.approx(
        np.log1p(5.0) / np.log1p(30.0)
    )


def _tiny_unet(**kw):
    from monai.networks.nets import DiffusionModelUNet

    args = dict(
        spatial_dims=3,
        in_channels=2,
        out_channels=2,
        channels=[8, 8],
        attention_levels=[False, False],
        num_res_blocks=1,
        norm_num_groups=4,
        num_head_channels=8,
        with_conditioning=True,
        cross_attention_dim=4,
        num_class_embeds=1,
    )
    return DiffusionModelUNet(**{**args, **kw})


def test_volume_embedding_reaches_the_unet_without_attention():
    """With no attention level, the volumes can only act through the time-embedding MLP."""
    import torch

    torch.manual_seed(0)
    net = scripts.VolumeConditionedUNet(_tiny_unet(), num_conditions=4).eval()
    x, t = torch.randn(2, 2, 8, 8, 8), torch.tensor([10, 10])
    c = torch.tensor([[[0.0, 0.2, 0.5, 0.1]], [[1.0, 0.9, 0.1, 0.7]]])
    last = net.unet.class_embedding[-1]
    assert not last.weight.any() and not last.bias.any()  # starts as the plain cross-attention model
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output convolution: randomise everything
            torch.nn.init.normal_(p, std=0.2)
        out = net(x[:1].expand(2, -1, -1, -1, -1), t, context=c)
    assert out.shape == (2, 2, 8, 8, 8) and not torch.allclose(out[0], out[1], atol=1e-4)
    with pytest.raises(ValueError, match="context"):
        net(x, t)
    with pytest.raises(ValueError, match="num_class_embeds"):
        scripts.VolumeConditionedUNet(_tiny_unet(num_class_embeds=None), num_conditions=4)
