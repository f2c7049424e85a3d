"""Losses beyond the heads' cross-entropy: center, triplet, prelogits norm, SeqFace."""
