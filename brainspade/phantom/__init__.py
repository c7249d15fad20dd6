"""Synthetic brain phantoms: MNI152 anatomy + smooth deformations + pathologies + contrast rendering.

The embedded default data of the project: a fresh offline machine can train and test everything.
"""

from .dataset import generate_dataset
from .subject import PATHOLOGIES, STYLES, generate_subject

__all__ = ["generate_dataset", "generate_subject", "PATHOLOGIES", "STYLES"]
