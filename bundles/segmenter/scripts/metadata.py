"""The parts of configs/metadata.json that derive from the shared label table, so they never drift.

    python bundles/segmenter/scripts/metadata.py          # rewrite those parts in configs/metadata.json
tests/test_segmenter_bundle.py checks that the file equals what this module computes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brainspade.labels import LABELS, NUM_LABELS

METADATA = Path(__file__).resolve().parent.parent / "configs" / "metadata.json"


def channel_def() -> dict[str, str]:
    return {str(lab.code): lab.name for lab in LABELS}


def derived_fields() -> dict:
    """label_classes, pred_classes and the output channel_def from brainspade.labels."""
    classes = {str(lab.code): {"key": lab.key, "name": lab.name, "lesion": lab.lesion} for lab in LABELS}
    return {"label_classes": classes, "pred_classes": classes,
            "network_data_format#outputs#pred#channel_def": channel_def(),
            "network_data_format#outputs#pred#num_channels": NUM_LABELS}


def apply(meta: dict) -> dict:
    for key, value in derived_fields().items():
        node = meta
        *parents, leaf = key.split("#")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return meta


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else METADATA
    meta = apply(json.loads(path.read_text()))
    path.write_text(json.dumps(meta, indent=4) + "\n")
    print(f"updated {path}")
