"""The parts of each bundle's configs/metadata.json that derive from the label table and the contrast list.

Written here once, for all three bundles, so metadata never drifts from `brainspade.labels` / `brainspade.contrasts`:

    python -m brainspade.metadata            # rewrite those parts in every bundle's configs/metadata.json
    python -m brainspade.metadata --check    # exit status 1 (and the names) when a file differs

The class fields are strings, as the MONAI metadata schemas require (`label_classes`, `pred_classes`); the
per-channel meaning goes into `channel_def` objects. tests/test_zoo_metadata.py checks the files equal this.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from .contrasts import CONTRASTS
from .labels import CONDITION_KEYS, LABELS, NUM_LABELS

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "bundles"
BUNDLE_NAMES = ("label_ldm", "brainspade3d", "segmenter")


def channel_def() -> dict[str, str]:
    """{code: name} of the label table, the `channel_def` of every label-valued input or output."""
    return {str(lab.code): lab.name for lab in LABELS}


def label_table_text() -> str:
    """The label table as one string ("0 background, 1 cerebrospinal fluid, ..."), for the schemas' string fields."""
    return ", ".join(f"{lab.code} {lab.name}" for lab in LABELS)


def _label_map(fmt: str) -> dict[str, Any]:
    return {"num_channels": NUM_LABELS, "channel_def": channel_def(), "format": fmt}


def derived_fields(bundle: str) -> dict[str, Any]:
    """`#`-separated metadata paths and their values, computed from the tables, for one bundle."""
    table = label_table_text()
    pv = "partial-volume label map (fraction of each label per voxel, channels sum to 1)"
    if bundle == "segmenter":
        return {
            "label_classes": f"integer label map: {table}",
            "pred_classes": f"integer label map (argmax of {NUM_LABELS} softmax channels): {table}",
            "network_data_format#outputs#pred#channel_def": channel_def(),
            "network_data_format#outputs#pred#num_channels": NUM_LABELS,
        }
    if bundle == "label_ldm":
        conditions = {str(i): k for i, k in enumerate(CONDITION_KEYS)}
        return {
            "label_classes": f"{pv}: {table}",
            "pred_classes": f"{pv}, and its integer argmax: {table}",
            "network_data_format#outputs#pred#channel_def": channel_def(),
            "network_data_format#outputs#pred#num_channels": NUM_LABELS,
            "network_data_format#inputs#condition#channel_def": conditions,
            "network_data_format#inputs#condition#num_channels": len(CONDITION_KEYS),
            "generator_data_format#inputs#condition#channel_def": conditions,
            "generator_data_format#inputs#condition#num_channels": len(CONDITION_KEYS),
            **{
                f"autoencoder_data_format#{side}#{key}#{field}": value
                for side, key in (("inputs", "image"), ("outputs", "pred"))
                for field, value in _label_map(pv).items()
            },
        }
    if bundle == "brainspade3d":
        return {
            "label_classes": f"{pv} (or integer codes): {table}",
            "network_data_format#inputs#label#channel_def": channel_def(),
            "network_data_format#inputs#label#num_channels": NUM_LABELS,
            "network_data_format#inputs#contrast#channel_def": {str(i): c for i, c in enumerate(CONTRASTS)},
            "network_data_format#inputs#contrast#value_range": [0, len(CONTRASTS) - 1],
        }
    raise ValueError(f"unknown bundle {bundle!r}; accepted: {', '.join(BUNDLE_NAMES)}")


def apply(meta: dict, bundle: str) -> dict:
    """A copy of `meta` with the derived fields set (label_ldm: `optional_packages_version`, which its LDM schema
    requires, is kept equal to `required_packages_version`, MONAI 1.6's name for the same list)."""
    out = copy.deepcopy(meta)
    for key, value in derived_fields(bundle).items():
        node = out
        *parents, leaf = key.split("#")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if bundle == "label_ldm":
        out["optional_packages_version"] = dict(out.get("required_packages_version", {}))
    return out


def metadata_path(bundle: str, bundles_dir: Path = BUNDLES_DIR) -> Path:
    return Path(bundles_dir) / bundle / "configs" / "metadata.json"


def stale_bundles(bundles_dir: Path = BUNDLES_DIR) -> list[str]:
    """The bundles whose metadata.json differs from what the tables give."""
    out = []
    for b in BUNDLE_NAMES:
        meta = json.loads(metadata_path(b, bundles_dir).read_text(encoding="utf-8"))
        if apply(meta, b) != meta:
            out.append(b)
    return out


def _indent(text: str) -> int:
    """The file's own indentation width (kept, so a regeneration changes only the fields that changed)."""
    second = text.splitlines()[1] if text.count("\n") > 1 else "    "
    return max(1, len(second) - len(second.lstrip(" ")))


def write(bundle: str, bundles_dir: Path = BUNDLES_DIR) -> Path:
    path = metadata_path(bundle, bundles_dir)
    text = path.read_text(encoding="utf-8")
    meta = apply(json.loads(text), bundle)
    path.write_text(json.dumps(meta, indent=_indent(text), ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m brainspade.metadata", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report the bundles whose metadata differs")
    ap.add_argument("--bundles_dir", default=str(BUNDLES_DIR), help="folder holding the bundle folders")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_bundles(Path(args.bundles_dir))
        for b in stale:
            print(
                f"{metadata_path(b, Path(args.bundles_dir))} differs from the label table: run python -m brainspade.metadata"
            )
        return 1 if stale else 0
    for b in BUNDLE_NAMES:
        print(f"updated {write(b, Path(args.bundles_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
