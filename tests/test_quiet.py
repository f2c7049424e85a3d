"""Quiet tools: a tool prints none of TensorFlow's C++ start-up lines unless the user asks for them."""
import os
import subprocess
import sys

import pytest

from tfface_align.quiet import CPP_LOG_LINE, logs_requested, running_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


@pytest.mark.parametrize("argv, orig_argv, tool", [
    (["-m", "a"], [PY, "-m", "tfface.compare", "a"], True),
    (["-m"], [PY, "-X", "dev", "-W", "ignore", "-m", "tfface_align.align_dataset_mtcnn"], True),
    (["/venv/bin/tfface-facebank", "list"], ["/venv/bin/python", "/venv/bin/tfface-facebank", "list"], True),
    (["-m", "tests"], [PY, "-m", "pytest", "tests"], False),
    (["train.py"], [PY, "train.py", "-m", "tfface.compare"], False),
    (["-c"], [PY, "-c", "import tfface", "-m", "tfface.x"], False),
])
def test_running_tool(argv, orig_argv, tool):
    assert running_tool(argv, orig_argv) is tool


def test_logs_requested():
    assert not logs_requested(["tool", "--model", "m"], {})
    assert logs_requested(["tool", "--verbosity=1"], {}) and logs_requested(["tool", "-v", "1"], {})
    assert logs_requested(["tool"], {"TF_CPP_MIN_LOG_LEVEL": "0"})


def test_cpp_log_line_pattern():
    assert CPP_LOG_LINE.match("E0000 00:00:1796677203.080439    7634 cuda_platform.cc:52] failed call to cuInit: x")
    assert CPP_LOG_LINE.match("I0000 00:00:1796677199.259039    7634 cudart_stub.cc:31] Could not find cuda drivers")
    assert CPP_LOG_LINE.match("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not CPP_LOG_LINE.match("error: --model: 'x' does not exist")


def test_a_tool_starts_quietly_and_verbosity_brings_the_lines_back(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    tool = [PY, "-m", "tfface.make_synthetic", "--num_train_identities=2", "--train_images_per_identity=1",
            "--num_verify_identities=20", "--verify_images_per_identity=2", "--num_shards=1"]
    quiet = subprocess.run(tool + [f"--output_dir={tmp_path / 'a'}"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 0 and os.path.isfile(tmp_path / "a" / "verify" / "pairs.txt"), quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if CPP_LOG_LINE.match(line)], quiet.stderr
    loud = subprocess.run(tool + [f"--output_dir={tmp_path / 'b'}", "--verbosity=0"], capture_output=True, text=True,
                          env={**env, "TF_ENABLE_ONEDNN_OPTS": "1"}, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert "oneDNN custom operations are on" in loud.stderr  # logged by TensorFlow's C++ code while it loads
