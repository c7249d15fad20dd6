"""Training/evaluation items: one (subject, contrast) pair per item, from a MONAI datalist.

Each datalist entry holds `pv` (10-channel partial volumes) and one image per contrast (keys from
brainspade.contrasts.CONTRASTS). Expanding to pairs and shuffling them each epoch gives every iteration
a random subject in a random contrast; entries of real datalists that lack a contrast simply yield
fewer pairs.
"""

from __future__ import annotations

from pathlib import Path

from brainspade.contrasts import CONTRASTS, check_contrasts
from brainspade.errors import InputError
from brainspade.io import load_json


def contrast_pairs(datalist: str, key: str = "training", contrasts=None) -> list[dict]:
    """[{"id", "pv", "image", "contrast" (index into CONTRASTS), "contrast_name"}] with absolute paths."""
    from monai.data import load_decathlon_datalist

    p = Path(str(datalist))
    accepted = (
        "accepted: a MONAI datalist JSON whose entries hold 'pv' (10-channel partial volumes) and images keyed "
        f"by contrast ({', '.join(CONTRASTS)}), e.g. one written by python -m brainspade.phantom"
    )
    if not p.is_file():
        raise InputError(f"datalist {str(p)!r} does not exist; {accepted}")
    meta = load_json(p, "datalist")
    if not isinstance(meta, dict):
        raise InputError(f"datalist {str(p)!r} is not a JSON object; {accepted}")
    if key not in meta:
        raise InputError(f"datalist {str(p)!r} has no {key!r} list; accepted keys: training, validation, test")
    names = check_contrasts(contrasts) if contrasts else list(CONTRASTS)
    entries = load_decathlon_datalist(str(p), is_segmentation=False, data_list_key=key, base_dir=str(p.parent))
    pairs = []
    for i, e in enumerate(entries):
        if "pv" not in e:
            raise InputError(f"datalist {p.name} {key}[{i}] has no 'pv' (10-channel partial-volume map)")
        for c in names:
            if c in e:
                pairs.append(
                    {
                        "id": e.get("id", f"{key}{i}"),
                        "pv": e["pv"],
                        "image": e[c],
                        "contrast": CONTRASTS.index(c),
                        "contrast_name": c,
                    }
                )
    if not pairs:
        raise InputError(f"datalist {p.name} {key}: no entry has an image for contrasts {names}")
    return pairs
