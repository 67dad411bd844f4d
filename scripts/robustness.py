"""Out-of-fold EER of cross-validated recipes under input changes that real eye crops bring.

    python scripts/robustness.py eyenet16_e100_refit_tta eyenet16_e100_refit_tta_seed1 --out results/robustness_x.md

Every image is scored by the fold model that never saw it (``results/cv/NAME/foldK.pt``), after being turned into
a PIL image, changed (resized, colour-tinted, JPEG-recompressed, rotated, cropped, darkened, inverted) and passed
through ``predict_proba``, which converts and resizes it as in training. Writes the table to ``--out`` (no default,
so that no committed table is replaced by surprise); the runs' fold models must be on disk.
"""
import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from eye_clf import data, metrics, predict_proba
from eye_clf.__main__ import output_file
from eye_clf.cv import check_data, check_fold_model, data_id, out_of_fold
from eye_clf.experiment import cv_rows
from eye_clf.files import atomic_write, provenance

CV = Path(__file__).resolve().parent.parent / "results" / "cv"

UP = Image.Resampling.BICUBIC


def jpeg(im, quality):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def tint(im, rgb=(1.0, 0.78, 0.62)):
    """A warm, skin-like colour version of a grayscale image."""
    a = np.asarray(im.convert("RGB"), dtype=np.float32) * np.array(rgb, dtype=np.float32)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def edge_colour(im):
    """The mean of a grayscale image's outermost pixels: the fill of a looser crop."""
    a = np.asarray(im)
    return int(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean())


def padded_square(im):
    """A non-square image made square before predict_proba (which would stretch it) by bands of its edge colour."""
    side = max(im.size)
    return ImageOps.pad(im, (side, side), color=edge_colour(im))


def centre_square(im):
    """The centre square of a non-square image (the rest is cut away)."""
    side = min(im.size)
    return ImageOps.fit(im, (side, side), UP)


def wide(im):
    """A 3:2 close-up: rows 4-19 of the patch (less above and below the eye), upscaled 4x to 96x64."""
    return im.crop((0, 4, 24, 20)).resize((96, 64), UP)


def tall(im):
    """A 2:3 close-up: columns 4-19 of the patch (less on either side), upscaled 4x to 64x96."""
    return im.crop((4, 0, 20, 24)).resize((64, 96), UP)


# the images are 24x24 gray; the tight and loose crops take or add 2 pixels on every side, the 3:2 and 2:3
# crops keep 16 of the 24 rows or columns
CHANGES = {
    "clean (24x24 gray)": lambda im: im,
    "upscaled 4x (96x96)": lambda im: im.resize((96, 96), UP),
    "colour tint, upscaled 3x (RGB 72x72)": lambda im: tint(im.resize((72, 72), UP)),
    "JPEG quality 20 at 72x72": lambda im: jpeg(im.resize((72, 72), UP), 20),
    "rotated +10 deg": lambda im: im.rotate(10, UP, fillcolor=int(np.asarray(im).mean())),
    "rotated -10 deg": lambda im: im.rotate(-10, UP, fillcolor=int(np.asarray(im).mean())),
    "downscaled to 20x20": lambda im: im.resize((20, 20), UP),
    "upscaled to 28x28": lambda im: im.resize((28, 28), UP),
    "tight crop (centre 20x20, 83%)": lambda im: im.crop((2, 2, 22, 22)),
    "loose crop (2-px border of the edge colour, 28x28)": lambda im: ImageOps.expand(im, 2, fill=edge_colour(im)),
    "darker (x0.5)": lambda im: im.point(lambda v: v // 2),
    "inverted colours (255 - pixel)": ImageOps.invert,
    "colour, upscaled, JPEG 40, 128x128": lambda im: jpeg(tint(im.resize((128, 128), UP)), 40),
    "3:2 crop (rows 4-19, 96x64), as given: stretched": wide,
    "3:2 crop, padded square with the edge colour": lambda im: padded_square(wide(im)),
    "3:2 crop, its centre square": lambda im: centre_square(wide(im)),
    "2:3 crop (columns 4-19, 64x96), as given: stretched": tall,
    "2:3 crop, padded square with the edge colour": lambda im: padded_square(tall(im)),
    "2:3 crop, its centre square": lambda im: centre_square(tall(im)),
}


def oof_eer(name, rows, images, targets, change):
    """Pooled out-of-fold EER and accuracy at each fold's validation threshold of run ``name`` (its per-fold
    ``rows``) under ``change``."""
    p, threshold = np.full(len(targets), np.nan), out_of_fold(rows, len(targets))[1]
    for fold in rows:
        test = fold["test_idx"]
        changed = [change(Image.fromarray(images[i])) for i in test]
        p[test] = predict_proba(changed, checkpoint=CV / name / f"fold{fold['fold']}.pt")
    return metrics.eer(targets, p)[0], float(np.mean((p >= threshold) == targets))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished CV runs in results/cv/ (with their fold models)")
    ap.add_argument("--data", help="data folder (default: $EYE_CLF_DATA or ../shared/data)")
    ap.add_argument("--out", required=True, type=output_file,
                    help="the table's file (e.g. results/robustness_refit_tta.md)")
    args = ap.parse_args()
    if len(set(args.runs)) < len(args.runs):
        ap.error(f"a run named twice: {args.runs}")
    runs = {run: cv_rows(run, CV) for run in args.runs}
    unfinished = [run for run, rows in runs.items() if rows is None]
    if unfinished:
        ap.error(f"no finished CV in {CV} for {', '.join(unfinished)} (run it with scripts/cv_ablations.py)")
    missing = {run: [str(pt) for pt in (CV / run / f"fold{r['fold']}.pt" for r in rows) if not pt.is_file()]
               for run, rows in runs.items()}
    missing = {run: gone for run, gone in missing.items() if gone}
    if missing:  # refused before any scoring
        ap.error(f"fold models missing: {', '.join(sum(missing.values(), []))} (only the fold files are committed): "
                 "train them again (" + "; ".join(f"python scripts/cv_ablations.py --reproduce {run} --into DIR"
                                                  for run in missing)
                 + ") and copy DIR/foldK.pt into results/cv/RUN/; a model that does not reproduce its fold file's "
                 "P(open) is refused")
    try:
        images, targets, _ = data.load_dataset(args.data)
    except (FileNotFoundError, ValueError) as err:
        ap.error(str(err))
    here = data_id(images, targets)
    for run, rows in runs.items():
        try:
            check_data(rows, targets, here, run)
            for fold in rows:  # fold models are untracked files
                check_fold_model(CV / run / f"fold{fold['fold']}.json", images)
        except ValueError as err:
            ap.error(str(err))
    rows = []
    for name, change in CHANGES.items():
        row = {"input": name}
        for run in args.runs:
            e, acc = oof_eer(run, runs[run], images, targets, change)
            row[f"{run} EER %"], row[f"{run} accuracy %"] = round(100 * e, 2), round(100 * acc, 2)
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    for run in args.runs:
        table.insert(table.columns.get_loc(f"{run} EER %") + 1, f"{run} change",
                     (table[f"{run} EER %"] - table[f"{run} EER %"][0]).map("{:+.2f}".format))
    table = table.map(lambda v: f"{v:.2f}" if isinstance(v, float) else v)  # "+0.10" and "97.50" as written
    prov = provenance()
    md = ("# Robustness: out-of-fold EER under input changes\n\n"
          f"Command: `python scripts/robustness.py {' '.join(sys.argv[1:])}` "
          f"(commit {prov['git_commit']}, "
          f"dirty: {prov['git_dirty']}; {prov['versions']}; {prov['machine']}). Each of the {len(targets)} images is "
          "scored by the fold model of `results/cv/RUN/` "
          "that never saw it; the EER is that of these pooled out-of-fold scores (the CV tables report the mean of the "
          "per-fold EERs, which differs); accuracy at each fold's validation threshold.\n\n"
          + table.to_markdown(index=False, disable_numparse=True) + "\n")
    print(md, flush=True)  # first: a failed write loses nothing
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(md))


if __name__ == "__main__":
    main()
