"""Margin heads: Keras layers called as ``head([embeddings, labels]) -> logits``."""
from tfface.heads.arcface import ArcFace
from tfface.heads.registry import get_head, list_heads, register_head

__all__ = ["ArcFace", "get_head", "list_heads", "register_head"]
