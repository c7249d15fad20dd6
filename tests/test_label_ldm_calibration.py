"""label_ldm decoder volume calibration (configs/calibrate_autoencoder.yaml, scripts/calibration.py): the fit
recovers a known per-label logit shift, and the config exports an autoencoder whose encoder is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from label_ldm_helpers import BUNDLE, CONFIGS, TINY_CONFIG, make_tiny_weights, one_thread  # noqa: F401
from monai.bundle import run

from brainspade.bundle import load_scripts
from brainspade.labels import LABEL_CODES, NUM_LABELS, int_to_pv, pv_to_int

load_scripts(BUNDLE, "label_ldm_scripts")
from label_ldm_scripts import calibration  # noqa: E402


def _blurred_map(seed: int) -> np.ndarray:
    """A smooth 10-channel partial-volume map: random blobs of every label, mixed at their borders."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    lab = rng.integers(0, NUM_LABELS, size=(6, 6, 6)).repeat(4, 0).repeat(4, 1).repeat(4, 2)
    pv = np.stack([ndimage.gaussian_filter(c, 1.5) for c in int_to_pv(lab).astype(np.float32)])
    return pv / pv.sum(0, keepdims=True)


def test_fit_recovers_a_known_logit_shift():
    """Logits = log(pv) + shift: a decoder that favours CSF and WMH. The fit must undo the shift (background fixed
    at 0) and bring every label's pooled volume back to the truth."""
    shift = np.zeros(NUM_LABELS)
    shift[LABEL_CODES["csf"]], shift[LABEL_CODES["wmh"]] = 1.0, 1.5
    pairs = []
    for seed in range(3):
        pv = _blurred_map(seed)
        pairs.append(((np.log(pv + 1e-6) + shift[:, None, None, None]).astype(np.float16), pv_to_int(pv)))
    fit = calibration.fit_label_offsets(pairs, iterations=40)
    assert fit["before_voxels"][LABEL_CODES["csf"]] > 1.1 * fit["true_voxels"][LABEL_CODES["csf"]]
    np.testing.assert_allclose(fit["after_voxels"], fit["true_voxels"], rtol=0.02)
    assert fit["offsets"][0] == 0.0
    assert fit["offsets"][LABEL_CODES["csf"]] < -0.5 and fit["offsets"][LABEL_CODES["wmh"]] < -0.5


def test_calibration_config_exports_a_decoder_calibrated_autoencoder(tiny_phantoms, tmp_path, capsys):
    ae, _ = make_tiny_weights(tiny_phantoms, tmp_path / "w")
    out = tmp_path / "calibrated.pt"
    kw = dict(
        config_file=[str(CONFIGS / "common.yaml"), str(CONFIGS / "calibrate_autoencoder.yaml"), str(TINY_CONFIG)],
        datalist=str(tiny_phantoms),
        autoencoder_path=ae,
        device="cpu",
        calibration_iterations=15,
    )
    run(output_path=str(out), **kw)
    before = torch.load(ae, map_location="cpu", weights_only=True)["autoencoder"]
    after = torch.load(out, map_location="cpu", weights_only=True)
    assert after["profile"] == "tiny"
    last = [k for k in before if k.startswith("decoder.blocks.") and k.endswith("conv.bias")][-1]
    changed = [k for k, v in before.items() if not torch.equal(v, after["autoencoder"][k])]
    assert changed == [last]  # only the decoder's last bias moved: the encoder and the latent space are as trained
    printed = capsys.readouterr().out
    assert "volume / true" in printed and "csf" in printed
    with pytest.raises(SystemExit) as err:  # never written over its input
        run(output_path=ae, **kw)
    assert err.value.code == 2 and "is the input weights file" in capsys.readouterr().err
