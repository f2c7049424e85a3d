"""Margin heads: Keras layers called as ``head([embeddings, labels]) -> logits``.

Registry names (``get_head(name, num_classes, **kw)``): ``softmax``, ``normface``,
``sphereface``, ``cosface``, ``arcface``, ``combined``, ``multihead``, and the adaptive margins
``adaface``, ``magface``, ``curricularface``, ``subcenter_arcface``. :class:`PartialFC` wraps a
normalised head to shard its centres over the replicas of a tf.distribute strategy.
"""
from tfface.heads.arcface import ArcFace
from tfface.heads.base import BatchView, Head, NormalizedHead
from tfface.heads.curricular import CurricularFace
from tfface.heads.loss import feature_loss, head_loss, head_predictions
from tfface.heads.margins import CombinedMargin, CosFace, NormFace
from tfface.heads.multihead import MultiHead
from tfface.heads.partial_fc import PartialFC
from tfface.heads.quality import AdaFace, MagFace
from tfface.heads.registry import get_head, list_heads, register_head
from tfface.heads.softmax import Softmax
from tfface.heads.sphereface import SphereFace
from tfface.heads.subcenter import SubCenterArcFace, clean_subcentres

__all__ = [
    "AdaFace",
    "ArcFace",
    "BatchView",
    "CombinedMargin",
    "CosFace",
    "CurricularFace",
    "Head",
    "MagFace",
    "MultiHead",
    "NormFace",
    "NormalizedHead",
    "PartialFC",
    "Softmax",
    "SphereFace",
    "SubCenterArcFace",
    "clean_subcentres",
    "feature_loss",
    "get_head",
    "head_loss",
    "head_predictions",
    "list_heads",
    "register_head",
]
