"""Write an InsightFace ``.bin`` verification set from an LFW-layout directory and its pairs file.

    python -m tfface.make_bin <lfw_dir> <output.bin> [--lfw_pairs pairs.txt]

The images are stored as they are (JPEG/PNG/GIF/BMP bytes; other formats as lossless PNG), in
pair order, with the pairs' same/different labels: the file InsightFace's ``load_bin`` and
``tfface.evaluation.read_bin`` / ``validate_on_bins`` read.
"""
from __future__ import annotations

import os

from absl import flags

from tfface.tools import cli
from tfface.core.errors import UserError, check_dir
from tfface.evaluation.bins import pairs_to_bin

FLAGS = flags.FLAGS
flags.DEFINE_string("lfw_pairs", "", "The pairs file (default: <lfw_dir>/pairs.txt).")


def main(argv) -> None:
    if len(argv) != 3:
        raise UserError("usage: python -m tfface.make_bin <lfw_dir> <output.bin> [--lfw_pairs pairs.txt]")
    lfw_dir, output = argv[1], argv[2]
    check_dir(lfw_dir, "lfw_dir")
    if not output.endswith(".bin"):
        raise UserError(f"output: expected a file name ending in .bin, got '{output}'")
    count = pairs_to_bin(lfw_dir, FLAGS.lfw_pairs or os.path.join(lfw_dir, "pairs.txt"), output)
    print(f"Wrote {count} pairs to {output}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
