"""Inference throughput (images/s) of the embedding backbones on CPU, against facenet-pytorch.

Measures ``inception_resnet_v1`` (160x160) and ``mobilefacenet`` (112x112) with and without
XLA (``jit_compile=True``) and, when torch and facenet-pytorch are installed, facenet-pytorch's
``InceptionResnetV1`` on the same inputs in the same process. Prints a markdown table, writes
``bench/results/embed_throughput_<UTC time>.json``.

    python bench/embed_throughput.py                 # short run (< 2 min on 2 cores)
    python bench/embed_throughput.py --iterations 30 --warmup 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.models import get_backbone  # noqa: E402
from tfface.models.facenet_import import facenet_pytorch_model_class  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = {"inception_resnet_v1": 160, "mobilefacenet": 112}


@dataclass
class Result:
    model: str
    framework: str
    input_size: int
    xla: bool | None
    batch_size: int
    iterations: int
    seconds_per_batch: float
    images_per_second: float


def _time(run, iterations: int, warmup: int) -> float:
    """Median seconds of one call of ``run`` (which must block until its result is ready)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_tfface(name: str, size: int, batch_size: int, xla: bool, iterations: int, warmup: int) -> Result:
    """Throughput of ``get_backbone(name)`` in inference mode inside one tf.function."""
    model = get_backbone(name, input_shape=(size, size, 3))
    images = tf.constant(np.random.default_rng(0).normal(size=(batch_size, size, size, 3)).astype(np.float32))
    embed = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    seconds = _time(lambda: embed(images).numpy(), iterations, warmup)
    return Result(name, "tfface (TF %s)" % tf.__version__, size, xla, batch_size, iterations, seconds, batch_size / seconds)


def bench_facenet_pytorch(batch_size: int, iterations: int, warmup: int) -> Result | None:
    """Throughput of facenet-pytorch's InceptionResnetV1 (eval, inference_mode), or None."""
    try:
        import torch

        reference_class = facenet_pytorch_model_class()
    except ImportError as error:
        print(f"facenet-pytorch not measured: {error}")
        return None
    net = reference_class().eval()
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(batch_size, 3, 160, 160)).astype(np.float32))

    def run():
        with torch.inference_mode():
            net(images)

    seconds = _time(run, iterations, warmup)
    framework = f"facenet-pytorch (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    return Result("inception_resnet_v1", framework, 160, None, batch_size, iterations, seconds, batch_size / seconds)


def markdown(results: list[Result]) -> str:
    """The results as a markdown table; ratios are against facenet-pytorch's InceptionResnetV1."""
    reference = next((r.images_per_second for r in results if r.framework.startswith("facenet-pytorch")), None)
    lines = [
        "| model | implementation | input | XLA | img/s | s/batch | vs facenet-pytorch |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.images_per_second / reference:.2f}x" if reference and r.model == "inception_resnet_v1" else "-"
        xla = "-" if r.xla is None else ("yes" if r.xla else "no")
        lines.append(
            f"| {r.model} | {r.framework} | {r.input_size} | {xla} | {r.images_per_second:.1f} | "
            f"{r.seconds_per_batch:.3f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=3, help="timed batches per configuration (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first (tracing, XLA compile)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--xla", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--no_torch", action="store_true", help="skip facenet-pytorch")
    parser.add_argument("--output_dir", default=RESULTS_DIR)
    args = parser.parse_args(argv)

    results = []
    if not args.no_torch and "inception_resnet_v1" in args.models:
        reference = bench_facenet_pytorch(args.batch_size, args.iterations, args.warmup)
        results += [reference] if reference else []
    for name in args.models:
        for xla in args.xla:
            results.append(bench_tfface(name, MODELS[name], args.batch_size, xla == "on", args.iterations, args.warmup))
            print(f"{name} xla={xla}: {results[-1].images_per_second:.1f} img/s", flush=True)

    table = markdown(results)
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, time.strftime("embed_throughput_%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(
            {
                "host": {"machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
                "args": vars(args),
                "results": [asdict(r) for r in results],
                "markdown": table,
            },
            f,
            indent=1,
        )
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
