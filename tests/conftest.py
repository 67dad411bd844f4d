"""Shared fixtures: synthetic eye-like images (open = bright, closed = dark), a labelled synthetic folder, a tiny
trained checkpoint and the real dataset (../shared/data, read in place, never copied)."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from eye_clf import data, train

torch.set_num_threads(1)  # tiny models and batches: on a busy machine extra threads only wait for each other
# Same model, same input, different batch or device: bit-identical on CPU; CUDA convolutions may use TF32.
ATOL = 1e-3 if torch.cuda.is_available() else 1e-6


def synthetic(n=200, seed=0, size=24):
    """``n`` uint8 size x size images and 0/1 targets: open eyes are bright, closed ones dark, both noisy."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 2
    rng.shuffle(targets)
    base = np.where(targets, 170, 80)[:, None, None]
    images = np.clip(base + rng.normal(0, 25, (n, size, size)), 0, 255).astype(np.uint8)
    return images, targets


def smooth_image(size=24, seed=0):
    """A smooth grayscale uint8 image (gradient + blob): resizing it changes little."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.3, 0.7, 2)
    im = 60 + 80 * x + 100 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)
    return np.clip(im, 0, 255).astype(np.uint8)


def capture_backbone_input(model, x):
    """What ``model.backbone`` receives when the model (in eval mode) scores ``x``."""
    seen = []
    model.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        model.eval()(x)
    return seen[0]


TINY = train.TrainConfig(arch="eyenet", width=4, epochs=2, batch_size=32, lr=1e-2, augment=0, patience=5,
                         tta=False, device="cpu")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A checkpoint of a tiny EyeNet trained for two epochs on synthetic bright/dark images."""
    images, targets = synthetic(200)
    train_idx, val_idx, _ = data.split(targets, seed=0)
    model, history = train.fit(images, targets, train_idx, val_idx, TINY, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train.save_checkpoint(train.checkpoint(model, TINY, {}, history), path)
    return path


@pytest.fixture
def labelled_folder(tmp_path):
    """A folder of 40 synthetic PNGs plus labels.csv; returns (folder, labels_csv, images, targets)."""
    images, targets = synthetic(40, seed=3)
    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"{i:03d}.png" for i in range(len(images))]
    for name, im in zip(names, images):
        Image.fromarray(im).save(folder / name)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"img_name": names, "target": targets}).to_csv(labels, index=False)
    return folder, labels, images, targets


@pytest.fixture(scope="session")
def real_root():
    """The real dataset folder (../shared/data or $EYE_CLF_DATA); missing, the tests that need it are skipped, but
    fail under CI (``$CI`` set), which has the data."""
    try:
        return data.data_dir()
    except FileNotFoundError as err:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(err))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
