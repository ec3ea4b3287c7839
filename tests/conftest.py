"""Shared fixtures: where the team's reference data lives.

``../shared`` beside the checkout holds the oracle outputs and the benchmark images. Tests that
need it skip with a reason when it is absent (set REALSR_SHARED to point elsewhere).
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get('REALSR_SHARED', REPO_ROOT.parent / 'shared'))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f'{path} is absent: the reference data in ../shared (or $REALSR_SHARED) is needed for this test')
    return path


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    return _require(SHARED_DIR)


@pytest.fixture(scope='session')
def oracle_dir() -> Path:
    return _require(SHARED_DIR / 'oracle')


@pytest.fixture(scope='session')
def datasets_dir() -> Path:
    return _require(SHARED_DIR / 'datasets')


@pytest.fixture(scope='session')
def seed_options_dir() -> Path:
    return _require(SHARED_DIR / 'reference' / 'seed_options')
