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


def safe_id(name: str) -> str:
    """An output name that cannot escape its folder (no separators, no '..', no hidden files)."""
    name = str(name)
    if not _SAFE_ID.match(name) or ".." in name:
        raise InputError(f"output name {name!r} is not allowed; accepted: letters, digits, '_', '-', '.' "
                         "(no path separators, no '..')")
    return name


def _atomic_write(path: Path, write) -> Path:
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


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32,
               pv_uint8: bool = False) -> Path:
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
    return _atomic_write(Path(path), lambda tmp: nib.save(img, tmp))


def load_nifti(path: str | Path, what: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI as (float32 data, affine), channel-first for 4D; clear errors for bad files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file {str(p)!r} does not exist; accepted: a readable .nii or .nii.gz file")
    try:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for truncated/non-NIfTI files
        raise InputError(f"{what} file {str(p)!r} is not a readable NIfTI image ({type(exc).__name__}: "
                         f"{str(exc)[:120]}); accepted: .nii or .nii.gz") from None
    if data.ndim == 5 and data.shape[3] == 1:  # some tools write (X,Y,Z,1,C)
        data = data[:, :, :, 0]
    if data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    if data.ndim not in (3, 4) or data.size == 0:
        raise InputError(f"{what} file {str(p)!r} has shape {data.shape}; accepted: a 3D volume "
                         "(or a 4D channel stack for partial-volume label maps)")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{what} file {str(p)!r} contains NaN or infinite values")
    return data, img.affine.astype(np.float64)


def save_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")

    return _atomic_write(Path(path), write)


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


def prepare_output_dir(output_dir: str | Path, planned: Iterable[str], overwrite: bool = False) -> Path:
    """Create/validate the output folder before any work: writable, and not already holding results.

    Checked up front so a refused run writes nothing at all.
    """
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"output_dir {str(out)!r} cannot be created ({exc.strerror}); accepted: a writable folder") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output_dir {str(out)!r} is not writable; accepted: a writable folder")
    if not overwrite:
        clash = [name for name in planned if (out / name).exists()]
        if clash:
            raise InputError(f"output_dir {str(out)!r} already holds {clash[0]!r} (and {len(clash) - 1} more planned "
                             "outputs); accepted: an empty/new folder, or --overwrite true")
    return out
