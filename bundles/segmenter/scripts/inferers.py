"""Left-right mirror averaging at inference (flip test-time augmentation).

The brain is roughly mirror-symmetric, so the network's prediction on the mirrored volume is a second, nearly
independent estimate of every voxel; averaging the two probability maps evens out boundary noise. Measured with
0.2.0's weights on the real MNI152 T1 (1 mm, RAS): GM Dice 0.835 -> 0.840, WM 0.806 -> 0.810, for twice the network
time. MONAI's `TestTimeAugmentation` re-runs the whole random pipeline per sample and inverts each draw (built for
uncertainty estimates); one deterministic flip of the network input needs none of that, so this small wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer


class FlipAveragingInferer(Inferer):
    """Run `inferer` on the input and on its mirror along `spatial_axis` (0 = left-right on RAS-oriented inputs,
    which the segmenter's preprocessing guarantees) and return the log of the mean softmax probability: a softmax
    afterwards gives the averaged probabilities, an argmax their most likely label. With `enabled=False` it is
    exactly `inferer` (logits)."""

    def __init__(self, inferer: Inferer, enabled: bool = True, spatial_axis: int = 0) -> None:
        super().__init__()
        self.inferer, self.enabled, self.spatial_axis = inferer, bool(enabled), int(spatial_axis)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        dim = 2 + self.spatial_axis  # batch and channel come first
        probs = torch.softmax(self.inferer(inputs, network, *args, **kwargs), dim=1)
        mirrored = self.inferer(torch.flip(inputs, dims=[dim]), network, *args, **kwargs)
        probs += torch.flip(torch.softmax(mirrored, dim=1), dims=[dim])
        return torch.log(probs.mul_(0.5).clamp_min_(torch.finfo(probs.dtype).tiny))
