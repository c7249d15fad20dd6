"""Shared fixtures: small phantom datasets made once per test session (the real generator, tiny grid)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory):
    """A 6-subject tiny-profile phantom dataset (all pathologies); returns the datalist path."""
    from brainspade.phantom import generate_dataset

    out = tmp_path_factory.mktemp("phantoms") / "tiny"
    return generate_dataset(out, num_subjects=6, profile="tiny", seed=3, split=(0.5, 0.25, 0.25), workers=1)
