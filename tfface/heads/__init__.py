"""Margin heads: Keras layers called as ``head([embeddings, labels]) -> logits``."""
from tfface.heads.arcface import ArcFace
from tfface.heads.loss import head_loss, head_predictions
from tfface.heads.registry import get_head, list_heads, register_head

__all__ = ["ArcFace", "head_loss", "head_predictions", "get_head", "list_heads", "register_head"]
