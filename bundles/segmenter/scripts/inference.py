"""Input checks for inference: everything is validated before any output is written.

`check_inputs` is what `run` calls first (inside brainspade.cli.run_guarded): a bad input becomes one
line `error: ...` and exit status 2, and the output folder receives nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainspade.cli import parse_bool
from brainspade.errors import InputError
from brainspade.io import check_resampled_size, load_json, load_nifti, prepare_output_dir, safe_id
from brainspade.labels import LABELS

from .train_utils import check_checkpoint, check_fits

NIFTI_EXT = (".nii.gz", ".nii")
ACCEPTED = "a 3D NIfTI image (.nii or .nii.gz), any orientation and spacing"


def _name_of(path: Path) -> str:
    name = path.name
    for ext in NIFTI_EXT:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def check_image(path: str | Path, spacing_mm: float = 2.0) -> tuple[int, ...]:
    """Reject missing, non-NIfTI, non-3D, empty and non-finite images, images without geometry and images too
    large once resampled to the model's `spacing_mm`; return the spatial shape."""
    p = Path(str(path))
    if not p.is_file():
        raise InputError(f"input image {str(p)!r} does not exist; accepted: {ACCEPTED}")
    if not p.name.endswith(NIFTI_EXT):
        raise InputError(f"input image {str(p)!r} is not a NIfTI file name; accepted: {ACCEPTED}")
    try:
        data, affine = load_nifti(p, "input image")  # readable NIfTI, finite values, 3D or channel stack, geometry
        check_resampled_size(data.shape, affine, spacing_mm, f"input image {str(p)!r}")
    except InputError as exc:
        msg = str(exc)
        raise InputError(msg if "accepted" in msg else f"{msg}; accepted: {ACCEPTED}, finite values") from None
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3:
        raise InputError(
            f"input image {str(p)!r} is {data.ndim}D with shape {tuple(np.moveaxis(data, 0, -1).shape)}; "
            f"accepted: {ACCEPTED} (split 4D series into 3D volumes first)"
        )
    if min(data.shape) < 2:
        raise InputError(f"input image {str(p)!r} has shape {data.shape}; accepted: {ACCEPTED} (not a 2D slice)")
    if not np.any(data):
        raise InputError(f"input image {str(p)!r} is empty (all zeros); accepted: {ACCEPTED}")
    return tuple(int(s) for s in data.shape)


def _entries(input_image, datalist, datalist_key: str) -> list[dict]:
    if input_image not in (None, "") and datalist not in (None, ""):
        raise InputError("give either input_image or datalist, not both")
    if input_image not in (None, ""):
        p = Path(str(input_image)).expanduser().absolute()
        return [{"image": str(p), "name": _name_of(p)}]
    path = Path(str(datalist)).expanduser().absolute()
    data = load_json(path, "datalist")
    items = data.get(datalist_key) if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise InputError(
            f"datalist {str(path)!r} has no non-empty {datalist_key!r} list; accepted: "  # noqa: B907 (JSON example)
            f'{{"{datalist_key}": [{{"image": "a.nii.gz"}}, ...]}} or a JSON list of paths'
        )
    out = []
    for i, e in enumerate(items):
        img = e if isinstance(e, str) else e.get("image") if isinstance(e, dict) else None
        if not isinstance(img, str):
            raise InputError(
                f"datalist {path.name} entry {i} ({str(e)[:40]}) has no 'image' path; accepted: "  # noqa: B907 (JSON example)
                f'{{"{datalist_key}": [{{"image": "a.nii.gz"}}, ...]}} or a JSON list of paths'
            )
        p = Path(img) if Path(img).is_absolute() else path.parent / img
        name = str(e.get("id")) if isinstance(e, dict) and e.get("id") else _name_of(p)
        out.append({"image": str(p.absolute()), "name": name})
    return out


def planned_outputs(name: str) -> list[str]:
    return [f"{name}_seg.nii.gz", f"{name}_volumes.json"]


def check_weights(ckpt_path, network=None) -> None:
    """Weights exist, load as a state dict (weights_only=True) and fit `network` before any output is written."""
    if ckpt_path in (None, "") or not Path(str(ckpt_path)).is_file():
        raise InputError(
            f"model weights {str(ckpt_path)!r} do not exist; accepted: a state-dict file such as "
            "bundles/segmenter/models/model.pt (train one with configs/train.yaml)"
        )
    if network is not None:
        check_fits(ckpt_path, network, "model weights")
    else:
        check_checkpoint(ckpt_path, "model weights")


def check_inputs(
    input_image=None,
    datalist=None,
    output_dir=None,
    overwrite: bool = False,
    datalist_key: str = "testing",
    ckpt_path=None,
    network=None,
) -> list[dict]:
    """Validate every input image, the weights and the output folder; return the items to segment."""
    overwrite = parse_bool(overwrite, "overwrite")
    if input_image in (None, "") and datalist in (None, ""):
        raise InputError(
            f"no input given; accepted: input_image=<3D NIfTI path> or datalist=<JSON with a {datalist_key!r} list>"
        )
    if output_dir in (None, ""):
        raise InputError("no output_dir given; accepted: a writable folder")
    items = _entries(input_image, datalist, datalist_key)
    seen: dict[str, str] = {}
    for it in items:
        it["name"] = safe_id(it["name"], "the input's file name or datalist id")
        if it["name"] in seen:
            raise InputError(
                f"two inputs would both be written as {it['name']!r} ({seen[it['name']]} and "
                f"{it['image']}); accepted: unique file names or unique 'id's in the datalist"
            )
        seen[it["name"]] = it["image"]
        check_image(it["image"])
    if ckpt_path is not None:
        check_weights(ckpt_path, network)
    prepare_output_dir(output_dir, [n for it in items for n in planned_outputs(it["name"])], overwrite)
    return items


def inference_items(
    input_image=None, datalist=None, output_dir=None, overwrite: bool = False, datalist_key: str = "testing"
) -> list[dict]:
    """Items for the inference dataset; [] when no input is configured (lets property checks resolve ids)."""
    if input_image in (None, "") and datalist in (None, ""):
        return []
    return _entries(input_image, datalist, datalist_key)


def volumes_ml(labels: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    vox_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    counts = np.bincount(np.asarray(labels, dtype=np.int64).reshape(-1), minlength=len(LABELS))
    return {lab.key: float(counts[lab.code]) * vox_ml for lab in LABELS}
