"""The training loss, with soft (partial-volume) targets as an option.

MONAI's DiceCELoss takes probability targets in its cross-entropy but builds its DiceLoss without `soft_label`,
so with fractional targets the Dice term would be lowest at a sharpened prediction, not at the fractions. This
factory builds the MONAI loss and turns DiceLoss's own `soft_label` on when the targets are soft.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss


def dice_ce_loss(weight: torch.Tensor | None = None, soft_targets: bool = False, batch: bool = True) -> DiceCELoss:
    """Dice + cross-entropy on softmax outputs; `soft_targets`: targets are per-label fractions (one channel per
    label, as `PartialVolumeTargetd` writes them), else integer labels in one channel (one-hot encoded here)."""
    loss = DiceCELoss(to_onehot_y=not soft_targets, softmax=True, batch=batch, weight=weight)
    loss.dice.soft_label = bool(soft_targets)
    return loss
