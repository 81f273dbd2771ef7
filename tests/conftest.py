"""Shared test configuration: slow tests and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ORACLES = SHARED / "oracles"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow") or os.environ.get("VLMPARITY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set VLMPARITY_SLOW=1 or pass --runslow (CI runs these)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def oracles() -> Path:
    """The official answer keys and model outputs in ../shared/oracles."""
    if not ORACLES.is_dir():
        pytest.fail(f"oracles not found at {ORACLES}: CI must lay shared/ beside the checkout")
    return ORACLES
