"""NIfTI/JSON I/O with the guarantees users rely on: true affines, atomic writes, no silent overwrite."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def safe_id(name: str, source: str = "") -> str:
    """An output name that cannot escape its folder (no separators, no '..', no hidden files) and, at 128
    characters at most, fits a file name with its suffixes and temporary-name parts (255 bytes). `source` says
    where the name comes from (e.g. "the label file's name"), for the message."""
    name = str(name)
    origin = f" (taken from {source})" if source else ""
    if not _SAFE_ID.match(name) or ".." in name:
        raise InputError(
            f"output name {name!r}{origin} is not allowed; accepted: up to 128 letters, digits, '_', "
            "'-', '.' (no spaces, path separators or '..')" + ("; rename the file" if source else "")
        )
    return name


def atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_nifti(
    path: str | Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32, pv_uint8: bool = False
) -> Path:
    """Write NIfTI atomically. Channel-first 4D arrays are stored channel-last (NIfTI convention).

    `pv_uint8` stores [0,1] fractions as uint8 with scl_slope 1/255 (8x smaller, 0.4% precision).
    """
    arr = np.asarray(data)
    if arr.ndim == 4:
        arr = np.moveaxis(arr, 0, -1)
    if pv_uint8:
        img = nib.Nifti1Image(np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8), affine)
        img.header.set_slope_inter(1.0 / 255.0, 0.0)
    else:
        img = nib.Nifti1Image(arr.astype(dtype), affine)
    img.header.set_qform(affine, code=4)  # 4 = MNI152
    img.header.set_sform(affine, code=4)
    img.header.set_xyzt_units("mm")
    return atomic_write(Path(path), lambda tmp: nib.save(img, tmp))


# the largest volume any command reads (voxels x channels), checked from the header before any data is read:
# 512^3, e.g. a 0.5 mm whole head; a file declaring more (a 1 MB gzip can declare 600^3) is refused
MAX_VOXELS = 512**3


def check_geometry(affine: np.ndarray, what: str) -> None:
    """Refuse a singular, non-finite or missing voxel-to-world geometry (it would be written as an identity)."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-6:
        raise InputError(
            f"{what} has no usable geometry (singular or non-finite affine); accepted: a NIfTI with a "
            "valid sform or qform (voxel sizes > 0), as scanners and conversion tools write it"
        )


def check_size(shape, what: str, limit: int = MAX_VOXELS) -> None:
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > limit:
        raise InputError(
            f"{what} holds {n:,} voxels (shape {tuple(int(s) for s in shape)}); accepted: at most "
            f"{limit:,} voxels (512^3)"
        )


def load_nifti(path: str | Path, what: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI as (float32 data, affine), channel-first for 4D; clear errors for bad files.

    The header is checked before the data is read: its size (MAX_VOXELS) and its geometry (a singular affine,
    or neither sform nor qform set, is refused rather than read as 1 mm voxels)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(
            f"{what} {str(p)!r} is a folder, not a file (a DICOM series?); accepted: one .nii or "
            ".nii.gz file (convert DICOM with e.g. dcm2niix)"
        )
    if not p.is_file():
        raise InputError(f"{what} file {str(p)!r} does not exist; accepted: a readable .nii or .nii.gz file")
    try:
        img = nib.load(str(p))
        shape = img.shape
    except Exception as exc:  # nibabel raises many types for truncated/non-NIfTI files
        raise InputError(
            f"{what} file {str(p)!r} is not a readable NIfTI image ({type(exc).__name__}: "
            f"{str(exc)[:120]}); accepted: .nii or .nii.gz"
        ) from None
    check_size(shape, f"{what} file {str(p)!r}")
    header = getattr(img, "header", None)
    codes = (
        (int(header["sform_code"]), int(header["qform_code"]))
        if header is not None and "sform_code" in header
        else (1, 1)
    )
    if codes == (0, 0):
        raise InputError(
            f"{what} file {str(p)!r} has neither an sform nor a qform (both codes 0: no geometry); "
            "accepted: a NIfTI with a valid sform or qform, as scanners and conversion tools write it"
        )
    check_geometry(img.affine, f"{what} file {str(p)!r}")
    if len(shape) > 4 and not (len(shape) == 5 and shape[3] == 1):
        raise InputError(
            f"{what} file {str(p)!r} is {len(shape)}D with shape {tuple(shape)}; accepted: a 3D volume "
            "(or a 4D channel stack for partial-volume label maps)"
        )
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise InputError(
            f"{what} file {str(p)!r} is not a readable NIfTI image ({type(exc).__name__}: "
            f"{str(exc)[:120]}); accepted: .nii or .nii.gz"
        ) from None
    if data.ndim == 5 and data.shape[3] == 1:  # some tools write (X,Y,Z,1,C)
        data = data[:, :, :, 0]
    if data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    if data.ndim not in (3, 4) or data.size == 0:
        raise InputError(
            f"{what} file {str(p)!r} has shape {data.shape}; accepted: a 3D volume "
            "(or a 4D channel stack for partial-volume label maps)"
        )
    if not np.all(np.isfinite(data)):
        raise InputError(f"{what} file {str(p)!r} contains NaN or infinite values")
    return data, img.affine.astype(np.float64)


def check_resampled_size(shape, affine: np.ndarray, spacing_mm: float, what: str) -> None:
    """Refuse an input whose grid, resampled to `spacing_mm`, would exceed MAX_VOXELS (16^3 voxels of 100 mm
    resampled to 2 mm would ask for 13 GB), before anything is allocated."""
    zooms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
    extent = np.asarray([int(s) for s in shape[-3:]], dtype=np.float64) * zooms
    target = np.ceil(extent / float(spacing_mm))
    if float(np.prod(target)) > MAX_VOXELS:
        raise InputError(
            f"{what} covers {tuple(round(float(e)) for e in extent)} mm, "
            f"{tuple(int(t) for t in target)} voxels once resampled to {spacing_mm:g} mm; accepted: at "
            f"most {MAX_VOXELS:,} voxels after resampling (check the voxel sizes in its header)"
        )


def save_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    return atomic_write(Path(path), write)


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_json(path: str | Path, what: str = "JSON file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {str(p)!r} is not valid JSON ({exc})") from None
    except RecursionError:  # e.g. 100,000 nested lists: Python's parser gives up
        raise InputError(
            f"{what} {str(p)!r} is nested too deeply to read; accepted: a JSON object such as "
            '{"training": [{"image": ..., "label": ...}]}'
        ) from None


def prepare_output_dir(output_dir: str | Path, planned: Iterable[str], overwrite: bool = False) -> Path:
    """Create/validate the output folder before any work: writable, and not already holding results.

    Checked up front so a refused run writes nothing at all.
    """
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"output_dir {str(out)!r} cannot be created ({exc.strerror}); accepted: a writable folder"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output_dir {str(out)!r} is not writable; accepted: a writable folder")
    if not overwrite:
        clash = [name for name in planned if (out / name).exists()]
        if clash:
            raise InputError(
                f"output_dir {str(out)!r} already holds {clash[0]!r} (and {len(clash) - 1} more planned "
                "outputs); accepted: an empty/new folder, or --overwrite true"
            )
    return out
