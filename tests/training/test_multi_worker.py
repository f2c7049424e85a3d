"""MultiWorkerMirroredStrategy with two local worker processes on loopback (TF_CONFIG)."""
import json
import os
import socket
import subprocess
import sys

import pytest

from tfface.data.synthetic import write_train_split


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_one_model(tmp_path):
    data = tmp_path / "data"
    write_train_split(str(data), range(8), 4, seed=1, num_shards=2)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        env = {
            **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        }
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tfface.train_softmax", f"--data_dir={data}", f"--models_base_dir={tmp_path}",
             "--subdir=mw", "--strategy=multi_worker", "--image_size=32", "--embedding_size=16",
             "--batch_size=8", "--epoch_size=2", "--max_nrof_epochs=1", "--log_every_n_steps=1", "--head=cosface"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=420))
    finally:
        for proc in procs:
            proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "Epoch: [1][2/2]" in err
    run_dir = tmp_path / "mw"
    assert os.path.isfile(run_dir / "export" / "mobilefacenet" / "1" / "saved_model.pb")  # chief only
    assert any(f.startswith("ckpt-1") for f in os.listdir(run_dir / "checkpoints"))
    assert "Exported model: None" in outputs[1][0]  # the second worker does not export
