"""tfface_align.MTCNN against the `mtcnn` PyPI package and facenet-pytorch's MTCNN, on CPU.

Photo mode: every photo of ``../shared/testdata/faces`` through each detector, one photo per
call, interleaved photo by photo so that machine load hits all detectors alike, ``--repeats``
rounds; a photo's time is its fastest call (as ``timeit`` does: slower calls measure load from
the rest of the machine). Warm-up calls (graph tracing) are excluded. Also ours with the whole
list in one call (bucketed).
Same parameters everywhere: min face 20, thresholds 0.6/0.7/0.7, factor 0.709 (the `mtcnn`
package gets ``threshold_onet=0.7, fit_to_image=False``; its defaults differ).

Agreement: every face the `mtcnn` package finds with score >= 0.9 must be found by ours with
IoU >= 0.8 and all 5 landmarks within 3% of the box width; extra faces of ours (matching none of
its faces at IoU >= 0.5) are counted.

Throughput mode (dataset alignment): a batch of same-size 250x250 face crops (LFW-like) in one
call per detector, and the `mtcnn` package also one call per crop.

Wall and CPU seconds (``time.process_time``, all threads) are both reported: on a shared, loaded
machine wall time penalises the multi-threaded detectors most.

facenet-pytorch is used when ``torch`` and ``facenet_pytorch`` import (torch is imported before
TensorFlow: the other order can crash); otherwise it is skipped with the reason printed.
Prints markdown tables and writes ``bench/results/mtcnn_vs_peers_<UTC time>.json``.

    python bench/mtcnn_vs_peers.py                       # all photos (~4-6 min on 2 cores)
    python bench/mtcnn_vs_peers.py --limit 10 --batch 32
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FACES = os.path.join(HERE, "..", "..", "shared", "testdata", "faces")
RESULTS_DIR = os.path.join(HERE, "results")


def _load_torch_peer():
    """facenet-pytorch's MTCNN, or (None, reason)."""
    try:
        import torch  # noqa: F401  (before TensorFlow)
        from facenet_pytorch import MTCNN as TorchMTCNN
    except Exception as err:  # noqa: BLE001 - any import failure means: skip this peer
        return None, f"facenet-pytorch unavailable ({type(err).__name__}: {err})"
    return TorchMTCNN(min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709, keep_all=True,
                      device="cpu", post_process=False), None


TORCH_PEER, TORCH_SKIP = _load_torch_peer()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfface_align  # noqa: E402

LANDMARK_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run_ours(det, image):
    faces = det.detect(image)
    return faces.boxes.astype(float), faces.landmarks.astype(float)


def run_mtcnn_package(det, image):
    out = det.detect_faces(image, threshold_onet=0.7, fit_to_image=False, box_format="xyxy")
    boxes = np.array([f["box"] + [f["confidence"]] for f in out], float).reshape(-1, 5)
    marks = np.array([[f["keypoints"][k] for k in LANDMARK_KEYS] for f in out], float).reshape(-1, 5, 2)
    return boxes, marks


def run_torch(det, image):
    boxes, probs, marks = det.detect(image, landmarks=True)
    if boxes is None:
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    return np.concatenate([boxes, probs[:, None]], 1), np.asarray(marks, float)


def agreement(reference, ours, min_score=0.9):
    """(matched, confident reference faces, extra faces of ours, worst landmark error / width)."""
    ref_boxes, ref_marks = reference
    boxes, marks = ours
    matched, confident, worst = 0, 0, 0.0
    for box, mark in zip(ref_boxes, ref_marks):
        if box[4] < min_score:
            continue
        confident += 1
        if len(boxes) == 0:
            continue
        j = int(np.argmax([iou(box, b) for b in boxes]))
        error = float(np.abs(marks[j] - mark).max() / (box[2] - box[0]))
        if iou(box, boxes[j]) >= 0.8 and error <= 0.03:
            matched += 1
        worst = max(worst, error if iou(box, boxes[j]) >= 0.5 else 1.0)
    extra = sum(1 for b in boxes if not any(iou(b, r) >= 0.5 for r in ref_boxes))
    return matched, confident, extra, worst


def face_crops(photos, results, count, size=250):
    """LFW-like crops: a size x size window around each face, the face about 100 px wide."""
    crops = []
    for image, (boxes, _) in zip(photos, results):
        for box in boxes[:2]:
            scale = 100.0 / max(box[2] - box[0], 1.0)
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
            x0, y0 = int(cx - size / 2), int(cy - size / 2)
            canvas = np.zeros((size, size, 3), np.uint8)
            xs, ys = max(x0, 0), max(y0, 0)
            xe, ye = min(x0 + size, small.shape[1]), min(y0 + size, small.shape[0])
            canvas[ys - y0:ye - y0, xs - x0:xe - x0] = small[ys:ye, xs:xe]
            crops.append(canvas)
    while len(crops) < count:
        crops += [c[:, ::-1].copy() for c in crops]
    return np.stack(crops[:count])


def timed(fn, *args):
    """(result, wall seconds); the CPU seconds of the whole process go to ``timed.cpu``."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    timed.cpu = time.process_time() - cpu
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces_dir", default=DEFAULT_FACES)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--batch", type=int, default=64, help="crops in the throughput batch")
    parser.add_argument("--repeats", type=int, default=3, help="calls per photo and detector; the fastest counts")
    parser.add_argument("--no_torch", action="store_true", help="skip facenet-pytorch")
    parser.add_argument("--nms", default="greedy", choices=["greedy", "any"], help="tfface_align's suppression rule")
    args = parser.parse_args()

    paths = sorted(glob.glob(os.path.join(args.faces_dir, "*.jpg")))[: args.limit or None]
    if not paths:
        raise SystemExit(f"no photos in {args.faces_dir}")
    photos = [tfface_align.read_image(p) for p in paths]
    from mtcnn import MTCNN as PackageMTCNN

    detectors = {"tfface_align": (tfface_align.MTCNN(nms=args.nms), run_ours),
                 "mtcnn package": (PackageMTCNN(), run_mtcnn_package)}
    torch_peer = None if args.no_torch else TORCH_PEER
    if torch_peer is not None:
        detectors["facenet-pytorch"] = (torch_peer, run_torch)
    else:
        print(f"facenet-pytorch skipped: {'--no_torch' if args.no_torch else TORCH_SKIP}")

    warm = cv2.resize(photos[0], (320, 240))
    for det, run in detectors.values():
        run(det, warm)
        run(det, np.ascontiguousarray(warm[:200, :300]))

    # Per photo and detector, the fastest of --repeats calls (timeit's rule: slower calls measure
    # interference from the rest of the machine, not the detector), CPU time of that call.
    times = {name: [float("inf")] * len(photos) for name in detectors}
    cpu_times = {name: [0.0] * len(photos) for name in detectors}
    results = {name: [None] * len(photos) for name in detectors}
    for _ in range(args.repeats):
        for i, image in enumerate(photos):
            for name, (det, run) in detectors.items():
                results[name][i], seconds = timed(run, det, image)
                if seconds < times[name][i]:
                    times[name][i], cpu_times[name][i] = seconds, timed.cpu
    cpu = {name: sum(values) for name, values in cpu_times.items()}
    ours_det = detectors["tfface_align"][0]
    list_seconds = min(timed(ours_det.detect, photos)[1] for _ in range(args.repeats))

    matched = confident = extra = 0
    worst = 0.0
    per_photo = []
    for i, path in enumerate(paths):
        m, c, e, w = agreement(results["mtcnn package"][i], results["tfface_align"][i])
        matched, confident, extra, worst = matched + m, confident + c, extra + e, max(worst, w)
        per_photo.append({"photo": os.path.basename(path), "size": list(photos[i].shape[:2]),
                          **{f"seconds[{n}]": times[n][i] for n in detectors},
                          **{f"faces[{n}]": len(results[n][i][0]) for n in detectors},
                          "matched": m, "confident_reference_faces": c, "extra": e})
    torch_agree = None
    if "facenet-pytorch" in detectors:
        t = [agreement(results["facenet-pytorch"][i], results["tfface_align"][i]) for i in range(len(paths))]
        torch_agree = {"matched": sum(x[0] for x in t), "confident": sum(x[1] for x in t),
                       "extra": sum(x[2] for x in t)}

    # Throughput on same-size crops.
    crops = face_crops(photos, results["mtcnn package"], args.batch)
    throughput, throughput_cpu = {}, {}

    def measure(name, fn, *fn_args):  # the fastest of --repeats calls
        throughput[name] = float("inf")
        for _ in range(args.repeats):
            _, seconds = timed(fn, *fn_args)
            if seconds < throughput[name]:
                throughput[name], throughput_cpu[name] = seconds, timed.cpu

    ours_det.detect(crops)  # the first call with this batch shape traces
    measure("tfface_align", ours_det.detect, crops)
    package = detectors["mtcnn package"][0]
    measure("mtcnn package (batch call)", package.detect_faces, list(crops))
    measure("mtcnn package (one call per image)", lambda: [package.detect_faces(c) for c in crops])
    if "facenet-pytorch" in detectors:
        measure("facenet-pytorch (batch call)", torch_peer.detect, crops)

    n = len(paths)
    total = {name: float(sum(t)) for name, t in times.items()}
    print(f"\n## Photo mode: {n} photos of {os.path.abspath(args.faces_dir)} (CPU, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, tfface_align nms={args.nms}, fastest of {args.repeats} calls)\n")
    print("| detector | total s | s/photo | CPU s/photo | faces found | tfface_align faster by (wall / CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in detectors:
        faces = sum(len(r[0]) for r in results[name])
        print(f"| {name} | {total[name]:.2f} | {total[name] / n:.3f} | {cpu[name] / n:.3f} | {faces} | "
              f"{total[name] / total['tfface_align']:.2f}x / {cpu[name] / cpu['tfface_align']:.2f}x |")
    print(f"| tfface_align, whole list in one call | {list_seconds:.2f} | {list_seconds / n:.3f} | | | "
          f"{total['mtcnn package'] / list_seconds:.2f}x vs mtcnn package |")
    print(f"\nAgreement with the mtcnn package: {matched}/{confident} of its faces with score >= 0.9 found "
          f"(IoU >= 0.8, landmarks within 3% of the box width); worst landmark error {worst * 100:.2f}% of the "
          f"box width; extra faces of ours: {extra}")
    if torch_agree:
        print(f"Agreement with facenet-pytorch (same rule): {torch_agree['matched']}/{torch_agree['confident']}, "
              f"extra faces of ours: {torch_agree['extra']}")
    print(f"\n## Throughput mode: {len(crops)} crops of 250x250 in one call\n")
    print("| detector | s | images/s | CPU s | tfface_align faster by (wall / CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in throughput.items():
        print(f"| {name} | {seconds:.2f} | {len(crops) / seconds:.1f} | {throughput_cpu[name]:.2f} | "
              f"{seconds / throughput['tfface_align']:.2f}x / "
              f"{throughput_cpu[name] / throughput_cpu['tfface_align']:.2f}x |")

    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(RESULTS_DIR, f"mtcnn_vs_peers_{stamp}.json")
    with open(path, "w") as f:
        json.dump({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                               "tensorflow": tf.__version__, "load_average": os.getloadavg()},
                   "nms": args.nms, "photos": n, "repeats": args.repeats, "total_seconds": total,
                   "total_cpu_seconds": cpu, "list_call_seconds": list_seconds,
                   "agreement": {"matched": matched, "confident_reference_faces": confident, "extra": extra,
                                 "worst_landmark_error_fraction": worst},
                   "agreement_facenet_pytorch": torch_agree, "facenet_pytorch_skipped": TORCH_SKIP,
                   "throughput_seconds": throughput, "throughput_cpu_seconds": throughput_cpu, "throughput_batch": len(crops),
                   "per_photo": per_photo}, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
