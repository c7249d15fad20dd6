"""Shared code of the brainSPADE3D bundles (label schema, contrasts, profiles, phantoms, I/O, precision, real-scan checks).

Everything more than one bundle needs lives here, so each fact is defined once.
"""

from .contrasts import CONTRASTS, check_contrasts
from .labels import CONDITION_KEYS, LABELS, LESIONS, NUM_LABELS, int_to_pv, lesion_volumes_ml, pv_to_int
from .profiles import PROFILES, Profile, get_profile

__version__ = "0.1.0"
__all__ = [
    "CONTRASTS",
    "check_contrasts",
    "CONDITION_KEYS",
    "LABELS",
    "LESIONS",
    "NUM_LABELS",
    "int_to_pv",
    "pv_to_int",
    "lesion_volumes_ml",
    "PROFILES",
    "Profile",
    "get_profile",
]
