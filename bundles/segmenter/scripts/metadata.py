"""The parts of configs/metadata.json that derive from the shared label table, so they never drift.

    python -m brainspade.metadata                 # rewrite those parts in every bundle's configs/metadata.json
    python bundles/segmenter/scripts/metadata.py  # the same, for this bundle's file only

The rule lives in brainspade.metadata (one rule for the three bundles); tests/test_zoo_metadata.py checks the files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brainspade.metadata import apply as _apply

METADATA = Path(__file__).resolve().parent.parent / "configs" / "metadata.json"


def apply(meta: dict) -> dict:
    """`meta` with this bundle's label-table fields set (brainspade.metadata.apply for 'segmenter')."""
    return _apply(meta, "segmenter")


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else METADATA
    meta = apply(json.loads(path.read_text()))
    path.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")
    print(f"updated {path}")
