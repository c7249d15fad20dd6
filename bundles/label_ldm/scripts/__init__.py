"""Bundle code of `label_ldm`: training steps, latent encoding, weight files, conditioning rules, the label sampler,
lesion clean-up, evaluation.

Imported by the configs through `brainspade.bundle.load_scripts(@bundle_root, 'label_ldm_scripts')`.
"""

from brainspade.bundle import bundle_version

from .calibration import calibrate_autoencoder
from .conditioning import ConditionSpace, normalise_volumes
from .data import load_datalist, pv_condition_ml
from .evaluate import evaluate
from .networks import VolumeConditionedUNet
from .sampler import LabelSampler, condition_space, decode_latent, write_samples
from .training import (
    MAX_LABEL_SHARE,
    AutoencoderStep,
    DiffusionPreview,
    EmaUpdate,
    ImageLogHandler,
    WarmupCosine,
    WeightedMSELoss,
    WeightedVPredictionPrepareBatch,
    attach_handlers,
    encode_datalist,
    lesion_loss_weight,
    lesion_weigher,
    loss_terms,
    saved_objects,
    trainable_parameters,
    training_bf16,
)
from .volume_matching import match_lesion_volumes
from .weights import LatentMeta, export_autoencoder, export_diffusion, load_initial_weights, load_weights, unwrap

__all__ = [
    "calibrate_autoencoder",
    "ConditionSpace",
    "normalise_volumes",
    "bundle_version",
    "load_datalist",
    "pv_condition_ml",
    "evaluate",
    "VolumeConditionedUNet",
    "match_lesion_volumes",
    "LabelSampler",
    "condition_space",
    "decode_latent",
    "write_samples",
    "AutoencoderStep",
    "DiffusionPreview",
    "ImageLogHandler",
    "LatentMeta",
    "attach_handlers",
    "encode_datalist",
    "lesion_loss_weight",
    "lesion_weigher",
    "export_autoencoder",
    "export_diffusion",
    "loss_terms",
    "trainable_parameters",
    "load_initial_weights",
    "load_weights",
    "unwrap",
    "EmaUpdate",
    "WarmupCosine",
    "WeightedMSELoss",
    "WeightedVPredictionPrepareBatch",
    "saved_objects",
    "training_bf16",
]
