"""Preprocessing shared by training and both prediction backends (numpy + Pillow only, no torch).

Every image becomes a 24x24 grayscale uint8 array: turned upright as its EXIF orientation says if it is as read
from a file (a path, or a PIL image straight from ``Image.open``; one made from it by crop, rotate, convert, copy...
is taken as its pixels are, as an array of them would be), PIL ``convert("L")`` (luminance; alpha is ignored),
then an antialiased bilinear resize (a non-square image is stretched). The model sees ``(pixel / 255 - MEAN) / STD``
as float32 N x 1 x 24 x 24.

PIL modes and their scaling to 0..255: ``1`` (0/1 -> 0/255), ``L``, ``LA``, ``La``, ``P``, ``PA``, ``RGB``,
``RGBA``, ``RGBa``, ``RGBX``, ``CMYK``, ``YCbCr`` (through ``convert("L")``); ``I;16*`` and ``I`` as 16-bit
(0..65535 / 257; mode ``I`` values outside 0..65535 are refused); ``F`` as 0..1 floats (x 255, like float
arrays; values outside 0..1 are refused). Other modes (``LAB``, ``HSV``, ...) are refused.
"""
import os
import stat
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

IMG_SIZE = 24
MODE = "L"
MEAN, STD = 0.5, 0.2  # the 4000 CEW patches have mean 0.497 and std 0.199 on a 0..1 scale
RESIZE = "bilinear, antialiased"  # how to_gray24 resizes, as checkpoints record it
PREPROCESSING = dict(size=IMG_SIZE, mode=MODE, resize=RESIZE, mean=MEAN, std=STD)  # a checkpoint's, besides its tta
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 4096 * 4096  # larger files are refused; JPEGs are first decoded at 1/2, 1/4 or 1/8 scale, up to Pillow's
# decompression-bomb limit (Image.MAX_IMAGE_PIXELS x 2, about 179 million pixels), above which nothing is decoded
THROUGH_L = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}


def value_range(a):
    """The values of an array for a message: how many are NaN or infinite, if any, else "min..max", each as exactly
    as its dtype holds it (1.0001, not 1)."""
    nonfinite = (~np.isfinite(a)).sum()
    if nonfinite:
        return f"{nonfinite} NaN or infinite value(s)"
    return "..".join(str(v).removesuffix(".0") for v in (a.min(), a.max()))


def _scaled(a, low, high, scale, name, mode):
    if not np.isfinite(a).all() or a.min() < low or a.max() > high:
        raise ValueError(f"{name}: PIL mode {mode} images must hold values in {low}..{high}, got {value_range(a)}")
    return Image.fromarray(np.round(a * scale).astype(np.uint8))


def upright(image):
    """The image turned upright as its EXIF orientation says (as viewers show phone photos); as stored when its EXIF
    cannot be read."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, struct.error):  # unreadable EXIF over readable pixels
        return image


def to_gray24(image, name="image"):
    """A PIL image of any size and accepted mode (see the module docstring) as a 24x24 grayscale uint8 array; one
    as read from a file is turned upright as its EXIF orientation says (as viewers show phone photos; unreadable
    EXIF is ignored)."""
    try:
        image.load()
    except (ValueError, OSError, SyntaxError) as err:  # a closed image, a truncated or corrupt file
        raise ValueError(f"{name}: cannot read the PIL image ({err})") from None
    if 0 in image.size:
        raise ValueError(f"{name}: empty image of {image.size[0]} x {image.size[1]} pixels")
    if image.format:  # read from a file (Pillow sets no format on an image made from one: a crop of an image already
        image = upright(image)  # turned by hand, say, keeps the EXIF, which no longer describes its pixels)
    mode = image.mode
    if mode == "La":  # premultiplied alpha, which Pillow converts to L only through LA
        image = image.convert("LA")
    if mode == "I" or mode.startswith("I;16"):
        image = _scaled(np.asarray(image), 0, 65535, 1 / 257, name, mode)
    elif mode == "F":
        image = _scaled(np.asarray(image), 0, 1, 255, name, mode)
    elif mode not in THROUGH_L:
        raise ValueError(f"{name}: PIL mode {mode} is not supported; convert it to L or RGB first")
    image = image.convert("L")
    if image.size != (IMG_SIZE, IMG_SIZE):
        image = image.resize((IMG_SIZE, IMG_SIZE), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(image, dtype=np.uint8)


def _check_file(path):
    """A clear error for a missing path or one that is not a regular file (a folder, /dev/zero, a pipe)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"not a regular file: {path}")


def _reduce_large(image, path):
    """Decode JPEGs above MAX_PIXELS at a reduced scale; refuse anything that stays above it."""
    w, h = image.size
    for k in (1, 2, 4, 8) if isinstance(image, JpegImagePlugin.JpegImageFile) else (1,):  # MPO (cameras) too
        if (w // k) * (h // k) <= MAX_PIXELS:
            if k > 1:
                image.draft(image.mode, (-(-w // k), -(-h // k)))
            return image
    raise ValueError(f"image too large: {path} is {w} x {h} pixels, more than the {MAX_PIXELS} that eye_clf "
                     "decodes; crop the eye first")


def load_image(path):
    """Read one image file as a 24x24 uint8 array (see to_gray24); a clear error names a missing, non-image,
    corrupt, too large or non-regular file."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            _reduce_large(image, path).load()  # a truncated file fails here, as a corrupt image
            return to_gray24(image, str(path))
    except Image.DecompressionBombError as err:
        raise ValueError(f"image too large: {path} ({err})") from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file: {path}") from None
    except (OSError, SyntaxError) as err:
        if getattr(err, "errno", None) is not None:  # the file cannot be read (permission, I/O): not bad data
            raise
        raise ValueError(f"corrupt image {path}: {err}") from None


def list_images(folder, links_out=False):
    """Image files in a folder, sorted by name. Hidden files (``.name``, which includes macOS ``._name.jpg``
    companions) are skipped, and so are symlinks that point out of the folder unless ``links_out`` (prediction
    follows them; the studio, which serves the files, and labelled folders, whose labels name files in them, do
    not)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    inside = folder.resolve()
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
                  and (links_out or p.resolve().is_relative_to(inside)))


def standardize(x):
    """Pixel values 0..255 in a float32 numpy array or torch tensor as the model sees them: ``(x / 255 - MEAN) / STD``
    (the one place this is written)."""
    return (x / 255 - MEAN) / STD


def subfolder_hint(folder):
    """For a folder without image files of its own: its subfolders that hold some (folders are not read
    recursively), as a hint to add to the message; "" when there are none (or one cannot be listed)."""
    subs = []
    for p in sorted(Path(folder).iterdir()):
        try:
            if p.is_dir() and not p.name.startswith(".") and list_images(p):
                subs.append(p)
        except OSError:  # no permission to list it: the message goes without it
            pass
    if not subs:
        return ""
    shown = ", ".join(f"{p.name}/" for p in subs[:3]) + (f" and {len(subs) - 3} more" if len(subs) > 3 else "")
    one = len(subs) == 1
    return (f" (its subfolder{'' if one else 's'} {shown} hold{'s' if one else ''} images, which are not read: pass "
            f"{'it' if one else 'each'} as a folder of its own)")


def normalize(images):
    """uint8 images (N x 24 x 24) as the float32 N x 1 x 24 x 24 model input (``standardize``)."""
    return standardize(np.asarray(images, dtype=np.uint8).astype(np.float32)[:, None])
