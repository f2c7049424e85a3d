"""Fixtures of the alignment tests: one shared detector (tracing its graph takes seconds)."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory):
    """Converted MTCNN weights go to a temporary cache, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TFFACE_CACHE_DIR")
    os.environ["TFFACE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TFFACE_CACHE_DIR", None)
    else:
        os.environ["TFFACE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def detector(weights_cache):
    from tfface_align import MTCNN

    return MTCNN()


@pytest.fixture(scope="session")
def reference_mtcnn():
    mtcnn = pytest.importorskip("mtcnn")
    return mtcnn.MTCNN()
