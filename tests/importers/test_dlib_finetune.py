"""Fine-tuning from dlib's weights: ``--pretrained_model dlib_resnet_v1`` starts the backbone there."""
from __future__ import annotations

import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.data.synthetic import write_train_split
from tfface.training import TrainConfig, Trainer
from tfface.training.warm_start import load_pretrained_weights

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _config(data_dir, run_dir, **kwargs) -> TrainConfig:
    return TrainConfig(data_dir=data_dir, run_dir=str(run_dir), model_def="dlib_resnet_v1", image_size=(150, 150),
                       embedding_size=128, standardization="dlib", batch_size=4, epoch_size=2, max_nrof_epochs=1,
                       log_every_n_steps=1, head="cosface", head_kwargs={"scale": 30.0, "margin": 0.2},
                       optimizer="ADAM", learning_rate=1e-6, **kwargs)


@pytest.mark.slow
def test_fine_tuning_starts_from_dlibs_weights(dlib_chips, tmp_path):
    chips, reference, _ = dlib_chips
    data_dir = str(tmp_path / "train")
    write_train_split(data_dir, range(3), 4, seed=1, num_shards=1)
    trainer = Trainer(_config(data_dir, tmp_path / "run", pretrained_model="dlib_resnet_v1"))
    result = trainer.train()
    assert result.steps == 2
    tuned = trainer.embedder.predict(chips.astype(np.float32), verbose=0)
    cosine = np.sum(tuned * reference, 1) / np.linalg.norm(tuned, axis=1) / np.linalg.norm(reference, axis=1)
    # two small steps away from dlib's network: still dlib's descriptors, but moved
    assert cosine.min() > 0.999 and np.abs(tuned - reference).max() > 1e-4


def test_pretrained_weights_need_the_same_architecture(dlib_model_path, tmp_path):
    from tfface.models import build_embedder

    with pytest.raises(UserError, match="--pretrained_model: dlib_resnet_v1 is .* this run builds"):
        load_pretrained_weights(build_embedder("dlib_resnet_v1", (150, 150), 512, "dlib"), "dlib_resnet_v1")
    with pytest.raises(UserError, match="standardization 'fixed_image_standardization'"):
        load_pretrained_weights(build_embedder("dlib_resnet_v1", (150, 150), 128), "dlib_resnet_v1")
