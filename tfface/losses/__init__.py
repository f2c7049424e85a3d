"""Losses beyond the heads' cross-entropy: center, triplet, prelogits norm, SeqFace."""
from tfface.losses.center import CenterLoss
from tfface.losses.prelogits import prelogits_histogram, prelogits_histogram_summary, prelogits_norm_loss
from tfface.losses.seqface import DSALoss, lsr_loss, mask_sequence_labels, sequence_agent_ids
from tfface.losses.triplet import (
    pairwise_distances,
    select_triplets,
    triplet_batch_hard_loss,
    triplet_loss,
    triplet_semihard_loss,
)

__all__ = [
    "CenterLoss",
    "DSALoss",
    "lsr_loss",
    "mask_sequence_labels",
    "pairwise_distances",
    "prelogits_histogram",
    "prelogits_histogram_summary",
    "prelogits_norm_loss",
    "select_triplets",
    "sequence_agent_ids",
    "triplet_batch_hard_loss",
    "triplet_loss",
    "triplet_semihard_loss",
]
