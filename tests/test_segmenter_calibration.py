"""The segmenter's label-prior calibration (scripts/calibration.py): the fitter recovers a known prior shift, the
inferer adds one offset per label, offsets are applied only to the weights they were fitted for, and the shipped
weights carry their own."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from _segmenter_helpers import BUNDLE, INFER
from monai.bundle import ConfigParser

from brainspade.bundle import load_scripts
from brainspade.errors import InputError
from brainspade.sharding import file_sha256

calibration = load_scripts(BUNDLE, "segmenter_scripts").calibration


def _three_label_volume(n: int = 30_000) -> tuple[np.ndarray, np.ndarray]:
    """Voxels along [0, 1): label 0 below 0.3, 1 up to 0.6, 2 above; calibrated scores whose argmax is the label."""
    x = (np.arange(n) + 0.5) / n
    label = np.digitize(x, [0.3, 0.6])
    centres = np.array([0.15, 0.45, 0.75])
    scores = -20.0 * np.abs(x[None] - centres[:, None])
    return scores.reshape(3, 30, 10, n // 300), label.reshape(30, 10, n // 300)


def test_fitter_recovers_a_shifted_label_prior():
    scores, label = _three_label_volume()
    biased = scores.copy()
    biased[2] -= 1.6  # the network under-calls label 2: its boundary with label 1 moves up by 0.04
    fitter = calibration.OffsetFitter(num_labels=3)
    fitter.add(biased, label)
    fitter.add(torch.as_tensor(biased), torch.as_tensor(label))  # tensors as the inferer gives them
    result = fitter.fit()
    assert result["volumes"] == 2
    assert result["mean_dice_after"] > result["mean_dice_before"] + 0.02
    offsets = np.asarray(result["offsets"], np.float32)
    assert offsets[0] == 0.0  # the background is the reference
    corrected = (biased + offsets[:, None, None, None]).argmax(0)
    assert (corrected == label).mean() > 0.99
    assert result["mean_dice_after"] > 0.99 and result["dice_before"][0] is None  # the background is not scored


def test_fitter_leaves_a_calibrated_model_alone_and_refuses_nothing_or_other_grids():
    scores, label = _three_label_volume()
    fitter = calibration.OffsetFitter(num_labels=3)
    with pytest.raises(InputError, match="no validation volumes"):
        fitter.fit()
    with pytest.raises(InputError, match="not the same grid"):
        fitter.add(scores, label[:-1])
    fitter.add(scores, label)
    result = fitter.fit()
    assert result["offsets"] == [0.0, 0.0, 0.0] and result["mean_dice_after"] == result["mean_dice_before"]


def test_offset_inferer_adds_one_offset_per_label():
    scores = torch.randn(1, 3, 4, 4, 4)

    def inferer(x, net):
        return scores.clone()

    out = calibration.ClassOffsetInferer(inferer, [0.0, 0.5, -1.0])(torch.zeros(1, 1, 4, 4, 4), None)
    torch.testing.assert_close(out[:, 1] - scores[:, 1], torch.full((1, 4, 4, 4), 0.5))
    torch.testing.assert_close(out[:, 2] - scores[:, 2], torch.full((1, 4, 4, 4), -1.0))
    torch.testing.assert_close(calibration.ClassOffsetInferer(inferer, None)(scores, None), scores)
    with pytest.raises(InputError, match="hold 2 labels"):
        calibration.ClassOffsetInferer(inferer, [0.0, 1.0])(scores, None)


def test_offsets_apply_only_to_the_weights_they_were_fitted_for(tmp_path, caplog):
    weights, other = tmp_path / "model.pt", tmp_path / "other.pt"
    torch.save({"w": torch.ones(2)}, weights)
    torch.save({"w": torch.zeros(2)}, other)
    path = tmp_path / "class_offsets.json"
    offsets = [0.0] + [0.1] * 9
    path.write_text(
        json.dumps({"format": calibration.FORMAT, "offsets": offsets, "weights_sha256": file_sha256(weights)})
    )
    assert calibration.read_class_offsets(path, weights) == offsets
    with caplog.at_level(logging.WARNING):
        assert calibration.read_class_offsets(path, other) is None
    assert "other weights" in caplog.text
    assert calibration.read_class_offsets(tmp_path / "missing.json", weights) is None
    assert (
        calibration.read_class_offsets(None, weights) is None
        and calibration.read_class_offsets("null", weights) is None
    )
    with pytest.raises(InputError, match="holds 10 offsets for a network of 9 labels"):
        calibration.read_class_offsets(path, weights, num_labels=9)
    path.write_text(json.dumps({"offsets": offsets}))
    with pytest.raises(InputError, match="not a class offsets file"):
        calibration.read_class_offsets(path, weights)
    path.write_text(json.dumps({"format": calibration.FORMAT, "offsets": ["a"], "weights_sha256": ""}))
    with pytest.raises(InputError, match="must be numbers"):
        calibration.read_class_offsets(path, weights)


def test_shipped_weights_carry_their_fitted_offsets():
    """models/class_offsets.json was fitted for models/model.pt, so inference.yaml applies it as shipped."""
    data = json.loads((BUNDLE / "models" / "class_offsets.json").read_text())
    assert data["weights_sha256"] == file_sha256(BUNDLE / "models" / "model.pt")
    assert data["mean_dice_after"] >= data["mean_dice_before"]
    parser = ConfigParser()
    parser.read_config(INFER)
    parser["bundle_root"] = str(BUNDLE)
    inferer = parser.get_parsed_content("inferer")
    assert inferer.offsets is not None and inferer.offsets.tolist() == pytest.approx(data["offsets"])
    parser["class_offsets_path"] = None  # the switch to read the network without them
    assert ConfigParser(parser.get()).get_parsed_content("inferer").offsets is None
