"""Shared fixtures: every test leaves no actor running."""

from __future__ import annotations

from pathlib import Path

import pykka
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _stop_all_actors():
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def shared_data() -> Path:
    """The real market data beside the checkout; tests that need it skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (it lives beside the checkout, not in it)")
    return SHARED_DATA
