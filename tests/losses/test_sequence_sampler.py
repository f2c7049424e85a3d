"""The SeqFace sequence-aware sampler (tfface/data/samplers.py)."""
from __future__ import annotations

import numpy as np
import pytest

from tfface.data.samplers import SequenceAwareSampler


def dataset():
    # 20 labelled images, then sequences 0..4 with 2, 6, 3, 1, 5 frames (interleaved order)
    seq = np.r_[-np.ones(20, int), [0, 1, 1, 2, 0, 1, 1, 2, 2, 3, 1, 1, 4, 4, 4, 4, 4]]
    return np.random.default_rng(0).permutation(seq)


def test_batches_mix_labelled_images_and_grouped_sequence_frames():
    seq = dataset()
    sampler = SequenceAwareSampler(seq, batch_size=10, sequences_per_batch=2, frames_per_sequence=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5  # 20 labelled images, 4 per batch
    seen = []
    for batch in batches:
        assert batch.shape == (10,)
        labelled, frames = batch[:4], batch[4:]
        assert np.all(seq[labelled] == -1)
        seen.extend(labelled.tolist())
        groups = seq[frames].reshape(2, 3)
        assert np.all(groups >= 0)
        assert np.all(groups == groups[:, :1]) and groups[0, 0] != groups[1, 0]  # 3 frames of 2 distinct sequences
        for group, idx in zip(groups, frames.reshape(2, 3)):
            if np.sum(seq == group[0]) >= 3:
                assert len(set(idx.tolist())) == 3  # without replacement when the sequence is long enough
    assert sorted(seen) == sorted(np.flatnonzero(seq < 0).tolist())  # every labelled image once per epoch


def test_remainder_and_validation():
    seq = dataset()
    keep = SequenceAwareSampler(seq, batch_size=9, sequences_per_batch=1, frames_per_sequence=2, drop_remainder=False)
    sizes = [len(b) for b in keep]
    assert sizes == [9, 9, 6 + 2]  # 20 labelled = 7 + 7 + 6
    assert len(SequenceAwareSampler(seq, 9, 1, 2, drop_remainder=True)) == 2
    with pytest.raises(ValueError, match="only 5 sequences"):
        SequenceAwareSampler(seq, batch_size=40, sequences_per_batch=6, frames_per_sequence=1)
    with pytest.raises(ValueError, match="batch_size"):
        SequenceAwareSampler(seq, batch_size=4, sequences_per_batch=2, frames_per_sequence=3)
    with pytest.raises(ValueError, match="labelled"):
        SequenceAwareSampler(np.array([0, 0, 1]), batch_size=3, sequences_per_batch=1, frames_per_sequence=2)


def test_same_seed_same_batches():
    seq = dataset()
    a = [b.tolist() for b in SequenceAwareSampler(seq, 10, 2, 3, seed=7)]
    b = [b.tolist() for b in SequenceAwareSampler(seq, 10, 2, 3, seed=7)]
    assert a == b
