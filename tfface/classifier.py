"""Train an SVM on a model's embeddings of your photos, or classify photos with it (facenet's classifier).

    python -m tfface.classifier TRAIN DATA_DIR MODEL CLASSIFIER_FILENAME [--use_split_dataset] ...
    python -m tfface.classifier CLASSIFY DATA_DIR MODEL CLASSIFIER_FILENAME [--unknown_threshold 0.5]

DATA_DIR holds one folder per person (aligned faces, or raw photos with ``--align``); MODEL is an
exported tfface SavedModel (version, model or run directory). The classifier is saved with skops
(never pickle) and is tied to the model: CLASSIFY with another model refuses it. Output lines are
facenet's (``   0  name: 0.987`` per image, ``Accuracy: 0.975``).
"""
from __future__ import annotations

import os

from absl import flags

from tfface.tools import cli
from tfface.recognition.classification import embed_dataset, load_classifier, save_classifier, select_dataset, train_classifier
from tfface.core.errors import UserError, check_positive, check_unit_interval

FLAGS = flags.FLAGS
flags.DEFINE_boolean("use_split_dataset", False, "Split DATA_DIR per person: TRAIN on nrof_train_images_per_class "
                     "random images of each, CLASSIFY the rest.")
flags.DEFINE_string("test_data_dir", "", "CLASSIFY these identity folders instead of DATA_DIR (without --use_split_dataset).")
flags.DEFINE_integer("batch_size", 90, "Number of images to embed in a batch.")
flags.DEFINE_integer("image_size", 0, "Ignored unless it contradicts the model (the model records its size).")
flags.DEFINE_integer("seed", 666, "Random seed of the split and of the SVM's probability calibration.")
flags.DEFINE_integer("min_nrof_images_per_class", 20, "Only include classes with at least this number of images.")
flags.DEFINE_integer("nrof_train_images_per_class", 10, "Training images per class with --use_split_dataset.")
flags.DEFINE_float("unknown_threshold", 0.0, "CLASSIFY answers 'Unknown' when the probability of the name the SVM "
                   "chose is below this.")
flags.DEFINE_boolean("align", False, "DATA_DIR holds raw photos: detect and align each face as the model's "
                     "training faces were (the alignment recorded in the export).")


def main(argv) -> None:
    from tfface.recognition.inference import load_embedder

    if len(argv) != 5 or argv[1] not in ("TRAIN", "CLASSIFY"):
        raise UserError("usage: python -m tfface.classifier TRAIN|CLASSIFY DATA_DIR MODEL CLASSIFIER_FILENAME [--flags]")
    mode, data_dir, model_path, classifier_filename = argv[1:]
    check_positive(FLAGS.batch_size, "--batch_size")
    check_positive(FLAGS.nrof_train_images_per_class, "--nrof_train_images_per_class")
    check_unit_interval(FLAGS.unknown_threshold, "--unknown_threshold", "a probability")
    if not os.path.exists(model_path):
        raise UserError(f"model: '{model_path}' does not exist")
    if mode == "CLASSIFY" and FLAGS.test_data_dir and not FLAGS.use_split_dataset:
        data_dir = FLAGS.test_data_dir
    split = ("train" if mode == "TRAIN" else "test") if FLAGS.use_split_dataset else None
    dataset, skipped = select_dataset(data_dir, FLAGS.min_nrof_images_per_class, split,
                                      FLAGS.nrof_train_images_per_class, FLAGS.seed)
    embedder = load_embedder(model_path)
    if FLAGS.image_size and FLAGS.image_size != embedder.image_size[0]:
        raise UserError(f"--image_size={FLAGS.image_size} but the model '{embedder.path}' takes {embedder.image_size}")
    classifier = load_classifier(classifier_filename, embedder.fingerprint) if mode == "CLASSIFY" else None
    print(f"Number of classes: {len(dataset)}")
    print(f"Number of images: {sum(len(cls) for cls in dataset)}")
    if skipped:
        print(f"Skipped {len(skipped)} classes with fewer than {FLAGS.min_nrof_images_per_class} images: "
              f"{', '.join(skipped)}")
    print("Calculating features for images")
    embeddings, labels, failures = embed_dataset(embedder, dataset, FLAGS.align, FLAGS.batch_size)
    for failure in failures:
        print(f"Skipped {failure}")
    if not len(labels):
        raise UserError(f"data_dir: none of the {len(failures)} images of '{data_dir}' could be used")
    names = [cls.name for cls in dataset]
    if classifier is None:
        print("Training classifier")
        classifier = train_classifier(embeddings, labels, names, embedder.fingerprint, FLAGS.seed)
        save_classifier(classifier, classifier_filename)
        print(f'Saved classifier model to file "{os.path.abspath(classifier_filename)}"')
        return
    print(f'Loaded classifier model from file "{os.path.abspath(classifier_filename)}"')
    predicted, probabilities = classifier.predict(embeddings, FLAGS.unknown_threshold)
    for i, (name, probability) in enumerate(zip(predicted, probabilities)):
        print(f"{i:4d}  {name}: {probability:.3f}")
    correct = sum(name == names[label] for name, label in zip(predicted, labels))
    print(f"Accuracy: {correct / len(labels):.3f}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
