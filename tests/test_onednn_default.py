"""Importing tfface turns TensorFlow's oneDNN CPU kernels on unless the user chose otherwise."""
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("preset, expected", [(None, True), ("0", False)])
def test_import_turns_onednn_on_unless_set(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if preset is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = preset
    code = ("import tfface\nfrom tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(expected)
