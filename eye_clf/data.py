"""Data: where the dataset lives, the labels spreadsheet, the dataset's images, splits and augmentation.

Image reading and normalisation live in ``preprocess`` (shared with prediction) and are re-exported here.
"""
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split
from torchvision.transforms import v2

from .preprocess import (IMAGE_SUFFIXES, IMG_SIZE, MEAN, STD, list_images,  # noqa: F401 (re-exported)
                         load_image, normalize, to_gray24)

DATA_ENV = "EYE_CLF_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent
LABELS_NAME = "img_name_target.xlsx"


class LabelError(ValueError):
    """A labels spreadsheet that cannot be used; the message lists every offending row."""


def data_dir(path=None):
    """The dataset folder: ``path`` if given, else $EYE_CLF_DATA, else ../shared/data beside the repository."""
    chosen = path or os.environ.get(DATA_ENV) or REPO_ROOT.parent / "shared" / "data"
    chosen = Path(chosen)
    if not (chosen / "EyesDataset").is_dir():
        raise FileNotFoundError(
            f"eye_clf dataset not found in {chosen}: put EyesDataset/ (the 24x24 eye patches) there, or point "
            f"${DATA_ENV} or --data at the folder that holds it.")
    return chosen


def labels_file(path=None, root=None):
    """The labels spreadsheet: ``path`` if given, else the project's reference labels (``img_name_target.xlsx``
    at the top of the checkout, beside the notebooks), else ``img_name_target.xlsx`` in the data folder."""
    if path:
        return Path(path)
    if (REPO_ROOT / LABELS_NAME).is_file():
        return REPO_ROOT / LABELS_NAME
    found = data_dir(root) / LABELS_NAME
    if not found.is_file():
        raise FileNotFoundError(f"labels file not found: {found} (pass --labels, or put {LABELS_NAME} there)")
    return found


def read_labels(path, images_dir=None):
    """Read a labels spreadsheet (xlsx or csv) with columns ``img_name`` and ``target`` (1 open, 0 closed).

    Returns a DataFrame with ``img_name`` (str) and ``target`` (int). Raises LabelError listing every bad row:
    missing column, empty sheet, duplicate name, target not 0/1 and, when ``images_dir`` is given, missing image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    try:
        df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_excel(path)
    except pd.errors.EmptyDataError:
        raise LabelError(f"{path}: empty file") from None
    missing = {"img_name", "target"} - set(df.columns)
    if missing:
        raise LabelError(f"{path}: missing column(s) {sorted(missing)}; found {list(df.columns)}")
    if df.empty:
        raise LabelError(f"{path}: no rows")
    problems = []
    names = df["img_name"].astype(str).str.strip()
    targets = pd.to_numeric(df["target"], errors="coerce")
    duplicated = names.duplicated(keep=False)
    for i, (name, raw, t) in enumerate(zip(names, df["target"], targets)):
        row = i + 2  # spreadsheet row: header is row 1
        if pd.isna(df["img_name"].iloc[i]) or not name:
            problems.append(f"row {row}: img_name is empty")
            continue
        if t not in (0, 1):
            problems.append(f"row {row} ({name}): target {raw!r} is not 0 or 1")
        if duplicated.iloc[i]:
            problems.append(f"row {row} ({name}): duplicate img_name")
        if images_dir is not None and not (Path(images_dir) / name).is_file():
            problems.append(f"row {row} ({name}): image file not found in {images_dir}")
    if problems:
        raise LabelError(f"{path}: {len(problems)} bad row(s):\n  " + "\n  ".join(problems))
    return pd.DataFrame({"img_name": names, "target": targets.astype(int)})


def load_dataset(root=None, labels=None, limit=None):
    """Images (N x 24 x 24 uint8), targets (N,) and names of a labelled folder.

    ``root`` is the data folder (see data_dir) holding EyesDataset/; ``labels`` is the spreadsheet (default: see
    labels_file). ``limit`` keeps a stratified subset (for smoke runs).
    """
    labels = labels_file(labels, root)
    root = data_dir(root)
    df = read_labels(labels, images_dir=root / "EyesDataset")
    if limit and limit < len(df):
        df, _ = train_test_split(df, train_size=limit, stratify=df["target"], random_state=0)
    images = np.stack([load_image(root / "EyesDataset" / n) for n in df["img_name"]])
    return images, df["target"].to_numpy(), df["img_name"].tolist()


def split(targets, seed=0, val=0.15, test=0.15):
    """Deterministic stratified train/val/test index arrays."""
    idx = np.arange(len(targets))
    rest, test_idx = train_test_split(idx, test_size=test, stratify=targets, random_state=seed)
    train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), stratify=targets[rest],
                                          random_state=seed)
    return train_idx, val_idx, test_idx


def kfold(targets, folds=5, seed=0):
    """Stratified k-fold (train_idx, test_idx) pairs."""
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(targets)), targets))


def image_hash(image):
    """A short content hash of a 24x24 uint8 image (what the model sees), to recognise training images."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()[:16]


def to_tensor(images):
    """uint8 images (N x 24 x 24) as the normalized N x 1 x 24 x 24 float tensor the models take."""
    return torch.from_numpy(normalize(images))


def augmentation(strength=1.0, invert=0.0):
    """Training augmentation on uint8 1x24x24 tensors: flips, shifts, small rotations/scales, light and blur
    (``strength`` 0: none of these), then colour inversion with probability ``invert``; None when both are 0."""
    s = strength
    if not (s or invert):
        return None
    return v2.Compose([
        *([v2.RandomHorizontalFlip(),
           v2.RandomAffine(degrees=10 * s, translate=(0.1 * s, 0.1 * s), scale=(1 - 0.1 * s, 1 + 0.1 * s)),
           v2.ColorJitter(brightness=0.4 * s, contrast=0.4 * s),
           v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2 * s)] if s else []),
        v2.RandomInvert(p=invert),
    ])


class EyeDataset(torch.utils.data.Dataset):
    """uint8 images + 0/1 targets; yields (normalized 1x24x24 float tensor, float target)."""

    def __init__(self, images, targets, transform=None):
        self.images = torch.as_tensor(np.asarray(images), dtype=torch.uint8).unsqueeze(1)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return (x.float() / 255 - MEAN) / STD, self.targets[i]
