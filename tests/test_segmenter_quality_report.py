"""scripts/quality_report.py's pure parts: joining a model's training stages into one validation curve, and
judging measured figures against issue 14's targets."""

from __future__ import annotations

import importlib.util
import json

from _segmenter_helpers import BUNDLE

_spec = importlib.util.spec_from_file_location("segmenter_quality_report", BUNDLE / "scripts" / "quality_report.py")
quality_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality_report)


def _write_curve(path, iterations, dice):
    path.write_text(
        "".join(json.dumps({"iteration": i, "mean_dice": dice, "dice": {"gm": dice}}) + "\n" for i in iterations)
    )
    return path


def test_stages_are_joined_end_to_end(tmp_path):
    first = _write_curve(tmp_path / "a.jsonl", [200, 400], 0.5)
    second = _write_curve(tmp_path / "b.jsonl", [100, 300], 0.6)
    curve = quality_report.read_curve(f"{first},{second}")
    assert [r["iteration"] for r in curve] == [200, 400, 500, 700]
    assert [r["stage"] for r in curve] == [0, 0, 1, 1]
    assert [r["mean_dice"] for r in curve] == [0.5, 0.5, 0.6, 0.6]
    assert quality_report.plot_curve(curve, tmp_path / "curve.png").stat().st_size > 0


def test_one_file_is_one_stage(tmp_path):
    curve = quality_report.read_curve(_write_curve(tmp_path / "a.jsonl", [200], 0.5))
    assert curve == [{"iteration": 200, "mean_dice": 0.5, "dice": {"gm": 0.5}, "stage": 0}]


def test_targets_are_judged_from_the_measured_figures():
    seen = dict(quality_report.SEEN_TARGETS)
    phantom = {
        "as_rendered": {"t1": {**seen, "wm": 0.89}},
        "zero_background": {"t1": {**seen, "wm": 0.89, "csf": seen["csf"] - 0.06}},
    }
    rows = {r["target"]: r for r in quality_report.judge(phantom, {"ras_1mm": {"gm": 0.86, "wm": 0.84}})}
    assert rows["as rendered, t1, gm >= 0.9"]["met"] and not rows["as rendered, t1, wm >= 0.9"]["met"]
    zero = rows["zero_background, t1: every label within 0.05 of as rendered"]
    assert not zero["met"] and "(csf)" in zero["value"]
    assert rows["real MNI152 T1 ras_1mm: gm Dice >= 0.85"]["met"]
    assert not rows["real MNI152 T1 ras_1mm: wm Dice >= 0.85"]["met"]


def test_the_report_scores_the_shipped_weights_on_their_own_grid():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(quality_report.CONFIGS / "inference.yaml"))
    assert quality_report.shipped_profile() == parser.get_parsed_content("prof").name == "paper"
