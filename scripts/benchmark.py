"""CPU speed and memory of ``predict_proba``: the shipped model on onnxruntime and on torch, and a plain
torchvision ResNet18 (3x3 stride-1 stem) on torch for scale.

    python scripts/benchmark.py [--threads 1] [--repeats 3] [--batch-size N]

Prints, side by side: images/s on a batch of 4000 in-memory images and on a folder of 4000 JPEG files, the
milliseconds of one call on one image (a webcam loop: SINGLE images one call each), each the median and range of
``--repeats`` rounds that time the three in turn; each EyeNet backend's speed as a multiple of the ResNet18's (per
round, then median and range); then for each backend the cold start (a fresh interpreter, timed from its launch:
start Python, import eye_clf, load the model, predict one file) and the peak memory (max RSS) of that process.
``--threads`` sets torch's threads and, through $OMP_NUM_THREADS, onnxruntime's; ``--batch-size`` is
predict_proba's (default: its own). The ResNet18's throughput does not depend on its weights, so it is random init,
with its BatchNorm folded like the shipped model's.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from eye_clf import data, load_model, load_session, predict_proba
from eye_clf.__main__ import int_at_least
from eye_clf.files import provenance
from eye_clf.models import build_model, fold_batchnorm

COLD = """import re
import eye_clf
eye_clf.predict_proba({image!r}, backend={backend!r})
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""  # VmHWM: this process's own peak RSS (ru_maxrss would include the forking parent's)


SINGLE = 500  # images predicted one call each, for the latency of one call


def rates(fns, n, repeats):
    """Items/s of each function over ``repeats`` rounds (after an untimed warm-up round), the functions timed in
    turn within each round so that the host's drift falls on all of them alike: an array of rounds x functions."""
    for fn in fns:
        fn()
    seconds = np.empty((repeats, len(fns)))
    for r in range(repeats):
        for j, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            seconds[r, j] = time.perf_counter() - t
    return n / seconds


def spread(values, fmt):
    """The median of ``values`` and, over more than one, their range."""
    text = format(np.median(values), fmt)
    return text if len(values) == 1 else f"{text} ({min(values):{fmt}}-{max(values):{fmt}})"


def cold_start(backend, image):
    """Seconds from launching a fresh interpreter until it has imported, loaded and predicted one file and
    exited, and that process's peak RSS (MiB)."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD.format(image=str(image), backend=backend)], check=True,
                         capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}).stdout
    return time.perf_counter() - t, float(out) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int_at_least(1), default=2)
    ap.add_argument("--repeats", type=int_at_least(1), default=3,
                    help="timed rounds per case; the median and range are shown")
    ap.add_argument("--batch-size", type=int_at_least(1),
                    help="predict_proba's batch_size (default: predict_proba's default)")
    ap.add_argument("--data", help="data folder (default: $EYE_CLF_DATA or ../shared/data)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # onnxruntime sessions and the cold-start processes
    torch.set_num_threads(args.threads)
    try:
        folder = data.data_dir(args.data) / data.IMAGES_FOLDER
    except FileNotFoundError as err:
        ap.error(str(err))
    files = data.list_images(folder)
    images = np.stack([data.load_image(f) for f in files])
    cold = [cold_start(b, files[0]) for b in ("onnx", "torch")]  # before this process grows
    shipped, tta = load_model(device="cpu")  # a CPU benchmark, also where CUDA is present
    load_session()
    resnet = fold_batchnorm(build_model("resnet18"))
    batch = {"batch_size": args.batch_size} if args.batch_size else {}
    runs = {"EyeNet onnxruntime": dict(backend="onnx", **batch),
            "EyeNet torch": dict(model=shipped, tta=tta, **batch),
            "ResNet18 torch": dict(model=resnet, tta=False, **batch)}
    prov = provenance("cpu")
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown (no os.getloadavg here)"
    print(f"commit {prov['git_commit']} (uncommitted changes: {prov['git_dirty']}), {prov['versions']}, "
          f"{prov['machine']}; load average {load}")
    print(f"{args.threads} thread(s), CPU, {len(files)} images of the data folder's EyesDataset; "
          f"shipped model mirror-TTA: {tta}; predict_proba batch_size {args.batch_size or 'default'}")
    print(f"{'':30s}" + "".join(f"{name:>22s}" for name in runs))
    one = images[:SINGLE]
    cases = {  # label: (one call of a backend, the images it scores)
        "in-memory batch (images/s)": (lambda kw: predict_proba(images, **kw), len(files)),
        "folder of JPEGs (images/s)": (lambda kw: predict_proba(folder, **kw), len(files)),
        "one image per call (ms)": (lambda kw: [predict_proba(im, **kw) for im in one], len(one))}
    ratios = {}
    for label, (call, n) in cases.items():
        r = rates([lambda kw=kw: call(kw) for kw in runs.values()], n, args.repeats)
        ratios[label] = r[:, :2] / r[:, 2:]  # per round: each EyeNet backend against the ResNet18
        shown = [spread(1e3 / c, ".2f") if "ms" in label else spread(c, ".0f") for c in r.T]
        print(f"{label:30s}" + "".join(f"{x:>22s}" for x in shown), flush=True)
    for label, ratio in ratios.items():
        print(f"{label.split(' (')[0] + ', x ResNet18':30s}" + "".join(f"{spread(c, '.1f'):>22s}" for c in ratio.T))
    parity = np.abs(predict_proba(images, backend="onnx") - predict_proba(images, model=shipped, tta=tta)).max()
    print(f"max |P(onnxruntime) - P(torch)| over the {len(files)} images: {parity:.1e}")
    print(f"{'cold start (s)':30s}" + "".join(f"{s:22.2f}" for s, _ in cold))
    print(f"{'peak RSS, cold start (MiB)':30s}" + "".join(f"{m:22.0f}" for _, m in cold))


if __name__ == "__main__":
    main()
