"""TF Serving's layout ``<export_base>/<model_name>/<version>/``, written atomically.

TF Serving loads every sub-directory of a model directory whose name is an integer. A version is
written under a hidden temporary name (``.tmp-<version>-<pid>-<random>``, never an integer) and
renamed into place when it is complete, so a server polling the directory, or an export killed
mid-write, never leaves a half-written version to load. Existing versions are never touched.
"""
from __future__ import annotations

import os
import shutil
import uuid
from typing import Callable

from tfface.core.errors import UserError

TMP_PREFIX = ".tmp-"


def versions(model_dir: str) -> list[int]:
    """The integer version directories of ``model_dir``, sorted (empty when it does not exist)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(model_dir: str) -> list[str]:
    """Deletes temporary directories left by exports whose process has died; returns them."""
    removed = []
    for name in os.listdir(model_dir) if os.path.isdir(model_dir) else []:
        parts = name[len(TMP_PREFIX):].split("-")
        if name.startswith(TMP_PREFIX) and len(parts) == 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
            removed.append(name)
    return removed


def write_version(export_base: str, model_name: str, write: Callable[[str], None], version: int | None = None) -> str:
    """Calls ``write(tmp_dir)`` on an empty temporary directory, then renames it to
    ``export_base/model_name/<version>`` and returns that path.

    ``version`` None takes the next free integer. On an exception the temporary directory is
    removed; after a crash (SIGKILL) it is removed by the next export into the same model dir.
    """
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise UserError(f"--model_name: expected a plain directory name, got {model_name!r}")
    if version is not None and version < 1:
        raise UserError(f"--version: expected an integer >= 1, got {version}")
    model_dir = os.path.join(export_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    remove_stale_tmp(model_dir)
    if version is None:
        version = max(versions(model_dir), default=0) + 1
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise UserError(f"--version: '{final}' already exists (versions are never overwritten)")
    tmp = os.path.join(model_dir, f"{TMP_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        write(tmp)
        if os.path.exists(final):
            raise UserError(f"--version: '{final}' appeared while exporting")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
