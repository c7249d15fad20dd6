"""Shared fixtures: small phantom datasets made once per test session (the real generator, tiny grid)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def shipped_weights_untouched():
    """No test may replace a bundle's shipped weights (training publishes to models/model.pt by default)."""
    import hashlib
    from pathlib import Path

    models = sorted((Path(__file__).resolve().parent.parent / "bundles").glob("*/models/*.pt"))

    def digests() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in models if p.is_file()}

    before = digests()
    yield
    assert digests() == before, "a test replaced a bundle's shipped weights"


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory):
    """A 6-subject tiny-profile phantom dataset (all pathologies); returns the datalist path."""
    from brainspade.phantom import generate_dataset

    out = tmp_path_factory.mktemp("phantoms") / "tiny"
    return generate_dataset(out, num_subjects=6, profile="tiny", seed=3, split=(0.5, 0.25, 0.25), workers=1)
