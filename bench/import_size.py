"""Import time and peak memory of an r100-sized InsightFace file (~261 MB of float32), per format.

Writes arcface_torch's ``iresnet100`` with seeded random weights as a ``.pth`` state dict, an
ONNX graph (the zoo's torch.onnx topology, BN-folded) and an MXNet ``fresnet`` symbol +
``.params``, then imports each in a fresh process (``tfface.importers.import_file``: read, check
every tensor, build the Keras embedder, assign) and measures its wall time and peak resident
memory. The peer, in the same run: PyTorch's own ``torch.load`` + ``load_state_dict`` of the same
``.pth`` into the PyTorch net, in a fresh process. Targets (issue 26): <= 60 s, <= 3 GB on 2 cores.

    python bench/import_size.py [--depth 100] [--out_dir /tmp/import_size]

Prints a markdown table and writes ``bench/results/import_size_<UTC time>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
mode, path, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "torch":
    import torch
    from tests.importers.torch_nets import IResNet
    start = time.perf_counter()
    IResNet(depth).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
else:
    from tfface import importers
    if mode == "pth_no_torch":
        sys.modules["torch"] = None  # as if torch were not installed: the tensor-only zip reader
    start = time.perf_counter()
    importers.import_file(path)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _write_files(depth: int, out_dir: str) -> dict[str, str]:
    import torch

    sys.path.insert(0, ROOT)
    from tests.importers import torch_nets, writers

    os.makedirs(out_dir, exist_ok=True)
    paths = {"pth": os.path.join(out_dir, f"r{depth}.pth"), "onnx": os.path.join(out_dir, f"r{depth}.onnx"),
             "mxnet": os.path.join(out_dir, f"r{depth}-0000.params")}
    if all(os.path.isfile(p) for p in paths.values()):
        return paths  # written by an earlier run
    net = torch_nets.randomize(torch_nets.IResNet(depth), 0)
    torch.save(net.state_dict(), paths["pth"])
    writers.write_onnx(net, paths["onnx"], folded=True)
    writers.write_mxnet(torch_nets.set_eps(net, writers.MX_EPS), os.path.join(out_dir, f"r{depth}"))
    return paths


def _measure(mode: str, path: str, depth: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD.format(root=ROOT), mode, path, str(depth)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{mode} import of {path} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    result["file_mb"] = os.path.getsize(path) / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=100, help="iresnet depth (100: glintr100 / ms1mv3 r100 size)")
    parser.add_argument("--out_dir", default="/tmp/import_size", help="where the weight files are written")
    args = parser.parse_args()
    paths = _write_files(args.depth, args.out_dir)
    rows = {"torch (peer)": _measure("torch", paths["pth"], args.depth)}
    rows["pth"] = _measure("pth", paths["pth"], args.depth)
    rows["pth, no torch"] = _measure("pth_no_torch", paths["pth"], args.depth)
    rows["onnx (folded)"] = _measure("onnx", paths["onnx"], args.depth)
    rows["mxnet"] = _measure("mxnet", paths["mxnet"], args.depth)
    peer = rows["torch (peer)"]["seconds"]
    print(f"| source (iresnet{args.depth}) | file MB | import s | x PyTorch load | process s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['file_mb']:.0f} | {r['seconds']:.1f} | {r['seconds'] / peer:.1f} | "
              f"{r['process_seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(RESULTS_DIR, f"import_size_{stamp}.json"), "w") as f:
        json.dump({"args": vars(args), "cpu_count": os.cpu_count(), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
