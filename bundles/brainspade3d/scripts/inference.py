"""The project's main workflow: label maps (label_ldm's sampler, or the user's `label_file`) -> SPADE images.

Everything is checked before the first file is written (contrast, counts, seed, style image, label file,
weights, label_ldm's conditioning and weights, output folder); every file is written atomically.
inference.yaml builds the run as a component (`synthesiser: {_target_: ...Synthesiser}`) and runs it with
`$@synthesiser()`. The user's grid is scripts/grid.py's; sharding, resume and the datalist are brainspade.sharding's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainspade.bundle import bundle_config
from brainspade.cli import parse_bool, parse_int, run_guarded
from brainspade.contrasts import CONTRASTS, check_contrasts
from brainspade.errors import InputError
from brainspade.io import prepare_output_dir, safe_id, save_json, save_nifti
from brainspade.labels import lesion_volumes_ml
from brainspade.profiles import Profile, get_profile
from brainspade.sharding import (
    SampleLocks,
    check_inputs_not_outputs,
    clear_stale_parts,
    complete_sample,
    file_sha256,
    jsonable,
    merge_datalist,
    pending,
    remove_sample,
    resolve_shard,
    sample_files,
    sample_id,
    sample_seed,
    shard_indices,
    write_datalist,
)

from .generation import generate_images, load_generator, sampled_style
from .grid import LabelFile, load_style_image

# what label_ldm reports of a sample, kept in the sidecar under "label_ldm"
LABEL_LDM_KEYS = (
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


def _optional_path(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, (str, Path)):
        raise InputError(f"{name}={value!r} is not a file path; accepted: a .nii or .nii.gz file")
    return str(value)


def default_device() -> torch.device:
    """CUDA when present (under torchrun: the process's own GPU, LOCAL_RANK), else CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")


def check_label_ldm_extra(extra: Any) -> None:
    if extra is not None and not isinstance(extra, Mapping):
        raise InputError(
            f"label_ldm_extra={extra!r} is not a dict; accepted: a dict of label_ldm inference ids, "
            "e.g. \"{'sampling': 'pndm300'}\""
        )


def label_ldm_parser(bundle_root: str, names: list[str], overrides: Mapping, extra: Any = None):
    """label_ldm's inference config(s) with the chain's ids and then the user's `label_ldm_extra` set: the chain
    reuses label_ldm's own configs instead of copying them."""
    check_label_ldm_extra(extra)
    return bundle_config(bundle_root, names, {**dict(overrides), **dict(extra or {})})


def label_file_ids(label_path: str, indices: list[int], num_samples: int) -> dict[int, str]:
    """Output ids of a user's label map: its file name (`sub-01_label.nii.gz` -> `sub-01`), numbered when several."""
    stem = re.sub(r"[_-](labels?|seg)$", "", Path(label_path).name.split(".")[0])
    stem = safe_id(stem if stem and stem[0].isalnum() else "label", "the label file's name")
    return {k: stem if num_samples == 1 else f"{stem}-{k:06d}" for k in indices}


@dataclass
class Job:
    """One run's checked options and inputs: what every sample of it needs, nothing written yet."""

    out: Path
    prof: Profile
    contrasts: list[str]
    num_samples: int
    base_seed: int
    first: int
    overwrite: bool
    preview: bool
    shard: tuple[int, int]
    resume: bool
    style_path: str | None
    label_path: str | None
    conditions: dict
    device: Any = None
    network: torch.nn.Module | None = None
    user: LabelFile | None = None
    style: torch.Tensor | None = None
    sampler: Any = None
    ids: dict[int, str] = field(default_factory=dict)
    expect: dict = field(default_factory=dict)
    model_version: str = ""


@dataclass
class Synthesiser:
    """The main command as a config component: `synthesiser()` checks everything, then writes per sample
    `<id>_<contrast>.nii.gz`, `<id>_label.nii.gz`, `<id>.png`, `<id>.json`; bad input is one `error:` line, exit 2.

    Sample k (first_index <= k < first_index + num_samples) has id `sample-<k:06d>` and seed
    `brainspade.sharding.sample_seed(seed, k)`, whatever the shard count, so any split over processes
    (`shard`/`num_shards`, or torchrun's RANK/WORLD_SIZE) gives the same samples. `resume` (default: on
    when sharded) skips finished samples. The process that finishes the last sample writes
    `datalist.json`; `merge=True` only writes it (after checking every sample exists).
    label_sampler: zero-argument callable giving label_ldm's `LabelSampler` (built from label_ldm's
    inference.yaml); only called when no `label_file` is given. `conditions` (the lesion-volume options) have
    no effect with a label file, so they are refused there; they and `label_ldm_extra` are recorded in each
    sidecar, and resume refuses a folder made with other values. Options are read as given on the command line
    (strings included) and checked only when it runs.
    """

    network: torch.nn.Module
    ckpt_path: str
    device: Any
    profile: str = "default"
    contrast: Any = "t1"
    num_samples: Any = 1
    seed: Any = 0
    output_dir: Any = "output"
    overwrite: Any = False
    style_image: Any = None
    label_file: Any = None
    label_sampler: Callable[[], Any] | None = None
    model_version: str = ""
    preview: Any = True
    shard: Any = None
    num_shards: Any = None
    first_index: Any = 0
    resume: Any = None
    merge: Any = False
    conditions: Mapping | None = None
    label_ldm_extra: Any = None

    def __call__(self) -> list[str]:
        """The run as `run:` calls it: bad input ends in one `error:` line and exit status 2, not a traceback."""
        return run_guarded(self.synthesise)

    def run(self) -> list[str]:
        """MONAI's `evaluator` property: an object whose `run()` is the whole workflow."""
        return self()

    def synthesise(self) -> list[str]:
        """The run, unguarded: the paths of the sidecars written (or of the datalist, with `merge`)."""
        t_start = time.perf_counter()
        if self.output_dir is None or not str(self.output_dir).strip():
            raise InputError("output_dir is not set; accepted: a writable folder (--output_dir out/)")
        if parse_bool(self.merge, "merge"):
            return [str(merge_datalist(self.output_dir, self.num_samples, self.first_index))]
        job = self.check_options()
        self.load_inputs(job)
        self.name_samples(job)
        todo = plan_samples(job, self.output_dir)
        with SampleLocks(job.out).acquire([job.ids[k] for k in todo]):  # a second run over these is refused
            written = write_samples(job, todo)
        print(f"wrote {len(written)} sample(s) to {job.out} in {time.perf_counter() - t_start:.1f} s", flush=True)
        if job.user is None and not pending(job.out, list(range(job.first, job.first + job.num_samples))):
            # every sample exists: whichever process finishes last writes the datalist (same content if two race)
            print(f"datalist: {write_datalist(job.out)}", flush=True)
        return written

    def check_options(self) -> Job:
        """Every option read and checked (one at a time, so the first bad one is the error); no file is read yet."""
        prof = get_profile(self.profile)
        contrasts = check_contrasts(self.contrast)
        num_samples = parse_int(self.num_samples, "num_samples", 1, 10_000_000)
        base_seed = parse_int(self.seed, "seed", 0, 2**31 - 1)
        first = parse_int(self.first_index, "first_index", 0, 10**9)
        overwrite = parse_bool(self.overwrite, "overwrite")
        preview = parse_bool(self.preview, "preview")
        shard = resolve_shard(self.shard, self.num_shards)
        resume = shard[1] > 1 if self.resume is None else parse_bool(self.resume, "resume")
        job = Job(
            out=Path(str(self.output_dir)),
            prof=prof,
            contrasts=contrasts,
            num_samples=num_samples,
            base_seed=base_seed,
            first=first,
            overwrite=overwrite,
            preview=preview,
            shard=shard,
            resume=resume,
            style_path=_optional_path("style_image", self.style_image),
            label_path=_optional_path("label_file", self.label_file),
            conditions={k: v for k, v in dict(self.conditions or {}).items() if v is not None},
            device=self.device,
            model_version=self.model_version,
        )
        check_label_ldm_extra(self.label_ldm_extra)
        if job.label_path and job.conditions:
            given = ", ".join(f"--{k}" for k in job.conditions)
            raise InputError(
                f"{given} has no effect with --label_file (the label map is yours, label_ldm is not run); "
                "accepted: --label_file alone, or lesion options without --label_file"
            )
        return job

    def load_inputs(self, job: Job) -> None:
        """The style image, the label file and the generator's weights, each checked against the profile."""
        prof = job.prof
        job.style = load_style_image(job.style_path, prof) if job.style_path else None
        job.user = LabelFile(job.label_path, prof) if job.label_path else None
        job.network = load_generator(self.network, self.ckpt_path, self.device)
        if tuple(job.network.input_shape) != tuple(prof.shape):
            raise InputError(
                f"the generator's grid {tuple(job.network.input_shape)} is not profile {prof.name!r} "
                f"{tuple(prof.shape)}; accepted: weights and configs of one profile"
            )

    def name_samples(self, job: Job) -> None:
        """This shard's sample ids, the label source (label_ldm checked up front), and the settings resume compares."""
        indices = shard_indices(job.num_samples, job.shard[1], job.shard[0], job.first)
        if job.user is not None:
            job.ids = label_file_ids(job.label_path, indices, job.num_samples)
        else:
            if self.label_sampler is None:
                raise InputError(
                    "no label source: give --label_file PATH, or keep the label_ldm bundle beside this one"
                )
            job.sampler = self.label_sampler()
            job.sampler.settings(num_samples=1, seed=job.base_seed)  # checks conditioning + label_ldm weights
            job.ids = {k: sample_id(k) for k in indices}
        job.expect = {
            "base_seed": job.base_seed,
            "profile": job.prof.name,
            "label_source": "label_file" if job.user else "label_ldm",
            "label_file": str(Path(job.label_path).resolve()) if job.user is not None else None,
            "style_image": str(Path(job.style_path).resolve()) if job.style_path else None,
            # every other setting that changes content: resume refuses a folder made with other values
            "settings": {
                "conditions": {k: job.conditions[k] for k in sorted(job.conditions)},
                "label_ldm_extra": jsonable(self.label_ldm_extra or {}),
                "generator_sha256": file_sha256(self.ckpt_path),
            },
        }


def plan_samples(job: Job, output_dir: Any) -> list[int]:
    """The samples this run writes (resume skips finished ones), with the output folder checked and made."""
    ids, out = job.ids, job.out
    inputs = [p for p in (job.label_path, job.style_path) if p]
    check_inputs_not_outputs(out, inputs, lambda: (f for k in ids for f in sample_files(ids[k], CONTRASTS, True)))
    todo = [
        k
        for k in ids
        if job.overwrite
        or not job.resume
        or not out.is_dir()
        or not complete_sample(out, ids[k], job.contrasts, job.preview, job.expect)
    ]
    planned = [] if job.resume else [f for k in todo for f in sample_files(ids[k], job.contrasts, job.preview)]
    job.out = prepare_output_dir(output_dir, planned, job.overwrite)
    if len(todo) < len(ids):
        print(
            f"resuming: {len(ids) - len(todo)} of {len(ids)} sample(s) of shard {job.shard[0]}/{job.shard[1]} "
            "already complete",
            flush=True,
        )
    return todo


def write_samples(job: Job, todo: list[int]) -> list[str]:
    """The writing half of the run: each claimed sample whole, its sidecar last."""
    out = job.out
    stale = clear_stale_parts(out, [job.ids[k] for k in todo])
    if stale:
        print(f"removed {len(stale)} temporary file(s) of an interrupted run", flush=True)

    with torch.no_grad():  # a reference scan's style code: the encoder's mean (deterministic), once for all samples
        z_style = job.network.encode(job.style.to(job.device))[0].cpu() if job.style is not None else None
    written = []
    for k in todo:
        try:
            written.append(write_sample(job, k, z_style))
        except OSError as exc:  # disk full, quota, permissions: a sample is all or nothing
            remove_sample(out, job.ids[k])
            raise InputError(
                f"cannot write {job.ids[k]} into output_dir {str(out)!r} ({exc.strerror or exc}); the "
                "sample was removed whole, earlier samples are complete; accepted: a folder with free "
                "space (then --resume true)"
            ) from None
    return written


def write_sample(job: Job, k: int, z_style: torch.Tensor | None) -> str:
    """Sample `k`: its images, label map, preview and, last, its sidecar (which marks it complete)."""
    sid, t0 = job.ids[k], time.perf_counter()
    s_seed = sample_seed(job.base_seed, k)
    user = job.user
    smp = {"pv": user.pv_model} if user is not None else next(job.sampler.iter_samples(num_samples=1, seed=s_seed))
    pv = np.asarray(smp["pv"], dtype=np.float32)
    if pv.shape[1:] != tuple(job.prof.shape):
        raise InputError(
            f"label map grid {pv.shape[1:]} does not match profile {job.prof.name!r} {tuple(job.prof.shape)}; "
            "accepted: label_ldm and brainspade3d run with the same --profile"
        )
    z, style_seed = (z_style, None) if z_style is not None else sampled_style(job.network, s_seed)
    images = generate_images(job.network, pv, job.contrasts, z, job.device)
    if user is not None:  # back onto the user's grid; the lesion volumes are those of the user's own map
        images = {c: user.to_user_grid(img) for c, img in images.items()}
        labels, affine = user.labels, user.affine
        smp.update(achieved=lesion_volumes_ml(user.pv_user, user.voxel_mm3), requested=None)
    else:
        labels = np.asarray(smp["labels"], dtype=np.int16)
        affine = np.asarray(smp["affine"], dtype=np.float64)
    files = save_sample_files(job, sid, images, labels, affine)
    side = sidecar(job, k, smp, files, labels, affine, seeds=(s_seed, style_seed), t0=t0)
    path = str(save_json(job.out / f"{sid}.json", side))  # last: marks the sample complete
    print(f"{sid}: {', '.join(job.contrasts)} -> {job.out} ({side['time_s']:.1f} s)", flush=True)
    return path


def save_sample_files(job: Job, sid: str, images: dict, labels: np.ndarray, affine: np.ndarray) -> dict[str, str]:
    """A sample's images, label map and preview, in place of any earlier files of it; returns their names."""
    out = job.out
    files = {c: f"{sid}_{c}.nii.gz" for c in job.contrasts}
    files["label"] = f"{sid}_label.nii.gz"
    remove_sample(out, sid)  # overwrite replaces a sample whole: no image of an earlier run stays beside it
    for c in job.contrasts:
        save_nifti(out / files[c], images[c], affine)
    save_nifti(out / files["label"], labels, affine, dtype=np.int16)
    if job.preview:
        from brainspade.preview import save_preview

        save_preview(out / f"{sid}.png", images, labels, title=f"{sid} (synthetic)")
        files["preview"] = f"{sid}.png"
    return files


def sidecar(
    job: Job,
    k: int,
    smp: dict,
    files: dict,
    labels: np.ndarray,
    affine: np.ndarray,
    seeds: tuple[int, int | None],
    t0: float,
) -> dict:
    """What a sample's JSON records: where it comes from, with which settings and seeds (sample, style; the
    style seed is None for a reference scan's style), what it holds, and how long it took since `t0`."""
    from_ldm = job.user is None
    side = {
        "id": job.ids[k],
        "synthetic": True,
        "index": k,
        "seed": seeds[0],
        "base_seed": job.base_seed,
        "contrast": job.contrasts,
        "label_source": job.expect["label_source"],
        "label_file": job.expect["label_file"],
        "requested": smp.get("requested"),
        "achieved": {key: round(float(v), 4) for key, v in (smp.get("achieved") or {}).items()},
        "style_image": job.expect["style_image"],
        "style_seed": seeds[1],
        "models": {
            "brainspade3d": job.model_version,
            **({"label_ldm": smp.get("model_version", "")} if from_ldm else {}),
        },
        "profile": job.prof.name,
        "affine": np.asarray(affine).tolist(),
        "shape": list(labels.shape),
        "files": files,
        "shard": list(job.shard),
        "settings": job.expect["settings"],
        "time_s": round(time.perf_counter() - t0, 3),
    }
    if from_ldm:
        side["label_ldm"] = {key: smp.get(key) for key in LABEL_LDM_KEYS if key in smp}
    return side
