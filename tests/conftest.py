"""Shared fixtures: paths to the real data beside the checkout (skipped cleanly where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VAPSR_X4 = SHARED / "weights" / "VapSR_X4.pth"
NOISY_PHOTO = SHARED / "images" / "noisy_real.png"


@pytest.fixture(scope="session", autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def vapsr_x4_weights() -> Path:
    if not VAPSR_X4.exists():
        pytest.skip(f"official VapSR x4 checkpoint not found at {VAPSR_X4} (../shared is absent)")
    return VAPSR_X4
