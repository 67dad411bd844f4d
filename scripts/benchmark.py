"""CPU speed of ``predict_proba``: the shipped model vs a plain torchvision ResNet18 (3x3 stride-1 stem).

    python scripts/benchmark.py [--checkpoint plots_checkpoints/eye_clf.pt] [--threads 2] [--repeats 3]

Prints, side by side: images/s on a batch of 4000 in-memory images and on a folder of 4000 JPEG files (best of
``--repeats``), then the shipped model's cold start (fresh interpreter: import + load + first prediction) and peak
memory (max RSS) of that process. The ResNet18's throughput does not depend on its weights, so it is random init.
"""
import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eye_clf import data, predict_proba  # noqa: E402
from eye_clf.models import build_model  # noqa: E402
from eye_clf.predict import DEFAULT_CHECKPOINT, load_model  # noqa: E402


def best_rate(fn, n, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def cold_start(checkpoint, image):
    code = (f"import time; t = time.perf_counter(); import torch; torch.set_num_threads({torch.get_num_threads()}); "
            f"import eye_clf; p = eye_clf.predict_proba({str(image)!r}, checkpoint={str(checkpoint)!r}); "
            "print(time.perf_counter() - t)")
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   cwd=data.REPO_ROOT).stdout)
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the only child: KiB -> MiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", help="data folder (default: $EYE_CLF_DATA or ../shared/data)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = data.data_dir(args.data)
    images, _, names = data.load_dataset(root)
    folder = root / "EyesDataset"
    shipped, tta = load_model(args.checkpoint)
    resnet = build_model("resnet18").eval()
    print(f"torch {torch.__version__}, {args.threads} threads, device cpu, {len(images)} images; "
          f"shipped model mirror-TTA: {tta}")
    print(f"{'':34s}{'shipped':>12s}{'resnet18':>12s}{'ratio':>8s}")
    for label, x in (("in-memory batch (images/s)", images), ("folder of JPEG files (images/s)", folder)):
        rates = [best_rate(lambda m=m, t=t: predict_proba(x, model=m, tta=t), len(names), args.repeats)
                 for m, t in ((shipped, tta), (resnet, False))]
        print(f"{label:34s}{rates[0]:12.0f}{rates[1]:12.0f}{rates[0] / rates[1]:7.1f}x", flush=True)
    seconds, peak_mb = cold_start(args.checkpoint, folder / names[0])
    print(f"cold start (import + load + first prediction): {seconds:.2f} s; peak RSS of that process: "
          f"{peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
