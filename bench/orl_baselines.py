"""The ORL recipe's model against the classics, on the same pairs and folds of unseen people.

Reads a finished ``python -m tfface.recipes.orl --output_dir DIR`` (its ``pairs.txt``, aligned and
original photos and exported model) and evaluates, with facenet's 10-fold protocol on exactly those
pairs: the model (with and without flipped images), raw pixels (L2-normalised grey pixels) of the
original photos and of the aligned faces, and eigenfaces (PCA-50, whitened, fitted on the training
identities' photos only). Prints a markdown table, writes ``bench/results/orl_baselines_<UTC>.json``.

    python bench/orl_baselines.py runs/orl
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfface.recognition.inference import load_embedder  # noqa: E402
from tfface.recipes.own_photos import verification  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe_dir", help="output_dir of a finished tfface.recipes.orl run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pairs (the recipe's --seed)")
    args = parser.parse_args()
    out = args.recipe_dir
    embedder = load_embedder(os.path.join(out, "model"))
    rows = {}
    for flip in (False, True):
        result = verification(embedder, os.path.join(out, "aligned", "unseen"), os.path.join(out, "photos", "unseen"),
                              os.path.join(out, "photos", "train"), os.path.join(out, "pairs.txt"), flip, args.seed)
        rows[f"tfface model{' + flipped images' if flip else ''}"] = result.model
    rows["raw pixels, original photos"] = result.raw_pixels
    rows["raw pixels, aligned faces"] = result.raw_pixels_aligned
    rows["eigenfaces PCA-50 whitened, original photos"] = result.eigenfaces
    print(f"Verification of unseen people, {result.num_pairs} pairs, 10 folds ({embedder.path})\n")
    print("| method | accuracy |\n|---|---|")
    for name, accuracy in rows.items():
        print(f"| {name} | {accuracy:.4f} |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"orl_baselines_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as f:
        json.dump({"model": embedder.path, "num_pairs": result.num_pairs, "accuracy": rows}, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
