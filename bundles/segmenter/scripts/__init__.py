"""Segmenter bundle code: datalists from every data source, the SynthSeg-style label-to-image transform, soft
partial-volume targets and their loss, input checks and the atomic writer for inference, checkpoint helpers, and
the experiment driver.

Imported from configs with `$brainspade.bundle.load_scripts(@bundle_root, 'segmenter_scripts')`.
"""

from .calibration import ClassOffsetInferer, OffsetFitter, calibrate, read_class_offsets
from .data import build_datalist, datalist_from_synthetic_folder, phantom_datalist, real_datalist
from .inference import check_inputs, inference_items, volumes_ml
from .inferers import FlipAveragingInferer
from .losses import dice_ce_loss
from .networks import RefinedUNet
from .preprocessing import (
    TEST_CONDITIONS,
    CheckImaged,
    RandSkullStripd,
    RandThickSliced,
    ScalePercentilesd,
    augmentation_transforms,
    condition_transforms,
    input_transforms,
    intensity_transforms,
    test_transforms,
)
from .train_utils import (
    PublishModel,
    ValidationCurve,
    check_checkpoint,
    check_evaluation,
    check_items,
    check_training,
    client_loads_weights,
    finish_evaluation,
)
from .transforms import PartialVolumeTargetd, RandLabelToIntensityd, SaveSegmentationd

__all__ = [
    "ClassOffsetInferer",
    "OffsetFitter",
    "calibrate",
    "read_class_offsets",
    "build_datalist",
    "datalist_from_synthetic_folder",
    "phantom_datalist",
    "real_datalist",
    "check_inputs",
    "inference_items",
    "volumes_ml",
    "RefinedUNet",
    "FlipAveragingInferer",
    "check_checkpoint",
    "check_evaluation",
    "check_items",
    "check_training",
    "finish_evaluation",
    "RandLabelToIntensityd",
    "PartialVolumeTargetd",
    "dice_ce_loss",
    "SaveSegmentationd",
    "RandSkullStripd",
    "RandThickSliced",
    "ScalePercentilesd",
    "augmentation_transforms",
    "input_transforms",
    "intensity_transforms",
    "CheckImaged",
    "PublishModel",
    "client_loads_weights",
    "ValidationCurve",
    "TEST_CONDITIONS",
    "condition_transforms",
    "test_transforms",
]
