"""Train a face embedder with the triplet loss (facenet's ``train_tripletloss``).

    python -m tfface.train_tripletloss --flagfile configs/facenet_tripletloss.flags

Every flag of :mod:`tfface.train_softmax` (data, run directory, resume, export, LFW evaluation,
strategies) plus facenet's triplet flags. ``--triplet_mining=offline`` is facenet's selection
(``select_triplets`` on the embeddings of each P x K batch); ``semihard`` and ``batch_hard``
mine online over the batch. ``--batch_size`` is facenet's: images per step in offline mode.
"""
from __future__ import annotations

from absl import flags

from tfface import train_softmax
from tfface.tools import cli
from tfface.core.errors import check_positive
from tfface.training.triplet import MINING, TripletOptions, TripletTrainer

FLAGS = flags.FLAGS

flags.DEFINE_integer("people_per_batch", 45, "Number of people per batch.")
flags.DEFINE_integer("images_per_person", 40, "Number of images per person.")
flags.DEFINE_float("alpha", 0.2, "Positive to negative triplet distance margin.")
flags.DEFINE_enum("triplet_mining", "offline", list(MINING), "offline: facenet's select_triplets; or online mining.")


def main(argv) -> None:
    for name in ("people_per_batch", "images_per_person", "alpha"):
        check_positive(getattr(FLAGS, name), f"--{name}")
    options = TripletOptions(FLAGS.people_per_batch, FLAGS.images_per_person, FLAGS.alpha, FLAGS.triplet_mining)
    train_softmax.main(argv, make_trainer=lambda config: TripletTrainer(config, options))


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
