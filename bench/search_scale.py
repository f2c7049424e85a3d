"""Identification at scale: exact NumPy (the facebank before the search layer) against FAISS
indices, milvus-lite and the facebank itself, on synthetic galleries (tfface.search.synthetic:
clustered 512-d identities, queries are noisy photos of enrolled people).

For each gallery size: recall@1 against exact search (FAISS Flat, checked against NumPy on the
queries NumPy is timed on), queries/s (10k queries, one batch), build time, index bytes (FAISS
serialisation; milvus-lite: its data directory) and peak memory (VmHWM of a fresh process per
method, and its growth over the loaded gallery). Each method runs in its own process, one at a
time. ``facebank`` is the whole library path: FaceBank.add_many, save, load, identify (top-1
with exact re-ranking of the index's candidates).

    python bench/search_scale.py --sizes 10000,100000          # minutes on 2 loaded cores
    python bench/search_scale.py --sizes 1000000 --numpy_queries 500
Prints a markdown table; writes bench/results/search_scale_<UTC time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
DIM = 512


def rss(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 2 ** 20  # GB
    return 0.0


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def run_one(method: str, work: str, numpy_queries: int) -> dict:
    """One method on the gallery in ``work``; returns its row (timings, bytes, memory, top-1 ids)."""
    import faiss

    from tfface.search.faiss_index import FaissIndex

    gallery = np.load(os.path.join(work, "gallery.npy"))
    queries = np.load(os.path.join(work, "queries.npy"))
    ids = np.arange(len(gallery), dtype=np.int64)
    base = rss("VmRSS")
    row: dict = {"method": method}
    if method == "numpy":
        from tfface.recognition.facebank import pair_distances

        subset = queries[:numpy_queries]
        start, top1 = time.perf_counter(), []
        for s in range(0, len(subset), 100):  # today's FaceBank.identify, 100 queries per call
            top1.append(pair_distances(subset[s:s + 100], gallery).argmin(axis=1))
        row.update(build_s=0.0, search_s=time.perf_counter() - start, queries=len(subset),
                   index_bytes=gallery.nbytes, top1=np.concatenate(top1))
    elif method.startswith("faiss"):
        factory, _, nprobe = method[len("faiss "):].partition(" nprobe=")
        start = time.perf_counter()
        index = FaissIndex(DIM, factory, int(nprobe or 0) or 1)
        index.rebuild(ids, gallery)
        row["build_s"] = time.perf_counter() - start
        row["index_bytes"] = faiss.serialize_index(index.index).nbytes
        start = time.perf_counter()
        _, found = index.search(queries, 1)
        row.update(search_s=time.perf_counter() - start, queries=len(queries), top1=found[:, 0])
    elif method == "milvus-lite":
        from tfface.search.milvus_index import MilvusIndex

        start = time.perf_counter()
        index = MilvusIndex(os.path.join(work, "milvus", "bench.db"), DIM, "bench", "bench")
        index.rebuild(ids, gallery)
        row["build_s"] = time.perf_counter() - start
        row["index_bytes"] = dir_bytes(os.path.join(work, "milvus"))
        start = time.perf_counter()
        _, found = index.search(queries, 1)
        row.update(search_s=time.perf_counter() - start, queries=len(queries), top1=found[:, 0])
        index.close()
    elif method == "facebank":
        from tfface.recognition.facebank import FaceBank

        names = [f"p{i}" for i in ids]
        start = time.perf_counter()
        bank = FaceBank("bench-model")
        bank.add_many(names, gallery, np.ones(len(gallery), np.int64))
        bank.save(os.path.join(work, "bank"))
        row["build_s"] = time.perf_counter() - start
        del bank
        start = time.perf_counter()
        bank = FaceBank.load(os.path.join(work, "bank"))
        row["load_s"] = time.perf_counter() - start
        row["index_bytes"] = bank.index_bytes()
        start = time.perf_counter()
        found, _ = bank.identify(queries)
        row.update(search_s=time.perf_counter() - start, queries=len(queries),
                   top1=np.array([int(n[1:]) for n in found]), index=bank.index_kind())
    row["peak_gb"], row["peak_growth_gb"] = rss("VmHWM"), rss("VmHWM") - base
    return row


def methods(size: int, with_milvus: bool) -> list[str]:
    from tfface.search.faiss_index import approximate_factory

    nlist = int(approximate_factory(2 * size, DIM)[3:].split(",")[0])
    out = ["faiss Flat", "numpy"]
    if size <= 100_000:
        out += ["faiss HNSW32,Flat nprobe=64"]
    if size <= 100_000:
        out += [f"faiss IVF{nlist},Flat nprobe={nlist // 8}"]
    out += [f"faiss IVF{nlist},SQ8 nprobe={p}" for p in (nlist // 8, nlist // 4)[:1 if size > 100_000 else 2]]
    out += [f"faiss IVF{nlist},PQ{DIM // 4}x4fs nprobe={p}" for p in (nlist // 4, nlist * 3 // 8)]
    if with_milvus:
        out.append("milvus-lite")
    return out + ["facebank"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--numpy_queries", type=int, default=10_000,
                        help="exact NumPy is timed on the first N queries only (at most --queries)")
    parser.add_argument("--milvus_max", type=int, default=100_000, help="largest gallery milvus-lite is run on")
    parser.add_argument("--methods", default="", help="comma-separated prefixes: run only these methods "
                        "(faiss Flat, the exact reference, always runs)")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = run_one(args.one[0], args.one[1], args.numpy_queries)
        np.save(os.path.join(args.one[1], "top1.npy"), row.pop("top1"))
        print(json.dumps(row))
        return
    from tfface.search import synthetic

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="search-scale-") as work:
            gallery = synthetic.gallery(size, DIM)
            queries, _ = synthetic.queries(gallery, args.queries)
            np.save(os.path.join(work, "gallery.npy"), gallery)
            np.save(os.path.join(work, "queries.npy"), queries)
            del gallery
            exact = None
            wanted = [m for m in args.methods.split(",") if m]
            for method in methods(size, size <= args.milvus_max):
                if wanted and method != "faiss Flat" and not any(method.startswith(w) for w in wanted):
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", method, work,
                                      "--numpy_queries", str(min(args.numpy_queries, args.queries))],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{size} {method}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                top1 = np.load(os.path.join(work, "top1.npy"))
                if method == "faiss Flat":
                    exact = top1
                row.update(size=size, qps=row["queries"] / row["search_s"],
                           recall_at_1=float(np.mean(top1 == exact[:len(top1)])) if exact is not None else None)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print_table(rows)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(RESULTS_DIR, f"search_scale_{stamp}.json"), "w") as f:
        json.dump({"rows": rows, "cpus": os.cpu_count(), "args": vars(args)}, f, indent=1)


def print_table(rows: list[dict]) -> None:
    print("| gallery | method | recall@1 vs exact | queries/s | x NumPy | build s | index MB | "
          "x float32 | peak GB (growth) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        numpy_qps = next((x["qps"] for x in rows if x["size"] == r["size"] and x["method"] == "numpy"), float("nan"))
        recall = "-" if r["recall_at_1"] is None else f"{r['recall_at_1']:.4f}"
        name = r["method"] + (f" ({r['index']}; load {r['load_s']:.1f} s)" if "index" in r else "")
        if r["queries"] < 10_000:
            name += f" ({r['queries']} queries)"
        print(f"| {r['size']:,} | {name} | {recall} | {r['qps']:,.0f} | {r['qps'] / numpy_qps:.1f} | "
              f"{r['build_s']:.1f} | {r['index_bytes'] / 2 ** 20:,.1f} | "
              f"{r['index_bytes'] / (r['size'] * DIM * 4):.2f} | {r['peak_gb']:.2f} ({r['peak_growth_gb']:+.2f}) |")


if __name__ == "__main__":
    main()
