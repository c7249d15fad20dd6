"""Training/evaluation datalists from every data source the segmenter accepts.

Every builder returns MONAI datalist entries `{"image": abs path, "label": abs path, "id": ..., "source": ...}`
(domain-randomisation entries have no "image": it is drawn from the label on the fly by
`RandLabelToIntensityd`). `build_datalist(sources)` mixes any of them, selected by config:

    - {kind: phantom,  datalist: DIR/datalist.json, split: training, pathologies: [healthy, wmh], contrasts: [t1, t2, flair]}
      (`pv: true`: the subject's partial-volume maps ride along, for soft targets and draws from them)
    - {kind: datalist, datalist: real.json, key: training, image_key: image, label_key: label, mapping: identity}
    - {kind: folder,   path: DIR written by brainspade3d inference, contrasts: [t1, flair]}
    - {kind: dr,       datalist: DIR/datalist.json (phantom) or real.json, split/key: training, pathologies: [...]}
      (`pv: true`: a phantom's partial-volume maps ride along and the image is drawn from them, not the labels)
Optional per source: `repeat` (int, weight in the mix), `max_items` (cap, taken in file order), `source` (tag).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from brainspade.contrasts import CONTRASTS, check_contrasts
from brainspade.errors import InputError
from brainspade.io import load_json
from brainspade.realdata import load_checked_datalist

KINDS = ("phantom", "datalist", "folder", "dr")


def _resolve(path: str | Path, base_dir: str | Path | None) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return Path(os.path.normpath(p))  # readable in messages ('a/b/../../c' -> 'c'); symlinks untouched


def _datalist_path(path: str | Path, base_dir=None) -> Path:
    p = _resolve(path, base_dir)
    if p.is_dir():
        p = p / "datalist.json"
    if not p.is_file():
        raise InputError(
            f"datalist {str(p)!r} does not exist; accepted: a MONAI datalist JSON (or a folder holding "
            "datalist.json, e.g. written by `python -m brainspade.phantom`)"
        )
    return p


def _phantom_entries(path: Path, split: str, pathologies: Sequence[str] | None) -> list[dict]:
    data = load_json(path, "datalist")
    if not isinstance(data, dict) or not isinstance(data.get(split), list):
        found = list(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"datalist {str(path)!r} has no {split!r} list (found: {found})")
    entries = data[split]
    if pathologies is not None:
        wanted = {str(p) for p in pathologies}
        entries = [e for e in entries if e.get("pathology") in wanted]
    if not entries:
        raise InputError(
            f"datalist {str(path)!r} split {split!r} has no subjects with pathology in {list(pathologies or [])}"
        )
    return entries


def phantom_datalist(
    datalist: str | Path,
    split: str = "training",
    pathologies: Sequence[str] | None = None,
    contrasts: str | Sequence[str] = CONTRASTS,
    source: str = "real",
    rotate: bool = False,
    base_dir=None,
    pv: bool = False,
) -> list[dict]:
    """Entries of a phantom datalist: one per (subject, contrast), or with `rotate` one per subject with the
    contrast cycling through `contrasts` (a test set that covers every contrast at the cost of one). `pv`: each
    entry carries the subject's partial-volume maps too (soft targets; draws from the maps)."""
    path = _datalist_path(datalist, base_dir)
    cons = check_contrasts(contrasts)
    out = []
    for i, e in enumerate(_phantom_entries(path, split, pathologies)):
        use = [cons[i % len(cons)]] if rotate else cons
        for c in use:
            if c not in e:
                raise InputError(
                    f"datalist {str(path)!r} subject {e.get('id')} has no {c!r} image; "
                    f"available: {[k for k in CONTRASTS if k in e]}"
                )
            item = {
                "id": f"{e['id']}_{c}",
                "image": str((path.parent / e[c]).resolve()),
                "label": str((path.parent / e["label"]).resolve()),
                "source": source,
                "pathology": str(e.get("pathology", "")),
                "contrast": c,
            }
            if pv:
                item["pv"] = _pv_path(path, e, i)
            out.append(item)
    return out


def _pv_path(path: Path, entry: Mapping, i: int) -> str:
    if not entry.get("pv"):
        raise InputError(
            f"datalist {str(path)!r} entry {entry.get('id', i)} has no 'pv' (partial volumes); accepted with "
            "pv: true: a phantom datalist (python -m brainspade.phantom), or drop pv"
        )
    return str((path.parent / entry["pv"]).resolve())


def real_datalist(
    datalist: str | Path,
    key: str = "training",
    image_key: str = "image",
    label_key: str = "label",
    mapping: str | Mapping | None = None,
    source: str = "real",
    base_dir=None,
) -> list[dict]:
    """A MONAI datalist of real NIfTI images/labels, every entry checked up front (brainspade.realdata)."""
    path = _datalist_path(datalist, base_dir)
    entries = load_checked_datalist(path, key=key, keys=(image_key, label_key), mapping=mapping)
    return [
        {
            "id": str(e.get("id", Path(e[image_key]).name.split(".")[0])),
            "image": e[image_key],
            "label": e[label_key],
            "source": source,
        }
        for e in entries
    ]


_SYNTH_LABEL = re.compile(r"^(?P<id>.+)_label\.nii(\.gz)?$")


def datalist_from_synthetic_folder(
    folder: str | Path, contrasts: str | Sequence[str] | None = None, source: str = "synthetic", base_dir=None
) -> list[dict]:
    """Datalist from a folder written by the brainspade3d inference: `<id>_<contrast>.nii.gz`,
    `<id>_label.nii.gz` and `<id>.json` per sample (sub-folders are searched too). One entry per
    (sample, contrast) present; `contrasts` restricts which."""
    root = _resolve(folder, base_dir)
    if not root.is_dir():
        raise InputError(
            f"synthetic data folder {str(root)!r} does not exist; accepted: a folder written by "
            "bundles/brainspade3d inference (<id>_<contrast>.nii.gz + <id>_label.nii.gz); or train "
            "without it, e.g. --train_sources @real_sources"
        )
    wanted = check_contrasts(contrasts) if contrasts else list(CONTRASTS)
    out = []
    for lab in sorted(root.rglob("*_label.nii*")):
        m = _SYNTH_LABEL.match(lab.name)
        if not m or lab.name.startswith("."):  # skip temporary .part files of an unfinished write
            continue
        sid = m.group("id")
        for c in wanted:
            for ext in (".nii.gz", ".nii"):
                img = lab.parent / f"{sid}_{c}{ext}"
                if img.is_file():
                    out.append(
                        {
                            "id": f"{sid}_{c}",
                            "image": str(img.resolve()),
                            "label": str(lab.resolve()),
                            "source": source,
                            "contrast": c,
                        }
                    )
                    break
    if not out:
        raise InputError(
            f"synthetic data folder {str(root)!r} holds no <id>_label.nii.gz with a matching "
            f"<id>_<contrast>.nii.gz for contrasts {wanted}"
        )
    return out


def _dr_entries(spec: Mapping, base_dir) -> list[dict]:
    path = _datalist_path(spec["datalist"], base_dir)
    data = load_json(path, "datalist")
    if isinstance(data, dict) and data.get("generator") == "brainspade.phantom" or "pathologies" in spec:
        entries = _phantom_entries(path, spec.get("split", "training"), spec.get("pathologies"))
        label_key = "label"
    else:
        label_key = spec.get("label_key", "label")
        entries = load_checked_datalist(
            path, key=spec.get("key", "training"), keys=(label_key,), mapping=spec.get("mapping")
        )
    use_pv = bool(spec.get("pv", False))
    out = []
    for i, e in enumerate(entries):
        item = {"id": f"{e.get('id', i)}_dr", "label": str((path.parent / e[label_key]).resolve()), "source": "dr"}
        if use_pv:
            item["pv"] = _pv_path(path, e, i)
        out.append(item)
    return out


def build_datalist(sources: Sequence[Mapping] | None, base_dir: str | Path | None = None) -> list[dict]:
    """Mix any number of sources (see module doc) into one training datalist."""
    if not sources:
        raise InputError("no training data sources given; accepted: a list of {kind: " + "|".join(KINDS) + ", ...}")
    out: list[dict] = []
    for i, spec in enumerate(sources):
        if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS:
            raise InputError(f"training source {i} ({spec!r:.80}) has no valid 'kind'; accepted: {', '.join(KINDS)}")
        kind = spec["kind"]
        try:
            if kind == "phantom":
                items = phantom_datalist(
                    spec["datalist"],
                    spec.get("split", "training"),
                    spec.get("pathologies"),
                    spec.get("contrasts", CONTRASTS),
                    spec.get("source", "real"),
                    rotate=bool(spec.get("rotate", False)),
                    base_dir=base_dir,
                    pv=bool(spec.get("pv", False)),
                )
            elif kind == "datalist":
                items = real_datalist(
                    spec["datalist"],
                    spec.get("key", "training"),
                    spec.get("image_key", "image"),
                    spec.get("label_key", "label"),
                    spec.get("mapping"),
                    spec.get("source", "real"),
                    base_dir=base_dir,
                )
            elif kind == "folder":
                items = datalist_from_synthetic_folder(
                    spec["path"], spec.get("contrasts"), spec.get("source", "synthetic"), base_dir=base_dir
                )
            else:
                items = _dr_entries(spec, base_dir)
        except KeyError as exc:
            raise InputError(f"training source {i} (kind {kind}) lacks {exc}") from None
        if spec.get("max_items"):
            items = items[: int(spec["max_items"])]
        out += items * max(1, int(spec.get("repeat", 1)))
    # one schema for every entry so batches collate: the same keys, strings only
    keys = ("id", "image", "label", "pv", "source")
    return [{k: str(e[k]) for k in keys if k in e} for e in out]
