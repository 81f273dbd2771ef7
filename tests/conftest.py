"""Shared test configuration: slow tests and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The official MME/MMMU files (kept outside the project for their licences); VLMPARITY_ORACLES moves them.
ORACLES = Path(os.environ.get("VLMPARITY_ORACLES") or SHARED / "oracles")
# CI sets VLMPARITY_REQUIRE_ORACLES=1: there an absent oracles folder fails every test that needs it.
REQUIRE_ORACLES = os.environ.get("VLMPARITY_REQUIRE_ORACLES") == "1"
ORACLES_SKIP_REASON = (
    f"oracles: no official MME/MMMU files at {ORACLES} (kept outside the project for their licences; "
    "CI lays them beside the checkout)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marker added here must count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test that reads the oracles carries the `oracles` marker (so `-m oracles` selects them all),
    # whether it asks for the fixture directly or through another fixture.
    for item in items:
        if "oracles" in getattr(item, "fixturenames", ()) and "oracles" not in item.keywords:
            item.add_marker(pytest.mark.oracles)
    if config.getoption("--runslow") or os.environ.get("VLMPARITY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set VLMPARITY_SLOW=1 or pass --runslow (CI runs these)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def oracles() -> Path:
    """The official answer keys and model outputs in ../shared/oracles.

    Absent (a user's fresh clone): the test is skipped with a one-line reason; with VLMPARITY_REQUIRE_ORACLES=1
    (CI) it fails instead, so CI can never pass with the oracle tests silently skipped.
    """
    if not ORACLES.is_dir():
        if REQUIRE_ORACLES:
            pytest.fail(f"{ORACLES_SKIP_REASON}; VLMPARITY_REQUIRE_ORACLES=1 makes this a failure")
        pytest.skip(ORACLES_SKIP_REASON)
    return ORACLES


# ---------------------------------------------------------------- synthetic datasets (vlmparity.synth)

SYNTH_SMALL_MME = 56  # 28 pairs: every one of the 14 categories, one quirky suffix
SYNTH_SMALL_MMMU = 60  # questions 1-2 of every subject: open, list answers and every §2.4 image layout


@pytest.fixture(scope="session")
def synth_mme_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a small synthetic MME test split (56 questions, seed 0), written once per session."""
    from vlmparity.synth import write_mme

    return write_mme(tmp_path_factory.mktemp("synth-mme"), n=SYNTH_SMALL_MME, seed=0)


@pytest.fixture(scope="session")
def synth_mmmu_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a small synthetic MMMU validation split (60 questions, seed 0), written once per session."""
    from vlmparity.synth import write_mmmu

    return write_mmmu(tmp_path_factory.mktemp("synth-mmmu"), n=SYNTH_SMALL_MMMU, seed=0)


def _synth_stamp() -> str:
    """SYNTH_VERSION plus a hash of the generator sources and drawing libraries: what the cache is keyed by."""
    import hashlib

    import numpy
    import PIL

    from vlmparity import synth

    digest = hashlib.sha256()
    for source in sorted(Path(synth.__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return f"{synth.SYNTH_VERSION} {digest.hexdigest()[:16]} pillow {PIL.__version__} numpy {numpy.__version__}\n"


@pytest.fixture(scope="session")
def synth_full() -> dict[str, Path]:
    """Full-size synthetic sets, seed 0: {"mme": folder (2374 questions), "mmmu": folder (900)}.

    Cached under .cache/synth-full-seed0/ (gitignored) and rebuilt only when the generator changes.
    """
    import shutil
    import tempfile

    from vlmparity.synth import write_mme, write_mmmu

    cache = REPO / ".cache" / "synth-full-seed0"
    stamp = _synth_stamp()
    paths = {"mme": cache / "mme", "mmmu": cache / "mmmu"}
    stamp_file = cache / "STAMP"
    if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the cache and swap it in, so a concurrent or interrupted run never sees half a set.
        build = Path(tempfile.mkdtemp(prefix="synth-full-", dir=cache.parent))
        build.chmod(0o755)  # mkdtemp makes it private; other sessions of the same checkout read it
        write_mme(build / "mme", seed=0)
        write_mmmu(build / "mmmu", seed=0)
        (build / "STAMP").write_text(stamp)
        old = cache.with_name(f"{cache.name}.old-{build.name}")
        if cache.exists():
            cache.rename(old)
        try:
            build.rename(cache)
        except OSError:  # another session swapped its (identical) build in first
            shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return paths
