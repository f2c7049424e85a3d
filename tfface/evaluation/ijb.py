"""IJB-B / IJB-C evaluation of an exported model: align, embed (cached), pool templates, score.

    release = read_release("IJB_release/IJBC", "IJBC")
    faces = embed_release(embedder, release, "ijb_cache/IJBC-<model>")   # resumable
    results = evaluate_release(release, faces)                            # every N/D/F variant
    print(*verification_table(results), sep="\\n")

Faces are aligned from the release's five points exactly as the model's training faces were
(the alignment recorded in the export), then embedded with and without a horizontal flip.
Faces without landmarks or whose photo cannot be read are left out and counted; template pairs
whose templates lost every face are dropped and counted.
"""
from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from tfface.core import images
from tfface.core.errors import UserError
from tfface.evaluation.ijb_cache import ChunkCache
from tfface.evaluation.ijb_metrics import FARS, FPIRS, RANKS, Identification, TarAtFar, identification, \
    pair_scores, tar_at_far
from tfface.evaluation.ijb_release import Gallery, IJBRelease
from tfface.evaluation.ijb_templates import Variant, image_features, template_features, variants
from tfface.evaluation.thresholds import Threshold
from tfface_align.aligner import output_size
from tfface_align.transform import align


@dataclasses.dataclass
class ReleaseEmbeddings:
    """Per photo of the release's 5-points file: ``embeddings`` (N, D), ``mirrored`` (N, D) of the
    flipped faces or None; rows of photos that could not be read are NaN (``unreadable`` names them)."""

    embeddings: np.ndarray
    mirrored: np.ndarray | None
    unreadable: list[str]


def alignment_of(embedder) -> tuple[str, tuple[int, int]]:
    """(template kind, aligned size) of the model's training faces; IJB gives five points and no
    detection box, so a model trained on facenet margin crops is refused."""
    kind, side, _ = embedder.alignment_settings()
    if kind == "facenet_crop":
        raise UserError(f"model: '{embedder.path}' was trained on facenet_crop faces (detection box + margin); "
                        "IJB provides five landmarks only, so its faces cannot be cut the same way")
    return kind, output_size(kind, side)


def aligned_face(path: str, landmarks: np.ndarray, kind: str, size: tuple[int, int]) -> np.ndarray | None:
    """The face of ``path`` warped from its five ``landmarks`` onto the template, None if unreadable."""
    try:
        return align(images.load(path), landmarks, kind, size)
    except UserError:
        return None


def embed_release(embedder, release: IJBRelease, cache_dir: str, batch_size: int = 128, flip: bool = True,
                  chunk_size: int = 2048, workers: int = 4, progress: bool = True) -> ReleaseEmbeddings:
    """Embeddings of every photo of ``release``, filling only the chunks ``cache_dir`` lacks."""
    kind, size = alignment_of(embedder)
    names = release.images.tolist()
    key = {"dataset": release.dataset, "model": embedder.fingerprint or embedder.path, "alignment": [kind, *size],
           "flip": flip, "images": hashlib.sha256("\n".join(names).encode()).hexdigest(),
           "landmarks": hashlib.sha256(np.ascontiguousarray(release.landmarks).tobytes()).hexdigest()}
    cache = ChunkCache(cache_dir, key, len(names), chunk_size)
    todo = cache.missing()
    done = (cache.num_chunks - len(todo))
    with tqdm(total=len(names), initial=min(done * chunk_size, len(names)), desc=f"{release.dataset} faces",
              unit="img", disable=not progress, mininterval=1.0) as bar, ThreadPoolExecutor(workers) as pool:
        for index in todo:
            start, stop = cache.bounds(index)
            faces = list(pool.map(lambda i: aligned_face(release.image_path(names[i]), release.landmarks[i], kind,
                                                         size), range(start, stop)))
            ok = np.array([face is not None for face in faces])
            rows = np.full((stop - start, 2 if flip else 1, embedder.embedding_size), np.nan, np.float32)
            if ok.any():
                stack = np.stack([face for face in faces if face is not None])
                rows[ok, 0] = embedder.embed_faces(stack, batch_size)
                if flip:
                    rows[ok, 1] = embedder.embed_faces(np.ascontiguousarray(stack[:, :, ::-1]), batch_size)
            cache.write(index, rows)
            bar.update(stop - start)
    rows = cache.load()
    unreadable = [names[i] for i in np.flatnonzero(np.isnan(rows[:, 0, 0]))]
    return ReleaseEmbeddings(rows[:, 0], rows[:, 1] if flip else None, unreadable)


@dataclasses.dataclass
class VariantResult:
    """One N/D/F variant: 1:1 TAR at FAR with the ROC, and 1:N per gallery (empty without 1:N)."""

    variant: Variant
    verification: TarAtFar
    roc: tuple[np.ndarray, np.ndarray]
    identification: dict[str, Identification]


@dataclasses.dataclass
class IJBResults:
    """Every variant's results and what was left out."""

    dataset: str
    variants: list[VariantResult]
    counts: dict[str, int]


def _log_grid_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The ROC reduced to the strict points at ``points`` log-spaced FARs in [1e-8, 1]."""
    index = np.unique(np.searchsorted(fpr, np.logspace(-8, 0, points), side="right") - 1)
    return fpr[index], tpr[index]


def _gallery_features(gallery: Gallery, template_ids: np.ndarray, features: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """(features, subjects) of a 1:N list's unique templates that have features; how many lack them."""
    unique, first = np.unique(gallery.templates, return_index=True)
    rows = np.searchsorted(template_ids, unique).clip(0, max(len(template_ids) - 1, 0))
    found = template_ids[rows] == unique
    return features[rows[found]], gallery.subjects[first][found], int((~found).sum())


def evaluate_release(release: IJBRelease, faces: ReleaseEmbeddings, chosen: list[Variant] | None = None,
                     fars=FARS, ranks=RANKS, fpirs=FPIRS) -> IJBResults:
    """1:1 and (with 1:N files) 1:N results of each variant (default: every variant the
    embeddings allow)."""
    chosen = chosen or variants(flip=faces.mirrored is not None)
    rows = release.face_rows()
    no_landmarks = rows < 0
    rows = np.where(no_landmarks, 0, rows)
    unreadable = ~no_landmarks & np.isnan(faces.embeddings[rows, 0])
    keep = ~no_landmarks & ~unreadable
    if not keep.any():
        raise UserError(f"ijb: no face of {release.dataset} could be embedded (no landmarks or unreadable photos)")
    rows, templates, medias = rows[keep], release.templates[keep], release.medias[keep]
    counts = {"faces": int(keep.size), "faces_without_landmarks": int(no_landmarks.sum()),
              "faces_unreadable": int(unreadable.sum()), "pairs": int(len(release.pairs))}
    results, pair_rows = [], None
    for variant in chosen:
        features = image_features(faces.embeddings[rows], None if faces.mirrored is None else faces.mirrored[rows],
                                  release.scores[rows], variant)
        template_ids, template_feats = template_features(features, templates, medias)
        del features
        if pair_rows is None:
            pair_rows = np.searchsorted(template_ids, release.pairs[:, :2]).clip(0, len(template_ids) - 1)
            scored = (template_ids[pair_rows] == release.pairs[:, :2]).all(1)
            pair_rows, labels = pair_rows[scored], release.pairs[scored, 2] == 1
            counts["pairs_dropped"] = int((~scored).sum())
            if not labels.any() or labels.all():
                raise UserError(f"ijb: the scored pairs of {release.dataset} need both genuine and impostor pairs")
        scores = pair_scores(template_feats, pair_rows[:, 0], pair_rows[:, 1])
        tar, full = tar_at_far(scores, labels, fars)
        del scores
        searched = {}
        if release.probes is not None:
            probe_feats, probe_subjects, lost = _gallery_features(release.probes, template_ids, template_feats)
            counts["probe_templates_dropped"] = lost
            for name, gallery in release.galleries.items():
                gallery_feats, gallery_subjects, lost = _gallery_features(gallery, template_ids, template_feats)
                counts[f"gallery_{name}_templates_dropped"] = lost
                searched[name] = identification(probe_feats, probe_subjects, gallery_feats, gallery_subjects,
                                                ranks, fpirs)
        results.append(VariantResult(variant, tar, _log_grid_roc(full.fpr, full.tpr), searched))
    return IJBResults(release.dataset, results, counts)


PLAIN = Variant(norm=False, detector=False, flip=False)


def far_threshold(results: IJBResults, far: float, fingerprint: str | None, variant: Variant = PLAIN) -> Threshold:
    """The strict-rule threshold at ``far`` of ``variant`` (default the plain one, whose
    one-photo templates are plain embeddings) as a ``threshold.json`` entry: squared Euclidean
    distance of unit embeddings (2 - 2 x score), same person when ``distance <= value``."""
    result = next((r for r in results.variants if r.variant == variant), None)
    if result is None:
        raise UserError(f"--far: variant {variant.name} was not evaluated")
    tar = result.verification
    if far not in tar.fars:
        raise UserError(f"--far: {far} is not one of the evaluated FARs {list(tar.fars)}")
    k = tar.fars.index(far)
    if not np.isfinite(tar.strict_threshold[k]) or tar.strict_tar[k] == 0:
        raise UserError(f"--far: no threshold accepts a genuine {results.dataset} pair at FAR <= {far:g} "
                        "(too few impostor pairs, or impostors score highest); choose a larger --far")
    calibrated_on = f"{results.dataset} 1:1 template pairs, variant {variant.name}, FAR <= {far:g}"
    num_pairs = results.counts["pairs"] - results.counts["pairs_dropped"]
    return Threshold(0, float(2.0 - 2.0 * tar.strict_threshold[k]), float(tar.strict_far[k]),
                     float(tar.strict_tar[k]), calibrated_on, num_pairs, fingerprint or "")


def _percent(values) -> list[str]:
    return ["-" if not np.isfinite(v) else f"{100 * v:.2f}" for v in values]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [line, fmt(header), line, *map(fmt, rows), line]


def verification_table(results: IJBResults, strict: bool = False) -> list[str]:
    """InsightFace's 1:1 table (TAR % per FAR, one row per variant), by the nearest-FAR rule or
    with ``strict`` at FAR <= target."""
    fars = results.variants[0].verification.fars
    rule = "FAR <= target" if strict else "nearest FAR (reference rule)"
    rows = [[f"{results.dataset} {r.variant.name}",
             *_percent(r.verification.strict_tar if strict else r.verification.nearest_tar)] for r in results.variants]
    return [f"1:1 verification, TAR (%) at FAR, {rule}:", *_table(["Methods", *[f"{f:.0e}" for f in fars]], rows)]


def identification_table(results: IJBResults) -> list[str]:
    """1:N table: CMC rank-k and TPIR at FPIR (%) per variant and gallery, and their mean."""
    searched = [r for r in results.variants if r.identification]
    if not searched:
        return []
    first = next(iter(searched[0].identification.values()))
    header = ["Methods", "gallery", *[f"rank-{k}" for k in first.ranks], *[f"TPIR@FPIR={f:g}" for f in first.fpirs]]
    rows = []
    for r in searched:
        per = {name: np.r_[i.cmc, i.tpir] for name, i in r.identification.items()}
        per["mean"] = np.mean(list(per.values()), axis=0)
        rows += [[f"{results.dataset} {r.variant.name}", name, *_percent(values)] for name, values in per.items()]
    return ["1:N identification (%):", *_table(header, rows)]


def results_dict(results: IJBResults) -> dict:
    """Every number as plain JSON types (the ROC reduced to log-spaced FARs)."""
    def clean(values):
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, np.float64)]

    out = {"dataset": results.dataset, "counts": results.counts, "variants": {}}
    for r in results.variants:
        tar = r.verification
        entry = {"norm": r.variant.norm, "detector": r.variant.detector, "flip": r.variant.flip,
                 "verification": {"fars": list(tar.fars), "nearest_tar": clean(tar.nearest_tar),
                                  "nearest_far": clean(tar.nearest_far), "strict_tar": clean(tar.strict_tar),
                                  "strict_far": clean(tar.strict_far), "strict_threshold": clean(tar.strict_threshold),
                                  "roc": {"fpr": clean(r.roc[0]), "tpr": clean(r.roc[1])}},
                 "identification": {name: {"ranks": list(i.ranks), "cmc": clean(i.cmc), "fpirs": list(i.fpirs),
                                           "tpir": clean(i.tpir), "tpir_thresholds": clean(i.tpir_thresholds),
                                           "mated_probes": i.mated, "non_mated_probes": i.non_mated}
                                    for name, i in r.identification.items()}}
        out["variants"][r.variant.name] = entry
    return out
