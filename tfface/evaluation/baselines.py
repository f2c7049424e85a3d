"""Classical verification baselines on the same pairs as a model: raw pixels and eigenfaces.

A learned embedding should be read against these: on small, controlled sets (ORL) raw pixels
already separate many people. Both map uint8 faces (N, H, W, 3) to L2-normalised vectors that
:func:`tfface.evaluation.evaluate` takes like a model's embeddings.
"""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


def _grey(faces: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H*W) float64 luminance (the ORL photos are grey anyway)."""
    faces = np.asarray(faces, np.float64)
    grey = faces @ np.array([0.299, 0.587, 0.114]) if faces.ndim == 4 else faces
    return grey.reshape(len(grey), -1)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def raw_pixels(faces: np.ndarray) -> np.ndarray:
    """Grey pixels of each face as one L2-normalised vector."""
    return _normalise(_grey(faces))


class Eigenfaces:
    """Turk & Pentland, "Eigenfaces for recognition" (1991): PCA of grey faces, whitened.

    Fit it on training identities only, then :meth:`embed` any face.
    """

    def __init__(self, n_components: int = 50, seed: int = 0):
        self.pca = PCA(n_components=n_components, whiten=True, random_state=seed)

    def fit(self, faces: np.ndarray) -> "Eigenfaces":
        if len(faces) <= self.pca.n_components:
            raise ValueError(f"faces: eigenfaces with {self.pca.n_components} components need more than "
                             f"{self.pca.n_components} training faces, got {len(faces)}")
        self.pca.fit(_grey(faces))
        return self

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Whitened PCA coefficients, L2-normalised."""
        return _normalise(self.pca.transform(_grey(faces)))
