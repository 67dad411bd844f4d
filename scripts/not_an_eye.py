"""What the shipped model says when the input is not an eye patch (flat and noise images, crops of photos without
an eye, a whole face), and on the eyes of that face cropped as it expects.

    python scripts/not_an_eye.py > results/not_an_eye.txt

eye_clf has no out-of-distribution guard: it answers P(open) for whatever it is given. The photos are the ones that
ship inside scikit-learn (china.jpg, flower.jpg) and matplotlib (grace_hopper.jpg), so this runs offline.
"""
import os

import matplotlib
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

import eye_clf
from eye_clf.files import provenance

CROPS = 100  # random square crops per photo
SIDE = 96  # their side in pixels
EYES = {"her right eye": (212, 186), "her left eye": (306, 184)}  # centres in grace_hopper.jpg, read off the photo


def random_crops(gray, rng):
    """CROPS random SIDE x SIDE crops of a grayscale photo."""
    ys = rng.integers(0, gray.shape[0] - SIDE, CROPS)
    xs = rng.integers(0, gray.shape[1] - SIDE, CROPS)
    return np.stack([gray[y:y + SIDE, x:x + SIDE] for y, x in zip(ys, xs)])


def main():
    rng = np.random.default_rng(0)
    threshold = eye_clf.recommended_threshold()
    china, flower = (np.asarray(Image.fromarray(a).convert("L")) for a in load_sample_images().images)
    face = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    inputs = {
        "black (0)": np.zeros((1, 24, 24), np.uint8),
        "mid grey (128)": np.full((1, 24, 24), 128, np.uint8),
        "white (255)": np.full((1, 24, 24), 255, np.uint8),
        f"uniform noise, {CROPS} images": rng.integers(0, 256, (CROPS, 24, 24), dtype=np.uint8),
        f"china.jpg (a temple), {CROPS} random {SIDE}x{SIDE} crops": random_crops(china, rng),
        f"flower.jpg, {CROPS} random {SIDE}x{SIDE} crops": random_crops(flower, rng),
    }
    print(f"# python scripts/not_an_eye.py; {provenance()}")
    print(f"shipped model, recommended threshold {threshold:.3f} (P(open) below it: closed)")
    for name, images in inputs.items():
        p = eye_clf.predict_proba(images)
        print(f"{name}: P(open) median {np.median(p):.3f}, max {p.max():.3f}; called closed: "
              f"{np.mean(p < threshold):.0%}")
    print(f"grace_hopper.jpg, the whole portrait (open eyes), {face.size[0]}x{face.size[1]}: "
          f"P(open) {eye_clf.predict_proba(face):.3f}")
    for name, (x, y) in EYES.items():  # the same photo cropped as the model expects: an eye, not a face
        p = [eye_clf.predict_proba(face.crop((x - h, y - h, x + h, y + h))) for h in (20, 28)]
        print(f"grace_hopper.jpg, {name} (open, behind glasses), square crops of 40 and 56 px: "
              f"P(open) {p[0]:.3f} and {p[1]:.3f}")


if __name__ == "__main__":
    main()
