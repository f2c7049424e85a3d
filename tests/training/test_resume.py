"""A run killed mid-epoch (SIGKILL) or pre-empted (SIGTERM) and restarted with the same command
ends with exactly the weights of an uninterrupted run."""
import os
import signal

import pytest
import tensorflow as tf

from tests.training import helpers
from tfface.data.synthetic import write_train_split

EPOCH = 8


@pytest.mark.slow
def test_killed_and_preempted_run_resumes_to_the_same_weights(tmp_path):
    data = tmp_path / "data"
    write_train_split(str(data), range(8), 6, seed=1, num_shards=2)
    common = [
        f"--epoch_size={EPOCH}", "--max_nrof_epochs=2", "--checkpoint_every_n_steps=3", "--deterministic",
        "--random_flip", "--random_rotate", "--optimizer=MOM", "--center_loss_factor=0.01", "--moving_average_decay=0.9",
    ]
    args = lambda subdir: helpers.tiny_args(data, tmp_path, subdir, *common)  # noqa: E731

    reference = helpers.run("tfface.train_softmax", args("whole"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    checkpoints = tmp_path / "cut" / "checkpoints"
    proc = helpers.start("tfface.train_softmax", args("cut"))
    helpers.wait_for(str(checkpoints / "checkpoint"), proc)  # ckpt-1 (step 3 of 8, mid-epoch) is complete
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed_at = helpers.checkpoint_arrays(str(checkpoints))
    assert 0 < helpers.state_value(killed_at, "epoch_step") < EPOCH  # resumes mid-epoch
    assert not os.path.exists(tmp_path / "cut" / "export")

    # The restarted run is pre-empted: SIGTERM -> checkpoint at the current step, exit 143.
    proc = helpers.start("tfface.train_softmax", args("cut"))
    last = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1])
    helpers.wait_for(str(checkpoints / f"ckpt-{last + 1}.index"), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    preempted_at = helpers.checkpoint_arrays(str(checkpoints))
    assert helpers.state_value(preempted_at, "step") > helpers.state_value(killed_at, "step")
    assert not os.path.exists(tmp_path / "cut" / "export")

    resumed = helpers.run("tfface.train_softmax", args("cut"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = helpers.checkpoint_arrays(str(tmp_path / "whole" / "checkpoints"))
    cut = helpers.checkpoint_arrays(str(checkpoints))
    assert helpers.state_value(cut, "step") == helpers.state_value(whole, "step") == 2 * EPOCH
    difference = helpers.max_weight_difference(whole, cut)
    print(f"resume equality: max |w_whole - w_resumed| = {difference:.3g}")
    assert difference == 0.0
