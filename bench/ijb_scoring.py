"""Full-size IJB-C 1:1 scoring from cached template features: tfface vs the reference's loop.

A synthetic set the size of IJB-C 1:1: 23,124 templates (3,531 gallery + 19,593 probe, as the
real protocol pairs them), 512-d L2-normalised float64 features, 15,658,489 template pairs
(19,557 genuine). Both contenders start from the same cached files (features .npy, pairs .npy)
in a fresh process and end with TAR at FAR 1e-6 .. 1e-1 by the nearest-FAR rule:

* ``tfface``: :func:`tfface.evaluation.ijb_metrics.pair_scores` (grouped GEMMs) +
  :func:`~tfface.evaluation.ijb_metrics.tar_at_far` (both rules, one sort);
* ``reference loop``: InsightFace's IJB verification restated (pairs in batches of 100,000:
  gather both features, multiply, sum; then ``sklearn.metrics.roc_curve`` + nearest FAR).

Reports wall and CPU time (the machine may be shared: CPU time is the steadier figure) and the
process's peak RSS (and its RSS after imports, before loading data),
checks the two agree, prints a markdown table, writes ``bench/results/ijb_scoring_<UTC>.json``.

    python bench/ijb_scoring.py                  # full size (a few minutes on 2 cores)
    python bench/ijb_scoring.py --pairs 2000000  # smaller
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
GALLERY, PROBES, DIM, PAIRS, GENUINE = 3531, 19593, 512, 15_658_489, 19_557
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def make_set(directory: str, pairs: int, seed: int = 0) -> None:
    """features.npy (T, 512) float64 and pairs.npy (P, 3) int64: gallery x probe pairs."""
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(GALLERY, DIM))
    subjects = rng.integers(0, GALLERY, PROBES)
    probes = gallery[subjects] * 0.2 + rng.normal(size=(PROBES, DIM))  # genuine cosine ~ 0.2, impostor ~ 0 +- 0.044
    features = np.concatenate([gallery, probes])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    genuine_count = min(GENUINE, pairs // 100, PROBES)
    chosen = rng.choice(PROBES, genuine_count, replace=False)
    genuine = np.stack([subjects[chosen], GALLERY + chosen, np.ones(genuine_count, np.int64)], 1)
    rate = (pairs - genuine_count) / (GALLERY * PROBES) * 1.01
    impostor = []
    for g in range(GALLERY):
        probe = np.flatnonzero((rng.random(PROBES) < rate) & (subjects != g))
        impostor.append(np.stack([np.full(probe.size, g), GALLERY + probe, np.zeros(probe.size, np.int64)], 1))
    impostor = np.concatenate(impostor)
    impostor = impostor[np.sort(rng.choice(len(impostor), pairs - genuine_count, replace=False))]
    all_pairs = np.concatenate([genuine, impostor])
    np.save(os.path.join(directory, "features.npy"), features)
    np.save(os.path.join(directory, "pairs.npy"), all_pairs[rng.permutation(len(all_pairs))])


def score(directory: str, method: str) -> dict:
    """One contender, in this (fresh) process: load, score, TAR at FAR; seconds and peak RSS."""
    if method == "tfface":
        sys.path.insert(0, ROOT)
        from tfface.evaluation.ijb_metrics import pair_scores, tar_at_far
    else:
        from sklearn.metrics import roc_curve
    baseline = rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    features = np.load(os.path.join(directory, "features.npy"))
    pairs = np.load(os.path.join(directory, "pairs.npy"))
    labels = pairs[:, 2] == 1
    if method == "tfface":
        scores = pair_scores(features, pairs[:, 0], pairs[:, 1])
        scored = time.perf_counter()
        tar = tar_at_far(scores, labels, FARS)[0].nearest_tar
    else:
        scores = np.zeros(len(pairs))
        for s in range(0, len(pairs), 100_000):
            a, b = features[pairs[s:s + 100_000, 0]], features[pairs[s:s + 100_000, 1]]
            scores[s:s + 100_000] = np.sum(a * b, -1)
        scored = time.perf_counter()
        fpr, tpr, _ = roc_curve(labels, scores)
        tar = np.array([tpr[min(zip(np.abs(fpr - f), range(len(fpr))))[1]] for f in FARS])
    end = time.perf_counter()
    return {"method": method, "seconds": end - start, "cpu_seconds": time.process_time() - cpu,
            "scoring_seconds": scored - start,
            "peak_rss_mb": rss_mb(), "rss_after_imports_mb": baseline, "tar": tar.tolist(),
            "scores_head": scores[:1000].tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=PAIRS)
    parser.add_argument("--no_reference", action="store_true", help="Measure tfface only.")
    parser.add_argument("--score", nargs=2, metavar=("DIR", "METHOD"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.score:
        print(json.dumps(score(*args.score)))
        return
    with tempfile.TemporaryDirectory(prefix="ijb-bench-") as directory:
        start = time.perf_counter()
        make_set(directory, args.pairs)
        print(f"synthetic set: {GALLERY + PROBES} templates x {DIM}, {args.pairs} pairs "
              f"({time.perf_counter() - start:.0f} s to make)", flush=True)
        runs = {}
        for method in ["tfface"] + ([] if args.no_reference else ["reference loop"]):
            out = subprocess.run([sys.executable, __file__, "--score", directory, method], capture_output=True,
                                 text=True, check=True)
            runs[method] = json.loads(out.stdout.strip().splitlines()[-1])
    ours = runs["tfface"]
    lines = ["| contender | wall s | CPU s | scores ready s | peak RSS MB | RSS after imports MB | TAR@1e-4 "
             "| TAR@1e-6 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | {run['scoring_seconds']:.1f} | "
                     f"{run['peak_rss_mb']:.0f} | "
                     f"{run['rss_after_imports_mb']:.0f} | {run['tar'][2]:.4f} | {run['tar'][0]:.4f} |")
    if "reference loop" in runs:
        ref = runs["reference loop"]
        lines.append(f"\nspeed-up {ref['seconds'] / ours['seconds']:.1f}x; max |TAR difference| "
                     f"{np.abs(np.subtract(ref['tar'], ours['tar'])).max():.2e}; max |score difference| "
                     f"{np.abs(np.subtract(ref['scores_head'], ours['scores_head'])).max():.2e}")
    print("\n".join(lines))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"ijb_scoring_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as f:
        json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "pairs": args.pairs,
                   "runs": {k: {key: v for key, v in r.items() if key != "scores_head"} for k, r in runs.items()}},
                  f, indent=1)
    print(f"written {path}")


if __name__ == "__main__":
    main()
