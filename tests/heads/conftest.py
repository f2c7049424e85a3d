"""Collects the max abs errors against the NumPy references; written to $TFFACE_ERRORS_JSON if set."""
from __future__ import annotations

import json
import os

ERRORS: dict[str, float] = {}


def record(key: str, value: float) -> None:
    ERRORS[key] = max(ERRORS.get(key, 0.0), float(value))


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("TFFACE_ERRORS_JSON")
    if path and ERRORS:
        with open(path, "a") as f:
            json.dump(ERRORS, f, indent=1, sort_keys=True)
            f.write("\n")
