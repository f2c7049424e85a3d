"""Training throughput (images/s) of train_softmax's real step against a plain PyTorch loop.

TF side: a :class:`tfface.training.Trainer` (what ``python -m tfface.train_softmax`` runs) on
synthetic 112 px TFRecords written to a temporary directory, fed by its own input pipeline
(read, decode, batch) and timed through its own step function, one call per
``--log_every_n_steps`` steps as in training. PyTorch side: the same backbone (``bench/torch_nets.py``,
equal parameter counts) + ArcFace head on random inputs, SGD with Nesterov momentum (the
trainer's ``--optimizer=MOM``), ``torch.set_num_threads(--torch_threads)``. The repeats of the
two sides alternate and the medians are compared, so machine load hits both alike; the load
average is printed with each row. With ``--mixed_precision`` a third, interleaved side trains
the TF model under ``mixed_bfloat16`` (same seed and data) and its loss is printed next to
float32's. Prints a markdown table, writes ``bench/results/train_throughput_<UTC time>.json``.

    python bench/train_throughput.py                         # both models, ~6 min on 2 cores
    python bench/train_throughput.py --models mobilefacenet --mixed_precision
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# tfface first: it sets TensorFlow's CPU options before TensorFlow loads, as train_softmax gets them.
from tfface.data.synthetic import write_train_split  # noqa: E402
from tfface.training import TrainConfig, Trainer  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BATCH_SIZES = {"mobilefacenet": 64, "ir_se_50": 16}
LEARNING_RATE = 0.01
HEAD = {"scale": 64.0, "margin": 0.5}
POOL = 8  # random PyTorch batches, used in turn


@dataclass
class Side:
    """One contestant: ``run()`` trains ``steps`` steps, returns the mean loss of those steps."""

    name: str
    run: object
    seconds: list = field(default_factory=list)
    losses: list = field(default_factory=list)

    def timed(self) -> None:
        start = time.perf_counter()
        self.losses.append(float(self.run()))
        self.seconds.append(time.perf_counter() - start)


@dataclass
class Row:
    model: str
    side: str
    batch_size: int
    steps: int
    repeats: int
    images_per_second: float
    vs_pytorch: float
    first_loss: float
    last_loss: float
    load_average: tuple


def tf_side(name: str, model: str, data_dir: str, run_dir: str, batch_size: int, steps: int, image_size: int,
            mixed_precision: bool = False) -> Side:
    """The train_softmax step on its input pipeline, ``steps`` steps per call."""
    config = TrainConfig(
        data_dir=data_dir, run_dir=run_dir, model_def=model, image_size=(image_size, image_size), head="arcface",
        head_kwargs=HEAD, batch_size=batch_size, optimizer="MOM", learning_rate=LEARNING_RATE,
        log_every_n_steps=steps, mixed_precision=mixed_precision,
        mixed_precision_dtype="bfloat16" if mixed_precision else "",
    )
    trainer = Trainer(config)
    train_steps, iterator = trainer._make_step(), iter(trainer._dataset(0, 0))  # what Trainer.train() runs

    def run():
        totals, ran, _, _ = train_steps(iterator, tf.constant(steps))
        return totals[0].numpy() / int(ran)

    return Side(name, run)


def torch_side(model: str, batch_size: int, steps: int, num_classes: int, image_size: int, threads: int) -> Side:
    """The same backbone and head in a plain PyTorch loop on random inputs (a pool of POOL batches)."""
    import torch
    from torch_nets import NETS, ArcFace

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, head = NETS[model](), ArcFace(512, num_classes, **HEAD)
    parameters = [*net.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE, momentum=0.9, nesterov=True)
    batches = [(torch.randn(batch_size, 3, image_size, image_size), torch.randint(0, num_classes, (batch_size,)))
               for _ in range(POOL)]
    net.train()
    done = [0]

    def run():
        total = 0.0
        for _ in range(steps):
            images, labels = batches[done[0] % POOL]
            done[0] += 1
            logits, cos = head(net(images), labels)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            (cos.argmax(1) == labels).float().mean().item()  # the training accuracy, as the TF step reports
        return total / steps

    return Side(f"PyTorch {torch.__version__} ({threads} threads)", run)


def measure(model: str, args, data_dir: str, num_classes: int) -> list[Row]:
    """Builds the sides of ``model``, runs their repeats interleaved, returns one row per side."""
    batch = args.batch_size or BATCH_SIZES[model]
    steps = args.steps
    sides = [torch_side(model, batch, steps, num_classes, args.image_size, args.torch_threads)]
    with tempfile.TemporaryDirectory() as run_dir:
        sides.append(tf_side(f"tfface (TF {tf.__version__}) float32", model, data_dir, os.path.join(run_dir, "fp32"),
                             batch, steps, args.image_size))
        if args.mixed_precision:
            sides.append(tf_side(f"tfface (TF {tf.__version__}) mixed_bfloat16", model, data_dir,
                                 os.path.join(run_dir, "bf16"), batch, steps, args.image_size, mixed_precision=True))
        for side in sides:  # warm-up: tracing, first batches, allocator
            for _ in range(args.warmup):
                side.run()
        loads = []
        for _ in range(args.repeats):
            for side in sides:
                side.timed()
            loads.append(os.getloadavg()[0])
        reference = batch * steps / float(np.median(sides[0].seconds))
        rows = []
        for side in sides:
            speed = batch * steps / float(np.median(side.seconds))
            rows.append(Row(model, side.name, batch, steps, args.repeats, speed, speed / reference,
                            side.losses[0], side.losses[-1], (min(loads), max(loads))))
            print(f"{model} {side.name}: {speed:.1f} img/s ({speed / reference:.2f}x PyTorch), "
                  f"loss {side.losses[0]:.3f} -> {side.losses[-1]:.3f}, load {min(loads):.2f}-{max(loads):.2f}", flush=True)
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| model | batch | implementation | img/s | vs PyTorch | loss first -> last repeat | load avg (1 min) |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.batch_size} | {r.side} | {r.images_per_second:.1f} | {r.vs_pytorch:.2f}x | "
            f"{r.first_loss:.3f} -> {r.last_loss:.3f} | {r.load_average[0]:.2f}-{r.load_average[1]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BATCH_SIZES), choices=list(BATCH_SIZES))
    parser.add_argument("--batch_size", type=int, default=0, help="0: 64 for mobilefacenet, 16 for ir_se_50")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--num_classes", type=int, default=1000, help="synthetic identities = ArcFace classes")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat (the trainer's log_every_n_steps)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repeats first")
    parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--mixed_precision", action="store_true", help="also time the TF step under mixed_bfloat16")
    parser.add_argument("--output_dir", default=RESULTS_DIR)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        write_train_split(data_dir, range(args.num_classes), 2, seed=0, num_shards=4)
        for model in args.models:
            rows += measure(model, args, data_dir, args.num_classes)
    table = markdown(rows)
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, time.strftime("train_throughput_%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(f"{path}.tmp", "w") as f:
        json.dump({"host": {"machine": platform.machine(), "cpu_count": os.cpu_count()}, "args": vars(args),
                   "results": [asdict(r) for r in rows], "markdown": table}, f, indent=1)
    os.replace(f"{path}.tmp", path)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
