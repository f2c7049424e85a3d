"""Shared test fixtures: the real photos in ../shared/testdata (skipped when absent)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(os.path.dirname(ROOT), "shared", "testdata")


@pytest.fixture(scope="session")
def testdata_dir() -> str:
    """``../shared/testdata`` (read-only: copy before writing)."""
    if not os.path.isdir(TESTDATA):
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


def _subdir(testdata_dir: str, name: str) -> str:
    path = os.path.join(testdata_dir, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def faces_dir(testdata_dir) -> str:
    """34 real photos + couple.jpg + pairs.csv."""
    return _subdir(testdata_dir, "faces")


@pytest.fixture(scope="session")
def orl_dir(testdata_dir) -> str:
    """ORL faces: s1..s30, 10 grey 92x112 PGM images each."""
    return _subdir(testdata_dir, "orl")
