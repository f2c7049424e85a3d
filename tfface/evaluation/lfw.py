"""One call for the LFW protocol on any embedder: pairs file -> images -> embeddings -> metrics."""
from __future__ import annotations

from tfface.evaluation.embeddings import EmbedFn, embed_paths
from tfface.evaluation.pairs import get_paths, read_pairs
from tfface.evaluation.verification import VerificationResult, evaluate


def evaluate_pairs(
    embed: EmbedFn,
    lfw_dir: str,
    lfw_pairs: str,
    image_size: tuple[int, int],
    batch_size: int = 100,
    use_flipped_images: bool = False,
    nrof_folds: int = 10,
    distance_metric: int = 0,
    subtract_mean: bool = False,
    far_target: float = 1e-3,
    progress: bool = False,
) -> VerificationResult:
    """Runs facenet's ``validate_on_lfw`` evaluation with ``embed`` (uint8 batch -> embeddings)."""
    paths, issame = get_paths(lfw_dir, read_pairs(lfw_pairs))
    embeddings = embed_paths(embed, paths, image_size, batch_size, use_flipped_images, progress)
    return evaluate(embeddings, issame, nrof_folds, distance_metric, subtract_mean, far_target)
