"""``predict_proba``: P(open) for paths, folders, PIL images, numpy arrays, torch tensors or lists of them."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.fx.experimental.optimization import fuse

from . import data
from .train import device_of, load_checkpoint, scores

DEFAULT_CHECKPOINT = Path(__file__).with_name("shipped") / "eye_clf.pt"  # package data, also plots_checkpoints/
_loaded = {}


def load_model(checkpoint=None):
    """The model of a checkpoint (default: the shipped one), cached per file, on CUDA when present, with every
    BatchNorm folded into the convolution before it (same outputs, faster inference).

    Returns ``(model, tta)`` where tta says whether the checkpoint predicts with mirror averaging.
    """
    path = Path(checkpoint or DEFAULT_CHECKPOINT).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train one with `python -m eye_clf train`)")
    key = (path, path.stat().st_mtime_ns)
    if key not in _loaded:
        model, ckpt = load_checkpoint(path)
        model.backbone = fuse(model.backbone)
        _loaded[key] = model.to(device_of()), bool(ckpt["preprocessing"].get("tta", False))
    return _loaded[key]


def _array_image(a, name):
    """One H x W or H x W x C array (uint8, or float in 0..1) as 24x24 uint8."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"{name}: expected an H x W or H x W x C (C = 1, 3, 4) image, got shape {a.shape}")
    if min(a.shape[:2]) == 0:
        raise ValueError(f"{name}: empty image of shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name}: dtype {a.dtype} is not supported; use uint8 (0..255) or float (0..1)")
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name}: float images must hold finite values in 0..1, got "
                             f"{np.nanmin(a):.3g}..{np.nanmax(a):.3g}")
        a = np.round(a * 255).astype(np.uint8)
    if a.shape == (data.IMG_SIZE, data.IMG_SIZE):
        return a
    return data.to_gray24(Image.fromarray(a))


def _to_images(x, name="input"):
    """Convert one input to a list of 24x24 uint8 arrays; returns (images, is_single)."""
    if isinstance(x, (str, Path)):
        path = Path(x)
        if path.is_dir():
            files = data.list_images(path)
            if not files:
                raise ValueError(f"{name}: no image files in folder {path}")
            return [data.load_image(f) for f in files], False
        return [data.load_image(path)], True
    if isinstance(x, Image.Image):
        return [data.to_gray24(x)], True
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):      # C x H x W
            t = t.permute(1, 2, 0)
        elif t.ndim == 4:                                 # N x C x H x W
            t = t.permute(0, 2, 3, 1)
        x = t.numpy()
    if isinstance(x, np.ndarray):
        if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] <= 4):  # H x W x C (C = 2 is rejected there)
            return [_array_image(x, name)], True
        if x.ndim in (3, 4):
            if len(x) == 0:
                raise ValueError(f"{name}: empty batch of shape {x.shape}")
            return [_array_image(a, f"{name}[{i}]") for i, a in enumerate(x)], False
        raise ValueError(f"{name}: expected an image or a batch of images, got an array of shape {x.shape}")
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{name}: empty list")
        return [im for i, item in enumerate(x) for im in _to_images(item, f"{name}[{i}]")[0]], False
    raise TypeError(f"{name}: cannot read a {type(x).__name__} as an image; pass a path, folder, PIL image, "
                    "numpy array, torch tensor or a list of these")


def predict_proba(x, model=None, checkpoint=None, batch_size=1024, tta=None):
    """P(open) of eye image(s).

    ``x``: an image path, a folder (its image files, sorted by name), a PIL image, a numpy array (H x W or
    H x W x C, uint8 or float 0..1; a batch N x H x W or N x H x W x C), a torch tensor (H x W, C x H x W or
    N x C x H x W) or a list of these. Any size or colour: images become 24x24 grayscale as in training.
    Returns a float for one image, else a numpy array. ``model`` (a built eye_clf model) or ``checkpoint`` (a
    path) replace the shipped checkpoint; ``tta`` overrides the checkpoint's mirror averaging.
    """
    images, single = _to_images(x)
    if model is None:
        model, ckpt_tta = load_model(checkpoint)
        tta = ckpt_tta if tta is None else tta
    p = scores(model, np.stack(images), batch_size, bool(tta))
    return float(p[0]) if single else p
