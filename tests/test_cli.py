"""The command-line tools as users run them: real processes, real files."""
import os
import re
import subprocess
import sys

import pytest

from tfface.data.synthetic import make_synthetic_dataset

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _run(module, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


def _assert_user_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_synthetic_dataset(str(root / "synthetic"), 12, 4, 20, 2, num_shards=2, seed=3) | {"root": root}


def _train_args(tiny, *extra):
    return [
        f"--data_dir={tiny['train_dir']}", f"--models_base_dir={tiny['root'] / 'runs'}",
        "--image_size=32", "--embedding_size=16", "--batch_size=8", "--epoch_size=3",
        "--max_nrof_epochs=1", "--log_every_n_steps=1", "--head_kwargs=scale=16,margin=0.2",
        "--random_flip", "--random_rotate", *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny):
    """One real training run: (process, run directory)."""
    proc = _run(
        "tfface.train_softmax", *_train_args(tiny, "--subdir=run1", f"--lfw_dir={tiny['verify_dir']}")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, tiny["root"] / "runs" / "run1"


def test_train_export_validate_and_resume(tiny, trained):
    proc, run_dir = trained
    assert "Epoch: [1][3/3]" in proc.stderr and "Accuracy: " in proc.stdout
    assert os.path.isfile(run_dir / "export" / "mobilefacenet" / "1" / "saved_model.pb")
    assert any(f.startswith("ckpt-1") for f in os.listdir(run_dir / "checkpoints"))
    assert os.listdir(run_dir / "logs")
    flags = (run_dir / "flags.txt").read_text()
    assert "--subdir=run1" in flags and "--image_size=32" in flags and "--norandom_crop" in flags

    proc = _run("tfface.validate_on_lfw", tiny["verify_dir"], str(run_dir), "--lfw_nrof_folds=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("Accuracy: ") and "+-" in line for line in lines)
    assert any(line.startswith("Validation rate: ") and "@ FAR=" in line for line in lines)
    assert any(line.startswith("Area Under Curve (AUC): ") for line in lines)
    assert any(line.startswith("Equal Error Rate (EER): ") for line in lines)

    # Resume from the stored flags: only the second epoch runs, a second version is exported.
    proc = _run("tfface.train_softmax", f"--flagfile={run_dir / 'flags.txt'}", "--max_nrof_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "Epoch: [2][3/3]" in proc.stderr and "Epoch: [1]" not in proc.stderr
    assert os.path.isdir(run_dir / "export" / "mobilefacenet" / "2")


def test_train_from_identity_folders_mirrored_mixed_precision_center_loss(tiny):
    proc = _run(
        "tfface.train_softmax",
        *_train_args(tiny, "--subdir=mirrored", "--strategy=mirrored", "--cpu_devices=2", "--optimizer=MOM",
                          f"--logs_base_dir={tiny['root'] / 'logs'}", "--mixed_precision",
                          "--center_loss_factor=0.01", "--prelogits_norm_loss_factor=0.001"),
        f"--data_dir={tiny['verify_dir']}",  # identity folders: converted to TFRecords first
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "strategy MirroredStrategy: 2 replica(s) in sync" in proc.stderr
    run_dir = tiny["root"] / "runs" / "mirrored"
    assert os.path.isfile(run_dir / "tfrecords" / "dataset_info.json")
    assert os.path.isfile(run_dir / "export" / "mobilefacenet" / "1" / "saved_model.pb")
    assert os.listdir(tiny["root"] / "logs" / "mirrored")  # TensorBoard events under logs_base_dir
    center_losses = [float(v) for v in re.findall(r"\tCl ([0-9.]+)", proc.stderr)]
    assert len(center_losses) == 3 and all(v > 0 for v in center_losses)  # center loss is active


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--data_dir=/nonexistent/faces"], ["data_dir", "/nonexistent/faces", "is not a directory"]),
        (["--data_dir={empty}"], ["data_dir", "is empty"]),
        (["--data_dir={train}", "--optimizer=FOO"], ["optimizer", "FOO"]),
        (["--data_dir={train}", "--batch_size=0"], ["--batch_size", "expected a number > 0"]),
        (["--data_dir={train}", "--random_erase=1.5"], ["--random_erase", "expected a probability in [0, 1]", "1.5"]),
        (["--data_dir={train}", "--no_such_flag=1"], ["no_such_flag"]),
        (["--data_dir={train}", "--head_kwargs=scale"], ["--head_kwargs", "key=value"]),
        (["--data_dir={train}", "--head_kwargs=bogus=1"], ["--head_kwargs", "bogus"]),
        (["--data_dir={train}", "--model_def=mobilefacenet", "--image_size=56"],
         ["--image_size/--image_width 56x56", "multiples of 16"]),
        ([], ["--data_dir is required"]),
    ],
)
def test_train_softmax_bad_input(tiny, tmp_path, args, fragments):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", train=tiny["train_dir"]) for a in args]
    _assert_user_error(_run("tfface.train_softmax", *args, f"--models_base_dir={tmp_path}"), *fragments)


def test_validate_on_lfw_bad_input(tiny, trained, tmp_path):
    _assert_user_error(_run("tfface.validate_on_lfw", tiny["verify_dir"]), "usage")
    _assert_user_error(
        _run("tfface.validate_on_lfw", tiny["verify_dir"], str(tmp_path / "nope")), "model", "does not exist"
    )
    _assert_user_error(_run("tfface.validate_on_lfw", tiny["verify_dir"], str(tmp_path)), "no SavedModel")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nNobody_Here\t1\t2\n")
    _assert_user_error(
        _run("tfface.validate_on_lfw", tiny["verify_dir"], str(trained[1]), f"--lfw_pairs={pairs}"),
        "missing", "Nobody_Here_0001",
    )
