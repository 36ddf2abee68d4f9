"""Shared pytest configuration: dataset location and the optional plugin fixtures."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: ../shared/datasets beside the checkout (CI lays shared/ beside the clone); override with SLOWBURN_DATASETS
DATASETS = Path(os.environ.get("SLOWBURN_DATASETS", REPO.parent / "shared" / "datasets"))

pytest_plugins = [
    name for name in ("tests.kafka_broker",) if importlib.util.find_spec(name) is not None
]


@pytest.fixture(scope="session")
def datasets() -> Path:
    """Path of the shared labelled captures; tests that need them fail loudly if absent."""
    if not DATASETS.is_dir():
        raise RuntimeError(f"shared datasets not found at {DATASETS} (set SLOWBURN_DATASETS)")
    return DATASETS
