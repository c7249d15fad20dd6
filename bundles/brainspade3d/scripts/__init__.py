"""brainspade3d bundle code: the contrast-conditioned SPADE generator, the GAN training iteration,
training pairs, running the trained generator, the user's grid, the chained inference workflow and the evaluation.

Imported from configs with `brainspade.bundle.load_scripts(@bundle_root, 'brainspade3d_scripts')`.
"""

from brainspade.bundle import bundle_version

from . import curve, data, evaluate, generation, grid, inference, montage, networks, training
from .data import contrast_pairs
from .networks import ContrastSPADENet
from .training import SPADEGANStep, resume_handlers

__all__ = [
    "curve",
    "data",
    "evaluate",
    "generation",
    "grid",
    "inference",
    "montage",
    "networks",
    "training",
    "contrast_pairs",
    "ContrastSPADENet",
    "SPADEGANStep",
    "resume_handlers",
    "bundle_version",
]
