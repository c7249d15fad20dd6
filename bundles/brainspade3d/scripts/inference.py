"""The project's main workflow: label maps (label_ldm's sampler, or the user's `label_file`) -> SPADE images.

Everything is checked before the first file is written (contrast, counts, seed, style image, label file,
weights, label_ldm's conditioning and weights, output folder); every file is written atomically.
Called from inference.yaml as `brainspade.cli.run_guarded(@scripts.inference.synthesise, ...)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainspade.cli import parse_bool, parse_int
from brainspade.contrasts import CONTRASTS, check_contrasts
from brainspade.errors import InputError
from brainspade.io import check_resampled_size, load_nifti, prepare_output_dir, safe_id, save_json, save_nifti
from brainspade.labels import (
    NUM_LABELS,
    check_int_labels,
    check_pv,
    int_to_pv,
    lesion_volumes_ml,
    normalise_pv,
    pv_to_int,
)
from brainspade.profiles import get_profile
from brainspade.sharding import (
    SampleLocks,
    clear_stale_parts,
    pending,
    read_sidecar,
    sample_id,
    sample_seed,
    shard_indices,
    sidecar_files_exist,
    write_datalist,
)

MIN_SIDE = 4  # a label map thinner than this is not a brain volume
STYLE_STREAM = 7919  # style seed of a sample = sample_seed(sample's seed, STYLE_STREAM): independent of its noise


def _optional_path(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, (str, Path)):
        raise InputError(f"{name}={value!r} is not a file path; accepted: a .nii or .nii.gz file")
    return str(value)


def load_generator(network: torch.nn.Module, path: str, device) -> torch.nn.Module:
    """Load generator weights (plain state dict, or a training checkpoint's 'generator') with weights_only=True."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"generator weights {str(p)!r} do not exist; accepted: models/model.pt or a file written "
            "by train.yaml (run_dir/model.pt), given as --ckpt_path"
        )
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"generator weights {str(p)!r} cannot be read ({type(exc).__name__}); accepted: a state dict "
            "saved by train.yaml"
        ) from None
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(
            f"generator weights {str(p)!r} do not fit this network (other profile or channel widths?): "
            f"{str(exc).splitlines()[0][:160]}; accepted: weights trained with the same configs"
        ) from None
    return network.to(device).eval()


def _load(path: str, what: str, accepted: str, spacing_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """brainspade.io.load_nifti, with what this option accepts added where its message does not say it; with
    `spacing_mm`, also refuses a grid too large once resampled to it (before resampling allocates it)."""
    try:
        data, affine = load_nifti(path, what)
        if spacing_mm is not None:
            check_resampled_size(data.shape, affine, spacing_mm, f"{what} {str(path)!r}")
        return data, affine
    except InputError as exc:
        msg = str(exc)
        if "accepted" in msg:
            raise
        raise InputError(f"{msg}; accepted: {accepted}") from None


def _brain_of_pv(x):
    return x[:1] < 0.5  # brain = voxels that are not mostly background


def _nonzero(x):
    return x > 0


def _model_grid_transforms(profile, select_fn):
    """User grid -> model grid: RAS, profile spacing, crop to the brain, pad/crop to the profile shape.

    All MONAI invertible transforms, so the image made on the model grid goes back with `.inverse`.
    Bilinear resampling of (one-hot) partial volumes keeps boundary fractions; padding is empty (zeros).
    """
    from monai import transforms as mt

    return mt.Compose(
        [
            mt.Orientation(axcodes="RAS"),
            mt.Spacing(pixdim=(profile.spacing_mm,) * 3, mode="bilinear", padding_mode="zeros"),
            mt.CropForeground(select_fn=select_fn, margin=2, allow_smaller=True),
            mt.ResizeWithPadOrCrop(spatial_size=profile.shape),
        ]
    )


class LabelFile:
    """A user's label map (integer codes or 10-channel partial volumes), checked and mapped onto the model grid.

    `pv_model` (10, *profile.shape) is what the generator sees; `to_user_grid(image)` maps a model-grid image
    back onto the user's grid and affine; `labels`/`affine` are the user's own.
    """

    def __init__(self, path: str, profile):
        from monai.data import MetaTensor

        data, affine = _load(
            path,
            "label_file",
            f"finite integer labels 0..{NUM_LABELS - 1} or {NUM_LABELS}-channel " "partial volumes in [0, 1]",
            profile.spacing_mm,
        )
        what = f"label_file {str(path)!r}"
        if data.ndim == 4 and data.shape[0] == 1:
            data = data[0]
        if data.ndim == 3:
            self.labels = check_int_labels(data, what)
            pv = int_to_pv(self.labels)
        else:
            pv = check_pv(data, what)
            self.labels = pv_to_int(pv)
        if min(self.labels.shape) < MIN_SIDE:
            raise InputError(
                f"{what} has shape {tuple(self.labels.shape)}; accepted: a 3D label volume with every "
                f"side >= {MIN_SIDE} voxels"
            )
        if not (pv[0] < 0.5).any():
            raise InputError(f"{what} holds background only; accepted: a brain label map (codes 1..9)")
        self.affine = affine
        self.voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
        self.pv_user = pv
        self._xform = _model_grid_transforms(profile, _brain_of_pv)
        pv_t = self._xform(MetaTensor(torch.from_numpy(pv), affine=torch.as_tensor(affine)))
        self._affine_model = pv_t.affine.clone()
        self._ops = copy.deepcopy(list(pv_t.applied_operations))
        self.pv_model = normalise_pv(pv_t.numpy())

    def to_user_grid(self, image: np.ndarray) -> np.ndarray:
        """(X, Y, Z) model-grid image -> image on the user's grid (same shape as the user's label map)."""
        from monai.data import MetaTensor

        img = MetaTensor(
            torch.as_tensor(image, dtype=torch.float32)[None],
            affine=self._affine_model.clone(),
            applied_operations=copy.deepcopy(self._ops),
        )  # inverse pops from them
        arr = np.asarray(self._xform.inverse(img)[0].cpu().numpy(), dtype=np.float32)
        if arr.shape != self.labels.shape:  # MONAI restores the original shape; guard against silent mismatch
            raise RuntimeError(f"inverse resampling gave shape {arr.shape}, expected {self.labels.shape}")
        return arr


def load_style_image(path: str, profile) -> torch.Tensor:
    """Reference scan -> (1, 1, *shape) tensor on the model grid, brain intensities scaled so p99 = 1."""
    from monai.data import MetaTensor

    data, affine = _load(path, "style_image", "one finite 3D MRI volume (.nii/.nii.gz)", profile.spacing_mm)
    if data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3 or min(data.shape) < MIN_SIDE:
        raise InputError(f"style_image {str(path)!r} has shape {tuple(data.shape)}; accepted: one 3D MRI volume")
    img = MetaTensor(torch.from_numpy(data[None]), affine=torch.as_tensor(affine))
    img = _model_grid_transforms(profile, _nonzero)(img)
    arr = img.numpy()[0]
    brain = arr[arr > 0]
    if brain.size < 100:
        raise InputError(
            f"style_image {str(path)!r} has (almost) no non-zero voxels; accepted: a skull-stripped "
            "brain MRI with background 0"
        )
    arr = np.clip(arr, 0, None) / float(np.percentile(brain, 99))
    return torch.from_numpy(arr.astype(np.float32))[None, None]


@torch.no_grad()
def generate_images(network, pv: np.ndarray, contrasts: list[str], z: torch.Tensor, device) -> dict[str, np.ndarray]:
    """One label map, one style code -> {contrast: (X, Y, Z) image}. On CUDA under bf16 autocast: half the
    activation memory of the paper-size generator; the CPU path stays float32."""
    pv_t = torch.as_tensor(pv, dtype=torch.float32, device=device)[None]
    out = {}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        for c in contrasts:
            idx = torch.tensor([CONTRASTS.index(c)], device=device)
            out[c] = network.decode(pv_t, idx, z.to(device))[0, 0].float().cpu().numpy()
    return out


def default_device() -> torch.device:
    """CUDA when present (under torchrun: the process's own GPU, LOCAL_RANK), else CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")


def resolve_shard(shard: Any = None, num_shards: Any = None) -> tuple[int, int]:
    """(shard, num_shards) from the options, else from torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if shard is None and num_shards is None:
        shard, num_shards = os.environ.get("RANK", 0), os.environ.get("WORLD_SIZE", 1)
        where = "RANK/WORLD_SIZE"
    else:
        shard, num_shards = (0 if shard is None else shard), (1 if num_shards is None else num_shards)
        where = "--shard/--num_shards"
    n = parse_int(num_shards, "num_shards", 1, 4096)
    try:
        i = parse_int(shard, "shard", 0, n - 1)
    except InputError:
        raise InputError(
            f"shard={shard!r} is not accepted for num_shards={n} ({where}); accepted: 0..{n - 1}"
        ) from None
    return i, n


def sample_files(sid: str, contrasts: list[str], preview: bool) -> list[str]:
    """A sample's files; its sidecar JSON comes last (written last: it marks the sample complete)."""
    return (
        [f"{sid}_{c}.nii.gz" for c in contrasts]
        + [f"{sid}_label.nii.gz"]
        + ([f"{sid}.png"] if preview else [])
        + [f"{sid}.json"]
    )


def complete_sample(out: Path, sid: str, contrasts: list[str], preview: bool, expect: dict) -> bool:
    """True when `sid` was finished by an earlier run with the same settings (resume skips it).

    A sample without a readable sidecar is unfinished (a killed run) and is made again. A finished one
    made with other settings (seed, profile, label source, missing contrasts) is refused rather than
    mixed into this dataset.
    """
    side = read_sidecar(out / f"{sid}.json")
    if side is None:  # missing, unreadable, or not a JSON object: unfinished
        return False
    for key, val in expect.items():
        if side.get(key) != val:
            raise InputError(
                f"output_dir {str(out)!r} already holds {sid} made with {key}={side.get(key)!r}, not "
                f"{val!r}; accepted: the same settings to resume, a new folder, or --overwrite true"
            )
    missing = [c for c in contrasts if c not in (side.get("contrast") or [])]
    if missing:
        raise InputError(
            f"output_dir {str(out)!r} already holds {sid} without contrast {missing[0]!r}; accepted: the "
            "same --contrast to resume, a new folder, or --overwrite true"
        )
    return sidecar_files_exist(out, side) and all((out / f).is_file() for f in sample_files(sid, contrasts, preview))


def merge_datalist(output_dir: Any, num_samples: Any = 1, first_index: Any = 0) -> Path:
    """Write `<output_dir>/datalist.json` once every sample first_index..first_index+num_samples-1 is complete."""
    out = Path(str(output_dir))
    n = parse_int(num_samples, "num_samples", 1, 10_000_000)
    first = parse_int(first_index, "first_index", 0, 10**9)
    todo = pending(out, list(range(first, first + n)))
    if todo:
        raise InputError(
            f"output_dir {str(out)!r} lacks {len(todo)} of {n} samples (first missing: {sample_id(todo[0])}); "
            "accepted: --merge once every shard has finished (rerun the missing shards, they resume)"
        )
    path = write_datalist(out)
    print(f"datalist of {n} sample(s): {path}", flush=True)
    return path


def synthesise(
    network: torch.nn.Module,
    ckpt_path: str,
    device,
    profile: str = "default",
    contrast: Any = "t1",
    num_samples: Any = 1,
    seed: Any = 0,
    output_dir: Any = "output",
    overwrite: Any = False,
    style_image: Any = None,
    label_file: Any = None,
    label_sampler: Callable[[], Any] | None = None,
    model_version: str = "",
    preview: Any = True,
    shard: Any = None,
    num_shards: Any = None,
    first_index: Any = 0,
    resume: Any = None,
    merge: Any = False,
    conditions: Mapping | None = None,
    label_ldm_extra: Any = None,
) -> list[str]:
    """Check everything, then write per sample `<id>_<contrast>.nii.gz`, `<id>_label.nii.gz`, `<id>.png`, `<id>.json`.

    Sample k (first_index <= k < first_index + num_samples) has id `sample-<k:06d>` and seed
    `brainspade.sharding.sample_seed(seed, k)`, whatever the shard count, so any split over processes
    (`shard`/`num_shards`, or torchrun's RANK/WORLD_SIZE) gives the same samples. `resume` (default: on
    when sharded) skips finished samples. The process that finishes the last sample writes
    `datalist.json`; `merge=True` only writes it (after checking every sample exists).
    label_sampler: zero-argument callable giving label_ldm's `LabelSampler` (built from label_ldm's
    inference.yaml); only called when no `label_file` is given. `conditions` (the lesion-volume options) have
    no effect with a label file, so they are refused there; they and `label_ldm_extra` are recorded in each
    sidecar, and resume refuses a folder made with other values.
    """
    t_start = time.perf_counter()
    if output_dir is None or not str(output_dir).strip():
        raise InputError("output_dir is not set; accepted: a writable folder (--output_dir out/)")
    if parse_bool(merge, "merge"):
        return [str(merge_datalist(output_dir, num_samples, first_index))]
    prof = get_profile(profile)
    contrasts = check_contrasts(contrast)
    n = parse_int(num_samples, "num_samples", 1, 10_000_000)
    base_seed = parse_int(seed, "seed", 0, 2**31 - 1)
    first = parse_int(first_index, "first_index", 0, 10**9)
    overwrite = parse_bool(overwrite, "overwrite")
    preview = parse_bool(preview, "preview")
    shard_i, shards = resolve_shard(shard, num_shards)
    resume = shards > 1 if resume is None else parse_bool(resume, "resume")
    style_path = _optional_path("style_image", style_image)
    label_path = _optional_path("label_file", label_file)
    conditions = {k: v for k, v in dict(conditions or {}).items() if v is not None}
    check_label_ldm_extra(label_ldm_extra)
    if label_path and conditions:
        given = ", ".join(f"--{k}" for k in conditions)
        raise InputError(
            f"{given} has no effect with --label_file (the label map is yours, label_ldm is not run); "
            "accepted: --label_file alone, or lesion options without --label_file"
        )

    style = load_style_image(style_path, prof) if style_path else None
    user = LabelFile(label_path, prof) if label_path else None
    network = load_generator(network, ckpt_path, device)
    if tuple(network.input_shape) != tuple(prof.shape):
        raise InputError(
            f"the generator's grid {tuple(network.input_shape)} is not profile {prof.name!r} "
            f"{tuple(prof.shape)}; accepted: weights and configs of one profile"
        )

    indices = shard_indices(n, shards, shard_i, first)
    sampler = None
    if user is not None:
        stem = re.sub(r"[_-](labels?|seg)$", "", Path(label_path).name.split(".")[0])  # sub-01_label -> sub-01
        stem = safe_id(stem if stem and stem[0].isalnum() else "label", "the label file's name")
        ids = {k: stem if n == 1 else f"{stem}-{k:06d}" for k in indices}
    else:
        if label_sampler is None:
            raise InputError("no label source: give --label_file PATH, or keep the label_ldm bundle beside this one")
        sampler = label_sampler()
        sampler.settings(num_samples=1, seed=base_seed)  # checks conditioning + label_ldm weights up front
        ids = {k: sample_id(k) for k in indices}
    expect = {
        "base_seed": base_seed,
        "profile": prof.name,
        "label_source": "label_file" if user else "label_ldm",
        "label_file": str(Path(label_path).resolve()) if user is not None else None,
        "style_image": str(Path(style_path).resolve()) if style_path else None,
        # every other setting that changes content: resume refuses a folder made with other values
        "settings": {
            "conditions": {k: conditions[k] for k in sorted(conditions)},
            "label_ldm_extra": _jsonable(label_ldm_extra or {}),
            "generator_sha256": file_sha256(ckpt_path),
        },
    }
    out = Path(str(output_dir))
    inputs = [p for p in (label_path, style_path) if p]
    check_inputs_not_outputs(out, inputs, lambda: (f for k in indices for f in sample_files(ids[k], CONTRASTS, True)))
    todo = [
        k
        for k in indices
        if overwrite or not resume or not out.is_dir() or not complete_sample(out, ids[k], contrasts, preview, expect)
    ]
    planned = [] if resume else [f for k in todo for f in sample_files(ids[k], contrasts, preview)]
    out = prepare_output_dir(output_dir, planned, overwrite)
    if len(todo) < len(indices):
        print(
            f"resuming: {len(indices) - len(todo)} of {len(indices)} sample(s) of shard {shard_i}/{shards} "
            "already complete",
            flush=True,
        )
    with SampleLocks(out).acquire([ids[k] for k in todo]):  # a second run over these samples is refused
        written = _write_samples(
            out,
            [(k, ids[k]) for k in todo],
            contrasts,
            preview,
            (shard_i, shards),
            user,
            style,
            network,
            device,
            sampler,
            base_seed,
            prof,
            expect,
            model_version,
        )
    print(f"wrote {len(written)} sample(s) to {out} in {time.perf_counter() - t_start:.1f} s", flush=True)
    if user is None and not pending(out, list(range(first, first + n))):
        # every sample exists: whichever process finishes last writes the datalist (same content if two race)
        print(f"datalist: {write_datalist(out)}", flush=True)
    return written


def _write_samples(
    out: Path,
    todo: list[tuple[int, str]],
    contrasts: list[str],
    preview: bool,
    shard: tuple[int, int],
    user: "LabelFile | None",
    style,
    network,
    device,
    sampler,
    base_seed: int,
    prof,
    expect: dict,
    model_version: str,
) -> list[str]:
    """The writing half of `synthesise`: each claimed sample (index, id) whole, its sidecar last."""
    ids = dict(todo)
    stale = clear_stale_parts(out, list(ids.values()))
    if stale:
        print(f"removed {len(stale)} temporary file(s) of an interrupted run", flush=True)

    with torch.no_grad():  # a reference scan's style code: the encoder's mean (deterministic), once for all samples
        z_style = network.encode(style.to(device))[0].cpu() if style is not None else None
    written = []
    for k in ids:
        try:
            written.append(
                _write_sample(
                    out,
                    k,
                    ids[k],
                    contrasts,
                    preview,
                    shard,
                    user,
                    z_style,
                    network,
                    device,
                    sampler,
                    base_seed,
                    prof,
                    expect,
                    model_version,
                )
            )
        except OSError as exc:  # disk full, quota, permissions: a sample is all or nothing
            remove_sample(out, ids[k])
            raise InputError(
                f"cannot write {ids[k]} into output_dir {str(out)!r} ({exc.strerror or exc}); the "
                "sample was removed whole, earlier samples are complete; accepted: a folder with free "
                "space (then --resume true)"
            ) from None
    return written


def _write_sample(
    out: Path,
    k: int,
    sid: str,
    contrasts: list[str],
    preview: bool,
    shard: tuple[int, int],
    user: "LabelFile | None",
    z_style,
    network,
    device,
    sampler,
    base_seed: int,
    prof,
    expect: dict,
    model_version: str,
) -> str:
    """Sample `k` (id `sid`): its images, label map, preview and, last, its sidecar (which marks it complete)."""
    shard_i, shards = shard
    t0 = time.perf_counter()
    s_seed = sample_seed(base_seed, k)
    if user is not None:
        smp = {"pv": user.pv_model}
    else:
        smp = next(sampler.iter_samples(num_samples=1, seed=s_seed))
    pv = np.asarray(smp["pv"], dtype=np.float32)
    if pv.shape[1:] != tuple(prof.shape):
        raise InputError(
            f"label map grid {pv.shape[1:]} does not match profile {prof.name!r} {tuple(prof.shape)}; "
            "accepted: label_ldm and brainspade3d run with the same --profile"
        )
    style_seed = None
    if z_style is not None:
        z = z_style
    else:
        style_seed = sample_seed(s_seed, STYLE_STREAM)
        z = network.sample_z(1, generator=torch.Generator().manual_seed(style_seed))
    images = generate_images(network, pv, contrasts, z, device)
    if user is not None:
        images = {c: user.to_user_grid(img) for c, img in images.items()}
        labels, affine = user.labels, user.affine
        achieved = lesion_volumes_ml(user.pv_user, user.voxel_mm3)
        requested = None
    else:
        labels = np.asarray(smp["labels"], dtype=np.int16)
        affine = np.asarray(smp["affine"], dtype=np.float64)
        achieved, requested = smp.get("achieved"), smp.get("requested")
    files = {c: f"{sid}_{c}.nii.gz" for c in contrasts}
    files["label"] = f"{sid}_label.nii.gz"
    remove_sample(out, sid)  # overwrite replaces a sample whole: no image of an earlier run stays beside it
    for c in contrasts:
        save_nifti(out / files[c], images[c], affine)
    save_nifti(out / files["label"], labels, affine, dtype=np.int16)
    if preview:
        from brainspade.preview import save_preview

        save_preview(out / f"{sid}.png", images, labels, title=f"{sid} (synthetic)")
        files["preview"] = f"{sid}.png"
    side = {
        "id": sid,
        "synthetic": True,
        "index": k,
        "seed": s_seed,
        "base_seed": base_seed,
        "contrast": contrasts,
        "label_source": expect["label_source"],
        "label_file": expect["label_file"],
        "requested": requested,
        "achieved": {key: round(float(v), 4) for key, v in (achieved or {}).items()},
        "style_image": expect["style_image"],
        "style_seed": style_seed,
        "models": {
            "brainspade3d": model_version,
            **({"label_ldm": smp.get("model_version", "")} if user is None else {}),
        },
        "profile": prof.name,
        "affine": np.asarray(affine).tolist(),
        "shape": list(labels.shape),
        "files": files,
        "shard": [shard_i, shards],
        "settings": expect["settings"],
        "time_s": round(time.perf_counter() - t0, 3),
    }
    if user is None:
        side["label_ldm"] = {
            key: smp.get(key)
            for key in (
                "seed",
                "sampler",
                "steps",
                "guidance_scale",
                "verified",
                "retries",
                "requested_source",
                "sampled_achieved",
                "volume_matching",
                "achieved_pv",
                "time_s",
            )
            if key in smp
        }
    path = str(save_json(out / f"{sid}.json", side))  # last: marks the sample complete
    print(f"{sid}: {', '.join(contrasts)} -> {out} ({side['time_s']:.1f} s)", flush=True)
    return path


def _jsonable(obj: Any) -> Any:
    """`obj` as it reads back from a sidecar (tuples become lists, keys strings), so resume compares like with like."""
    return json.loads(json.dumps(obj, default=str))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_inputs_not_outputs(out: Path, inputs: list[str], names: Callable[[], Iterable[str]]) -> None:
    """Refuse a run whose outputs would replace one of its own inputs (an input is never an output).

    `names` gives the run's output file names; it is only asked for when an input lies in `out` itself (a
    million-sample run does not list its names to check a label file kept elsewhere)."""
    inside = [p for p in inputs if Path(p).resolve().parent == out.resolve()]
    if not inside:
        return
    planned = set(names())
    for path in inside:
        name = Path(path).resolve().name
        if name in planned:
            raise InputError(
                f"input {str(path)!r} would be overwritten by this run's output {name!r}; accepted: "
                "an input outside output_dir or under another name (e.g. --output_dir elsewhere)"
            )


def remove_sample(out: Path, sid: str) -> None:
    """Delete every file of sample `sid` (its sidecar first, so a kill mid-way leaves it unfinished, not mixed)."""
    (out / f"{sid}.json").unlink(missing_ok=True)
    for name in sample_files(sid, list(CONTRASTS), True):
        (out / name).unlink(missing_ok=True)


def check_label_ldm_extra(extra: Any) -> None:
    if extra is not None and not isinstance(extra, Mapping):
        raise InputError(
            f"label_ldm_extra={extra!r} is not a dict; accepted: a dict of label_ldm inference ids, "
            "e.g. \"{'sampling': 'pndm300'}\""
        )


def bundle_parser(config: dict, overrides: Mapping, extra: Any = None):
    """A MONAI ConfigParser over another bundle config (already read), with ids overridden (`extra` last).

    This is how the chain reuses label_ldm's inference.yaml and this bundle's common.yaml without copying them.
    """
    from monai.bundle import ConfigParser

    check_label_ldm_extra(extra)
    parser = ConfigParser(config)
    parser.update({**dict(overrides), **dict(extra or {})})
    return parser
