"""label_ldm conditioning rules: ranges, refusals with the accepted range, contradictions, drawing."""

from __future__ import annotations

import numpy as np
import pytest
from label_ldm_helpers import BUNDLE

from brainspade.bundle import import_scripts
from brainspade.errors import InputError

scripts = import_scripts(BUNDLE, "label_ldm_scripts")

# training table (mL): healthy, WMH only, tumour (all parts), WMH + tumour
TRAIN = np.array([[0, 0, 0, 0], [2.0, 0, 0, 0], [10.0, 0, 0, 0], [0, 5.0, 20.0, 3.0], [0, 30.0, 80.0, 12.0],
                  [4.0, 8.0, 40.0, 6.0]])


@pytest.fixture()
def space():
    return scripts.ConditionSpace(TRAIN.max(0), TRAIN)


def test_ranges_and_accepted_values(space):
    assert space.ranges["wmh_ml"] == (2.0, 10.0)
    assert space.parse({"tumour_ml": "8", "oedema_ml": 40, "enhancing_ml": 6.0}) == {
        "wmh_ml": None, "tumour_ml": 8.0, "oedema_ml": 40.0, "enhancing_ml": 6.0}
    assert space.parse({"wmh_ml": 0})["wmh_ml"] == 0.0  # 0 = absent


@pytest.mark.parametrize("value, pattern", [
    (-1, "negative"), ("abc", "not a number"), (float("nan"), "not finite"), (True, "not a volume"),
    (50.0, "outside the trained range"), (0.5, "outside the trained range")])
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
