"""Convert an InsightFace ``.rec`` dataset (MS1M-ArcFace, Glint360K, CASIA, ...) into TFRecord shards.

    python -m tfface.data.prepare_insightface --rec_dir faces_emore --output_dir data/ms1m \\
        [--num_shards 256] [--workers 8] [--skip_bad]

No MXNet needed. Parallel over shards, resumable per shard (rerun the same command after an
interruption), progress with images/s; ``.bin`` verification sets are checked and copied.
"""
from __future__ import annotations

from absl import flags

from tfface.tools import cli
from tfface.data.insightface import prepare_insightface
from tfface.core.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("rec_dir", None, "InsightFace dataset directory: train.rec, train.idx, property, *.bin.")
flags.DEFINE_string("output_dir", None, "Where to write the TFRecord shards and dataset_info.json.")
flags.DEFINE_integer("num_shards", 16, "Number of TFRecord shards (keep it when resuming).")
flags.DEFINE_integer("workers", None, "Shards converted in parallel (processes); default: CPU count.")
flags.DEFINE_boolean("skip_bad", False, "Skip and count malformed records and unreadable images instead of "
                     "stopping at the first one.")


def main(argv) -> None:
    del argv
    for name in ("rec_dir", "output_dir"):
        if not getattr(FLAGS, name):
            raise UserError(f"--{name}: required")
    info = prepare_insightface(FLAGS.rec_dir, FLAGS.output_dir, FLAGS.num_shards, FLAGS.workers, FLAGS.skip_bad)
    print(f"Wrote {info['num_examples']} examples of {info['num_classes']} identities in {len(info['shards'])} "
          f"shards to {FLAGS.output_dir}")
    if info["bad_records"]:
        print(f"Skipped {len(info['bad_records'])} bad records (listed in dataset_info.json), first: "
              f"{info['bad_records'][0]}")
    for name, pairs in info["verification_sets"].items():
        print(f"Verification set {name}: {pairs} pairs")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
