"""Write the embedded synthetic dataset (training TFRecords + LFW-style verification pairs).

    python -m tfface.make_synthetic --output_dir data/synthetic
"""
from __future__ import annotations

from absl import flags

from tfface.tools import cli
from tfface.data.synthetic import make_synthetic_dataset
from tfface.core.errors import UserError, check_positive

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "data/synthetic", "Where to write train/ and verify/.")
flags.DEFINE_integer("num_train_identities", 300, "Identities used for training.")
flags.DEFINE_integer("train_images_per_identity", 16, "Images per training identity.")
flags.DEFINE_integer("num_verify_identities", 200, "Held-out identities for verification pairs (multiple of 10).")
flags.DEFINE_integer("verify_images_per_identity", 4, "Images per verification identity.")
flags.DEFINE_integer("num_shards", 4, "TFRecord shards of the training split.")
flags.DEFINE_integer("seed", 0, "Everything drawn is a function of this seed.")


def main(argv) -> None:
    del argv
    for name in ("num_train_identities", "train_images_per_identity", "num_verify_identities", "num_shards"):
        check_positive(getattr(FLAGS, name), f"--{name}")
    if FLAGS.num_verify_identities % 10 or FLAGS.num_verify_identities < 20:
        raise UserError(f"--num_verify_identities: expected a multiple of 10, at least 20, got {FLAGS.num_verify_identities}")
    if FLAGS.verify_images_per_identity < 2:
        raise UserError(f"--verify_images_per_identity: expected at least 2, got {FLAGS.verify_images_per_identity}")
    paths = make_synthetic_dataset(
        FLAGS.output_dir, FLAGS.num_train_identities, FLAGS.train_images_per_identity,
        FLAGS.num_verify_identities, FLAGS.verify_images_per_identity, FLAGS.num_shards, FLAGS.seed,
    )
    for key, path in paths.items():
        print(f"{key}: {path}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
