"""Train a face recognizer with a classification head (softmax, ArcFace, ...).

    python -m tfface.train_softmax --flagfile configs/quickstart.flags

facenet's flag names. ``data_dir`` is a tfface TFRecord directory or a folder of identity
sub-folders (converted to TFRecords inside the run directory first). The run directory
``models_base_dir/<subdir>`` gets ``flags.txt`` (rerun with ``--flagfile <run_dir>/flags.txt``
to resume), checkpoints, TensorBoard logs and the exported SavedModel; with ``lfw_dir`` the
model is evaluated on the pairs after every epoch, printing facenet's result lines.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from typing import Callable

import tensorflow as tf
from absl import flags, logging

from tfface.tools import cli
from tfface.data import folders, pipeline, rec_source, tfrecord
from tfface.core.errors import UserError, check_dir, check_positive, check_unit_interval
from tfface.evaluation.benchmarks import bins_evaluator, chain
from tfface.evaluation.lfw import evaluate_pairs
from tfface.heads import get_head, list_heads
from tfface.heads.partial_fc import check_partial_fc
from tfface.models import InputShapeError, has_dropout, list_backbones
from tfface.core.preprocessing import STANDARDIZATIONS
from tfface.training import OPTIMIZERS, STRATEGIES
from tfface.training.seqface import SeqFaceOptions, SeqFaceTrainer
from tfface.training.seqface import check_options as check_seqface_options

FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "TFRecord directory, InsightFace .rec directory (train.rec, train.idx), "
                    "or identity folders (data_dir/<name>/<images>).")
flags.DEFINE_string("models_base_dir", "runs", "Run directories are created under this directory.")
flags.DEFINE_string("logs_base_dir", "", "TensorBoard logs directory base (default: inside the run directory).")
flags.DEFINE_string("subdir", "", "Run directory name (default: a timestamp); an existing one is resumed.")
flags.DEFINE_string("model_def", "mobilefacenet", "Backbone name (see tfface.models.list_backbones()).")
flags.DEFINE_string("pretrained_model", "", "Start the backbone from this run directory, checkpoint or export, or "
                    "a pretrained model by name, e.g. dlib_resnet_v1 (backbone weights only; same backbone, image "
                    "and embedding size).")
flags.DEFINE_string("model_name", "", "Name of the exported model (default: model_def).")
flags.DEFINE_integer("image_size", 112, "Image height and width in pixels.")
flags.DEFINE_integer("image_width", 0, "Image width if different from image_size (e.g. 96 for SphereFace).")
flags.DEFINE_integer("embedding_size", 512, "Dimensionality of the embedding.")
flags.DEFINE_enum("head", "arcface", list_heads(), "Classification head.")
flags.DEFINE_list("head_kwargs", [], "Head options as key=value, e.g. scale=64,margin=0.5.")
flags.DEFINE_boolean("partial_fc", False, "Shard the head's class centres over the replicas (Partial FC; normface/cosface/arcface/combined).")
flags.DEFINE_float("sample_rate", 1.0, "Partial FC: share of each shard's centres used per step (positives always).")
flags.DEFINE_integer("batch_size", 90, "Global batch size (split over replicas).")
flags.DEFINE_integer("epoch_size", 1000, "Number of batches per epoch.")
flags.DEFINE_integer("max_nrof_epochs", 10, "Number of epochs to run.")
flags.DEFINE_enum("optimizer", "ADAM", list(OPTIMIZERS), "The optimization algorithm.")
flags.DEFINE_float("learning_rate", 0.01, "Learning rate; -1 reads learning_rate_schedule_file.")
flags.DEFINE_string("learning_rate_schedule_file", "", "facenet schedule file: '<epoch>: <rate>' lines.")
flags.DEFINE_float("weight_decay", 0.0, "L2 weight regularization.")
flags.DEFINE_float("moving_average_decay", 0.0, "Evaluate and export the exponential moving average of the weights "
                   "with this decay (0: the weights themselves; Keras' use_ema, no warm-up).")
flags.DEFINE_float("center_loss_factor", 0.0, "Center loss factor (0 = no center loss).")
flags.DEFINE_float("center_loss_alfa", 0.95, "Center update rate for center loss.")
flags.DEFINE_float("prelogits_norm_loss_factor", 0.0, "Loss based on the norm of the activations in the prelogits layer.")
flags.DEFINE_float("prelogits_norm_p", 1.0, "Norm to use for prelogits norm loss.")
flags.DEFINE_float("keep_probability", 1.0, "Keep probability of dropout before the bottleneck.")
flags.DEFINE_boolean("random_crop", False, "Randomly crop image_size out of larger training images.")
flags.DEFINE_boolean("random_flip", False, "Randomly mirror training images.")
flags.DEFINE_boolean("random_rotate", False, "Randomly rotate training images by up to 10 degrees.")
flags.DEFINE_float("random_erase", 0.0, "Probability of filling a random rectangle of a training image with noise "
                   "(random erasing: 2-40% of the area, aspect 0.3-3.3).")
flags.DEFINE_boolean("use_fixed_image_standardization", True, "(x-127.5)/128 instead of per-image prewhitening.")
flags.DEFINE_enum("standardization", "", [""] + sorted(STANDARDIZATIONS), "Overrides use_fixed_image_standardization.")
flags.DEFINE_integer("seed", 666, "Random seed (data order and augmentation are deterministic).")
flags.DEFINE_integer("min_nrof_images_per_class", 1, "Identity folders with fewer images are ignored.")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (testing 'mirrored' on CPU).")
flags.DEFINE_boolean("mixed_precision", False, "Mixed precision: mixed_bfloat16 under --strategy=tpu and on GPU-less "
                     "hosts whose CPU has bfloat16 (AVX512_BF16/AMX), else mixed_float16 (with loss scaling).")
flags.DEFINE_enum("mixed_precision_dtype", "", ["", "bfloat16", "float16"], "Overrides --mixed_precision's choice of dtype.")
flags.DEFINE_string("tpu", "", "TPU name or grpc://address for --strategy=tpu (default: the local TPU).")
flags.DEFINE_integer("log_every_n_steps", 10, "Print progress every N steps.")
flags.DEFINE_integer("checkpoint_every_n_steps", 0, "Also checkpoint every N steps within epochs (0: at epoch ends only).")
flags.DEFINE_boolean("deterministic", False, "TF op determinism: the same flags give bit-identical weights (slower).")
flags.DEFINE_string("lfw_dir", "", "Aligned LFW-layout images to evaluate on after every epoch.")
flags.DEFINE_string("lfw_pairs", "", "LFW pairs file (default: lfw_dir/pairs.txt).")
flags.DEFINE_integer("lfw_batch_size", 100, "Batch size for the LFW evaluation.")
flags.DEFINE_integer("lfw_nrof_folds", 10, "Folds of the LFW cross-validation.")
flags.DEFINE_integer("lfw_distance_metric", 0, "0: squared Euclidean, 1: angular.")
flags.DEFINE_boolean("lfw_use_flipped_images", False, "Concatenate embeddings of mirrored images.")
flags.DEFINE_boolean("lfw_subtract_mean", False, "Subtract the training folds' mean embedding.")
flags.DEFINE_string("eval_bins", "", "Directory of InsightFace .bin sets to evaluate on after every epoch.")
flags.DEFINE_list("eval_targets", ["lfw"], "Sets of --eval_bins to evaluate (<eval_bins>/<name>.bin).")
# SeqFace (tfface.training.seqface): labelled data_dir mixed per batch with unlabelled sequences.
flags.DEFINE_string("sequence_data_dir", "", "SeqFace: unlabelled face sequences, TFRecords with image/sequence_id or "
                    "a folder of sequence folders (frames); trains with the LSR and DSA losses.")
flags.DEFINE_float("sequence_ratio", 0.5, "SeqFace: share of every batch that is sequence frames (whole sequences).")
flags.DEFINE_integer("frames_per_sequence", 4, "SeqFace: frames of each sampled sequence in a batch.")
flags.DEFINE_float("dsa_loss_weight", 0.04, "SeqFace: weight of the DSA loss.")
flags.DEFINE_float("dsa_lambda", 0.5, "SeqFace DSA: weight of the pull term (1 - lambda: push).")
flags.DEFINE_float("dsa_alpha", 2.0, "SeqFace DSA: factor of the own-agent distance in the push hinge.")
flags.DEFINE_float("dsa_beta", 1.0, "SeqFace DSA: margin of the push hinge.")
flags.DEFINE_float("dsa_agent_rate", 0.05, "SeqFace DSA: step of the agent (centre) updates.")
flags.DEFINE_float("dsa_dropout_ratio", 0.99, "SeqFace DSA: share of the agents left out of each step's push term.")
flags.DEFINE_integer("dsa_center_iter", 0, "SeqFace DSA warm-up: steps before the pull term counts.")
flags.DEFINE_integer("dsa_diff_iter", 0, "SeqFace DSA warm-up: steps before the push term counts.")


def parse_kwargs(items: list[str], flag: str) -> dict:
    """``["scale=64", "easy_margin=true"]`` -> ``{"scale": 64.0, "easy_margin": True}``."""
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--{flag}: expected key=value items, got {item!r}")
        low = value.lower()
        if low in ("true", "false"):
            kwargs[key] = low == "true"
        else:
            try:
                kwargs[key] = int(value) if value.lstrip("-").isdigit() else float(value)
            except ValueError:
                kwargs[key] = value
    return kwargs


def _training_data(data_dir: str, run_dir: str, sequences: bool = False) -> str:
    """A TFRecord directory for ``data_dir`` (identity folders, or with ``sequences`` sequence
    folders, are converted into the run dir)."""
    flag, target = ("sequence_data_dir", "sequence_tfrecords") if sequences else ("data_dir", "tfrecords")
    check_dir(data_dir, flag)
    if any(name.endswith(".tfrecord") for name in os.listdir(data_dir)) or rec_source.is_rec_dir(data_dir):
        return data_dir
    converted = os.path.join(run_dir, target)
    if os.path.isfile(os.path.join(converted, tfrecord.INFO_FILE)):
        return converted
    min_images = 1 if sequences else FLAGS.min_nrof_images_per_class  # any sequence of frames counts
    dataset = folders.filter_min_images(folders.get_dataset(data_dir), min_images)
    if not dataset or not any(len(cls) for cls in dataset):
        raise UserError(f"{flag}: '{data_dir}' has no images (min_nrof_images_per_class={min_images})")
    logging.info("converting %d folders of %s to TFRecords in %s", len(dataset), data_dir, converted)
    folders.dataset_to_tfrecords(dataset, converted, sequences=sequences)
    return converted


def _seqface_options() -> SeqFaceOptions:
    return SeqFaceOptions(**{field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(SeqFaceOptions)})


def _validate_flags() -> None:
    if not FLAGS.data_dir:
        raise UserError("--data_dir is required (a TFRecord directory or identity folders)")
    for name in ("image_size", "embedding_size", "batch_size", "epoch_size", "max_nrof_epochs", "log_every_n_steps"):
        check_positive(getattr(FLAGS, name), f"--{name}")
    if FLAGS.learning_rate <= 0 and not FLAGS.learning_rate_schedule_file:
        raise UserError("--learning_rate: expected > 0, or -1 together with --learning_rate_schedule_file")
    for name in ("weight_decay", "center_loss_factor", "prelogits_norm_loss_factor"):
        check_positive(getattr(FLAGS, name), f"--{name}", allow_zero=True)
    check_unit_interval(FLAGS.center_loss_alfa, "--center_loss_alfa")
    check_unit_interval(FLAGS.random_erase, "--random_erase", "a probability")
    if not 0.0 < FLAGS.keep_probability <= 1.0:
        raise UserError(f"--keep_probability: expected a value in (0, 1], got {FLAGS.keep_probability}")
    if FLAGS.model_def not in list_backbones():
        raise UserError(f"--model_def: expected one of {list_backbones()}, got {FLAGS.model_def!r}")
    if FLAGS.keep_probability < 1.0 and not has_dropout(FLAGS.model_def):
        raise UserError(f"--keep_probability: {FLAGS.model_def} has no dropout, expected 1.0, got {FLAGS.keep_probability}")
    if FLAGS.mixed_precision_dtype and not FLAGS.mixed_precision:
        raise UserError(f"--mixed_precision_dtype={FLAGS.mixed_precision_dtype}: also pass --mixed_precision")
    check_positive(FLAGS.checkpoint_every_n_steps, "--checkpoint_every_n_steps", allow_zero=True)
    if FLAGS.lfw_dir:
        check_dir(FLAGS.lfw_dir, "--lfw_dir")
    if FLAGS.eval_bins:
        check_dir(FLAGS.eval_bins, "--eval_bins")
    if FLAGS.partial_fc:
        check_partial_fc(FLAGS.head, FLAGS.sample_rate, FLAGS.strategy, FLAGS.mixed_precision)
    if FLAGS.sequence_data_dir:
        check_seqface_options(_seqface_options(), FLAGS.partial_fc, FLAGS.center_loss_factor)


def _write_flags(run_dir: str, subdir: str) -> None:
    """Stores this module's flags (with the actual subdir) so the run can be resumed/reproduced."""
    lines = [f"--subdir={subdir}"]
    for module in dict.fromkeys([__name__, "__main__"]):  # __main__: e.g. train_tripletloss' own flags
        for flag in FLAGS.get_flags_for_module(module):
            if flag.name != "subdir":
                lines.append(flag.serialize())
    path = os.path.join(run_dir, "flags.txt")
    with open(f"{path}.tmp-{os.getpid()}", "w") as f:
        f.write("\n".join(line for line in lines if line) + "\n")
    os.replace(f"{path}.tmp-{os.getpid()}", path)


def main(argv, make_trainer: Callable | None = None) -> None:
    """Trains with :class:`Trainer`, or ``make_trainer(config)`` (train_tripletloss)."""
    from tfface.training import TrainConfig, Trainer, configure_cpu_devices

    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; all options are --flags")
    _validate_flags()
    if FLAGS.cpu_devices:
        configure_cpu_devices(FLAGS.cpu_devices)
    subdir = FLAGS.subdir or time.strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(os.path.expanduser(FLAGS.models_base_dir), subdir)
    os.makedirs(run_dir, exist_ok=True)
    _write_flags(run_dir, subdir)
    data_dir = _training_data(FLAGS.data_dir, run_dir)
    image_size = (FLAGS.image_size, FLAGS.image_width or FLAGS.image_size)
    standardization = FLAGS.standardization or (
        "fixed_image_standardization" if FLAGS.use_fixed_image_standardization else "prewhiten"
    )
    evaluate = None
    if FLAGS.lfw_dir:
        pairs = FLAGS.lfw_pairs or os.path.join(FLAGS.lfw_dir, "pairs.txt")

        def evaluate(embedder, epoch):
            result = evaluate_pairs(
                lambda images: tf.math.l2_normalize(embedder(images.astype("float32"), training=False), 1).numpy(),
                FLAGS.lfw_dir, pairs, image_size, FLAGS.lfw_batch_size, FLAGS.lfw_use_flipped_images,
                FLAGS.lfw_nrof_folds, FLAGS.lfw_distance_metric, FLAGS.lfw_subtract_mean,
            )
            print(f"Epoch {epoch + 1} LFW evaluation:", *result.summary_lines(), sep="\n", flush=True)
            return {"accuracy": float(result.accuracy.mean()), "val": result.val, "auc": result.auc}

    if FLAGS.eval_bins:
        evaluate = chain(evaluate, bins_evaluator(FLAGS.eval_bins, FLAGS.eval_targets, image_size, FLAGS.lfw_batch_size))
    head_kwargs = parse_kwargs(FLAGS.head_kwargs, "head_kwargs")
    try:
        get_head(FLAGS.head, 2, **head_kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"--head_kwargs: {err}") from None
    config = TrainConfig(
        data_dir=data_dir,
        run_dir=run_dir,
        model_def=FLAGS.model_def,
        image_size=image_size,
        embedding_size=FLAGS.embedding_size,
        standardization=standardization,
        head=FLAGS.head,
        head_kwargs=head_kwargs,
        partial_fc=FLAGS.partial_fc,
        sample_rate=FLAGS.sample_rate,
        batch_size=FLAGS.batch_size,
        epoch_size=FLAGS.epoch_size,
        max_nrof_epochs=FLAGS.max_nrof_epochs,
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        learning_rate_schedule_file=FLAGS.learning_rate_schedule_file if FLAGS.learning_rate <= 0 else "",
        weight_decay=FLAGS.weight_decay,
        moving_average_decay=FLAGS.moving_average_decay,
        center_loss_factor=FLAGS.center_loss_factor,
        center_loss_alfa=FLAGS.center_loss_alfa,
        prelogits_norm_loss_factor=FLAGS.prelogits_norm_loss_factor,
        prelogits_norm_p=FLAGS.prelogits_norm_p,
        keep_probability=FLAGS.keep_probability,
        augment=pipeline.Augment(FLAGS.random_crop, FLAGS.random_flip, FLAGS.random_rotate,
                                random_erase=FLAGS.random_erase),
        seed=FLAGS.seed,
        strategy=FLAGS.strategy,
        tpu=FLAGS.tpu,
        mixed_precision=FLAGS.mixed_precision,
        mixed_precision_dtype=FLAGS.mixed_precision_dtype,
        log_every_n_steps=FLAGS.log_every_n_steps,
        checkpoint_every_n_steps=FLAGS.checkpoint_every_n_steps,
        deterministic=FLAGS.deterministic,
        model_name=FLAGS.model_name,
        log_dir=os.path.join(os.path.expanduser(FLAGS.logs_base_dir), subdir) if FLAGS.logs_base_dir else "",
        evaluate=evaluate,
        pretrained_model=FLAGS.pretrained_model,
    )
    if FLAGS.sequence_data_dir and make_trainer is not None:
        raise UserError("--sequence_data_dir: SeqFace training runs in train_softmax only")
    if FLAGS.sequence_data_dir:
        options = dataclasses.replace(_seqface_options(), sequence_data_dir=_training_data(FLAGS.sequence_data_dir, run_dir, True))
        make_trainer = lambda config: SeqFaceTrainer(config, options)  # noqa: E731
    try:
        trainer = (make_trainer or Trainer)(config)
    except InputShapeError as err:
        raise UserError(f"--image_size/--image_width {image_size[0]}x{image_size[1]}: {err}") from None
    result = trainer.train()
    print(f"Run directory: {result.run_dir}")
    if result.interrupted:  # exit as if killed by SIGTERM, so schedulers restart (and thereby resume) the job
        print(f"Interrupted by SIGTERM at step {result.steps}; checkpoint saved, rerun the same command to resume")
        sys.exit(128 + signal.SIGTERM)
    print(f"Exported model: {result.export_dir}")
    print(f"Final training loss {result.final_loss:.4f}, accuracy {result.final_accuracy:.4f}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()

