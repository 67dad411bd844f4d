"""EER of a checkpoint on its held-out test split under input changes that real eye crops bring.

    python scripts/robustness.py [--checkpoint plots_checkpoints/eye_clf.pt]

Each test image (never used for training or model selection: the split is rebuilt from the checkpoint's seed) is
turned into a PIL image, changed (upscaled, colour-tinted, JPEG-recompressed, rotated, cropped, darkened) and
passed through ``predict_proba``, which converts and resizes it as in training.
"""
import argparse
import io

import numpy as np
from PIL import Image, ImageOps

from eye_clf import data, metrics, predict_proba
from eye_clf.models import load_checkpoint
from eye_clf.predict import DEFAULT_CHECKPOINT

UP = Image.Resampling.BICUBIC


def jpeg(im, quality):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def tint(im, rgb=(1.0, 0.78, 0.62)):
    """A warm, skin-like colour version of a grayscale image."""
    a = np.asarray(im.convert("RGB"), dtype=np.float32) * np.array(rgb, dtype=np.float32)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


CHANGES = {
    "clean (24x24 gray)": lambda im: im,
    "upscaled 4x (96x96)": lambda im: im.resize((96, 96), UP),
    "colour tint, upscaled 3x (RGB 72x72)": lambda im: tint(im.resize((72, 72), UP)),
    "JPEG quality 20 at 72x72": lambda im: jpeg(im.resize((72, 72), UP), 20),
    "rotated +10 deg": lambda im: im.rotate(10, UP, fillcolor=int(np.asarray(im).mean())),
    "rotated -10 deg": lambda im: im.rotate(-10, UP, fillcolor=int(np.asarray(im).mean())),
    "tight crop (centre 20x20, 83%)": lambda im: ImageOps.fit(im, (20, 20), centering=(0.5, 0.5)),
    "loose (padded to 28x28 with edge)": lambda im: ImageOps.pad(im.resize((24, 24)), (28, 28),
                                                                 color=int(np.asarray(im)[0].mean())),
    "darker (x0.5)": lambda im: im.point(lambda v: v // 2),
    "inverted colours (255 - pixel)": ImageOps.invert,
    "colour, upscaled, JPEG 40, 128x128": lambda im: jpeg(tint(im.resize((128, 128), UP)), 40),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--data", help="data folder (default: $EYE_CLF_DATA or ../shared/data)")
    args = ap.parse_args()
    _, ckpt = load_checkpoint(args.checkpoint)
    images, targets, _ = data.load_dataset(args.data)
    test = data.split(targets, ckpt["config"]["seed"])[2]
    base = None
    print(f"{len(test)} held-out test images of {args.checkpoint}")
    print(f"{'input':40s}{'EER %':>8s}{'drop':>8s}{'acc@0.5 %':>11s}")
    for name, change in CHANGES.items():
        p = predict_proba([change(Image.fromarray(images[i])) for i in test], checkpoint=args.checkpoint)
        e = metrics.eer(targets[test], p)[0]
        base = e if base is None else base
        print(f"{name:40s}{100 * e:8.2f}{100 * (e - base):+8.2f}{100 * metrics.accuracy(targets[test], p):11.2f}")


if __name__ == "__main__":
    main()
