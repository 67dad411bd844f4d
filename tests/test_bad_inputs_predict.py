"""Hostile inputs to ``predict_proba``: one clear error naming the argument, the same with either backend."""
import io
import os
import re
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from eye_clf import preprocess
from eye_clf.__main__ import main
from eye_clf.predict import predict_proba

from conftest import smooth_image

EYE = smooth_image(seed=1)
BACKENDS = ["onnx", "torch"]


def png_header(path, width, height):
    """A PNG that declares width x height 16-bit gray pixels but holds no pixel data (a few bytes on disk)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def closed_image():
    image = Image.fromarray(EYE)
    image.close()
    return image


BAD_INPUTS = [
    # 3-D is always N x H x W; colour batches are N x H x W x C (numpy) or N x C x H x W (torch)
    (np.zeros((24, 24, 3), np.uint8), r"input: a 3-D array is a batch N x H x W, so shape \(24, 24, 3\) would be "
                                      r"24 images of 24 x 3 pixels; pass one colour image as a PIL image or as a "
                                      r"batch of one \(N x H x W x C"),
    (np.zeros((24, 24, 1), np.uint8), r"input: a 3-D array is a batch N x H x W"),
    (np.zeros((30, 40, 2), np.uint8), r"input: a 3-D array is a batch N x H x W, so shape \(30, 40, 2\)"),  # LA
    (torch.zeros(24, 24, 4), r"input: a 3-D tensor is a batch N x H x W.*\(N x C x H x W with N = 1\)"),
    (np.zeros((2, 3, 24, 24), np.uint8), r"input: a 4-D array is a batch N x H x W x C with C = 1, 2, 3 or 4 "
                                         r"\(gray, gray \+ alpha, RGB, RGBA\), got shape \(2, 3, 24, 24\)"),
    (torch.zeros(2, 24, 24, 3), r"input: a 4-D tensor is a batch N x C x H x W with C = 1, 2, 3 or 4"),
    (np.zeros((1, 1, 2, 24, 24), np.uint8), r"input: expected an image H x W or a batch .*\(1, 1, 2, 24, 24\)"),
    (np.zeros(24, np.uint8), r"input: expected an image H x W or a batch.*\(24,\)"),
    (np.array(["a.jpg", "b.jpg"]), r"input: a numpy array of <U5 is not an image; pass several paths or images as a "
                                   r"list \(list\(\.\.\.\) of the array\)"),
    (np.array([EYE, EYE[:20]], dtype=object), r"input: a numpy array of object is not an image"),
    # the caller's image (its shape, not a batch's)
    (np.zeros((24, 0), np.uint8), r"input: empty image\(s\) of 24 rows x 0 columns of pixels"),
    (np.zeros((2, 0, 30, 3), np.uint8), r"input: empty image\(s\) of 0 rows x 30 columns of pixels"),
    # values
    (np.zeros((24, 24), np.int32), r"input: dtype int32 is not supported; use uint8 \(0..255\), uint16 "),
    (np.zeros((24, 24), np.complex128), r"input: dtype complex128 is not supported"),
    (np.zeros((24, 24), bool), r"input: dtype bool is not supported"),
    (torch.zeros(24, 24, dtype=torch.int64), r"input: dtype int64 is not supported"),
    (torch.zeros(24, 24, dtype=torch.complex32), r"input: dtype torch.complex32 is not supported"),
    (torch.zeros(2, 24, 24).to_sparse(), r"input: a tensor of layout torch.sparse_coo is not supported; pass "
                                         r"\.to_dense\(\) of it"),
    ([EYE, torch.zeros(24, 24, device="meta")], r"input\[1\]: a tensor on the meta device holds no pixels"),
    (np.full((24, 24), 1.5), r"input: float images must hold finite values in 0..1, got 1.5"),
    (np.full((24, 24), 200.0), r"input: float images must hold finite values in 0..1"),
    (np.where(np.eye(24) > 0, 1.0001, 0.5).astype(np.float32), r"input: float images .*got 0\.5\.\.1\.0001$"),
    (np.where(np.eye(24) > 0, np.nan, 0.5), r"input: float images must hold finite values in 0..1, got 24 NaN or inf"),
    (np.full((24, 24), np.nan), r"input: float images must hold finite values in 0..1, got 576 NaN or infinite"),
    (torch.full((2, 24, 24), float("inf")), r"input\[0\]: float images must hold finite values in 0..1, got 576 NaN"),
    (np.stack([np.zeros((24, 24)), np.full((24, 24), 0.5), np.eye(24) * 3]), r"input\[2\]: float images .*got 0..3"),
    ([EYE, np.stack([np.zeros((24, 24)), np.full((24, 24), np.nan)])], r"input\[1\]\[1\]: float images .* 576 NaN"),
    (np.full((1, 30, 30), -0.5), r"input\[0\]: float images must hold finite values in 0..1, got -0.5..-0.5"),
    ([EYE, np.full((24, 24), 2.0)], r"input\[1\]: float images"),
    ([EYE, [np.zeros((24, 24), np.int16)]], r"input\[1\]\[0\]: dtype int16"),
    # PIL images
    (Image.fromarray(np.full((24, 24), 70000, np.int32)), r"input: PIL mode I images must hold values in 0..65535"),
    (Image.fromarray(np.full((24, 24), 2.0, np.float32)), r"input: PIL mode F images must hold values in "
                                                          r"0..1, got 2..2"),
    (Image.fromarray(np.full((24, 24), 1.0001, np.float32)), r"input: PIL mode F .* got 1\.0001\.\.1\.0001$"),
    (Image.fromarray(np.where(np.eye(24) > 0, np.nan, 0.5).astype(np.float32)), r"input: PIL mode F images must "
                                                                               r"hold .* got 24 NaN or infinite"),
    (Image.new("RGB", (24, 24)).convert("LAB"), r"input: PIL mode LAB is not supported"),
    (Image.new("HSV", (24, 24)), r"input: PIL mode HSV is not supported"),
    (closed_image(), r"input: cannot read the PIL image"),
    ([EYE, closed_image()], r"input\[1\]: cannot read the PIL image"),
    # paths
    ("", r"input: empty path"),
    ([EYE, ""], r"input\[1\]: empty path"),
    ("/dev/zero", r"not a regular file: /dev/zero"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad,message", BAD_INPUTS, ids=range(len(BAD_INPUTS)))
@pytest.mark.filterwarnings("error")  # the message itself, not a numpy warning on the way to it
def test_bad_inputs_name_the_input(backend, bad, message):
    with pytest.raises(ValueError, match=message):
        predict_proba(bad, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [42, b"bytes", {"image": EYE}, None])
def test_unsupported_types(backend, bad):
    with pytest.raises(TypeError, match=f"input: cannot read a {type(bad).__name__} as an image"):
        predict_proba(bad, backend=backend)
    with pytest.raises(TypeError, match=rf"input\[1\]: cannot read a {type(bad).__name__}"):
        predict_proba([EYE, bad], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixels_in_nested_lists_are_told_to_be_an_array(backend):
    with pytest.raises(TypeError, match=r"input\[0\]\[0\]: cannot read a int .*pass np.asarray\(rows, "
                                        r"dtype=np.uint8\) for 0..255, or a float array of 0..1\)$"):
        predict_proba(EYE.tolist(), backend=backend)
    rows = np.asarray(EYE, np.int64).tolist()  # the hint, followed, reads the image (a plain asarray: int64, refused)
    assert predict_proba(np.asarray(rows, dtype=np.uint8), backend=backend) == predict_proba(EYE, backend=backend)


def test_a_folder_without_images_of_its_own_names_its_subfolders_that_have_some(tmp_path):
    for sub in ("left", "right", ".thumbs", "notes"):
        (tmp_path / sub).mkdir()
        if sub != "notes":
            Image.fromarray(EYE).save(tmp_path / sub / "a.png")
    folder = re.escape(str(tmp_path))
    with pytest.raises(ValueError, match=rf"^input: no image files in folder {folder} \(its subfolders left/, right/ "
                                         r"hold images, which are not read: pass each as a folder of its own\)$"):
        predict_proba(tmp_path)
    for sub in ("left", "right"):
        (tmp_path / sub / "a.png").unlink()
    with pytest.raises(ValueError, match=rf"^input: no image files in folder {folder}$"):
        predict_proba(tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_list_gives_no_scores_and_a_generator_is_told_to_be_a_list(backend, tmp_path):
    for empty in ([], (), np.zeros((0, 24, 24), np.uint8), torch.zeros(0, 1, 24, 24), [[], np.zeros((0, 9, 9))]):
        p = predict_proba(empty, backend=backend)  # a frame without an eye
        assert p.shape == (0,) and p.dtype == np.float32
    left, right = np.zeros((0, 24, 24), np.uint8), np.stack([EYE, EYE[:, ::-1]])  # no left eye found in this frame
    both = predict_proba([left, right, []], backend=backend)
    assert both.shape == (2,) and np.array_equal(both, predict_proba(right, backend=backend))
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nowhere"):  # still no missing model
        predict_proba([], backend=backend, checkpoint=tmp_path / f"nowhere.{'onnx' if backend == 'onnx' else 'pt'}")
    with pytest.raises(TypeError, match=r"input: cannot read a generator as an image; .*pass list\(\.\.\.\) of it"):
        predict_proba((e for e in [EYE]), backend=backend)
    for upload in (io.BytesIO(b"..."), b"..."):  # a file object is an iterator too, but list() of it is no image
        with pytest.raises(TypeError, match=r"cannot read a (BytesIO|bytes) as an image; .*pass PIL.Image.open\(it\)"):
            predict_proba(upload, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_image_with_unreadable_exif_is_scored_as_stored(backend, tmp_path):
    Image.fromarray(EYE).save(tmp_path / "eye.png", exif=b"Exif\x00\x00not a TIFF header")
    expected = predict_proba(EYE, backend=backend)
    with Image.open(tmp_path / "eye.png") as image:
        assert predict_proba(image, backend=backend) == expected
    assert predict_proba(tmp_path / "eye.png", backend=backend) == expected


def test_reading_an_image_leaves_the_callers_warnings_alone(tmp_path):
    """No warnings.catch_warnings per image: it is not thread-safe (it drops filters other threads set meanwhile)
    and it resets which warnings were shown, so that a caller's warning shown once is shown again every frame."""
    import warnings
    Image.fromarray(EYE).save(tmp_path / "eye.png")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # each warning once per place it comes from
        for _ in range(3):
            warnings.warn("the caller's own warning")
            preprocess.load_image(tmp_path / "eye.png")
    assert len(seen) == 1


BAD_ARGUMENTS = [
    (dict(batch_size=0), ValueError, r"batch_size: expected a positive integer, got 0"),
    (dict(batch_size=-3), ValueError, r"batch_size: expected a positive integer"),
    (dict(batch_size=2.5), ValueError, r"batch_size: expected a positive integer, got 2.5"),
    (dict(batch_size=True), ValueError, r"batch_size: expected a positive integer, got True"),
    (dict(model="x"), TypeError, r"model: expected an eye_clf model .* got a str; pass a checkpoint file as "),
    (dict(model=torch.nn.Flatten()), TypeError, r"model: expected an eye_clf model .* got a Flatten"),
    (dict(backend="tf"), ValueError, r"backend: expected one of \('onnx', 'torch'\) or None, got 'tf'"),
    (dict(backend="onnx", tta=True), ValueError, r"tta: needs backend='torch'"),
    (dict(backend="onnx", checkpoint="some.pt"), ValueError, r"checkpoint: needs backend='torch'.*eye_clf export"),
    (dict(backend="torch", checkpoint="some.onnx"), ValueError, r"checkpoint: some.onnx is an ONNX model"),
    *[(dict(checkpoint="some.onnx", tta=False, **b), ValueError, r"tta: some.onnx is an ONNX model, whose graph holds "
       r"its mirror averaging as exported; tta works with a .pt checkpoint \(backend='torch'\) only")
      for b in ({}, dict(backend="onnx"), dict(backend="torch"))],
    (dict(checkpoint=""), ValueError, r"checkpoint: empty path"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD_ARGUMENTS)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        predict_proba(EYE, **kwargs)


# ---- PIL modes: a documented scaling for each accepted mode ------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_every_accepted_pil_mode_and_16_bit_arrays_read_the_same_eye(backend):
    g = Image.fromarray(EYE)
    as_l = predict_proba(g, backend=backend)
    same = {
        "I (16-bit scale)": Image.fromarray(EYE.astype(np.int32) * 257),
        "I;16": Image.fromarray(EYE.astype(np.uint16) * 257),
        "F (0..1)": Image.fromarray((EYE / 255).astype(np.float32)),
        "uint16 array": EYE.astype(np.uint16) * 257 + 128,  # the low byte does not count
        "uint16 tensor": torch.from_numpy(EYE.astype(np.uint16) * 257),
        **{mode: g.convert(mode) for mode in ("LA", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")},
        "La": g.convert("LA").convert("La"),
    }
    for name, image in same.items():
        assert predict_proba(image, backend=backend) == pytest.approx(as_l, abs=0.01), name
    binary = Image.fromarray(EYE > 128)
    assert binary.mode == "1"
    assert predict_proba(binary, backend=backend) == pytest.approx(
        predict_proba(Image.fromarray(np.where(EYE > 128, 255, 0).astype(np.uint8)), backend=backend), abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_truncated_pil_image_is_named(backend, tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(EYE).resize((240, 240)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[:400])
    with Image.open(path) as cut, pytest.raises(ValueError, match=r"input\[1\]: cannot read the PIL image \(image "
                                                                   r"file is truncated"):
        predict_proba([EYE, cut], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_bad_file_fails_the_whole_call_naming_it(tmp_path, backend):
    Image.fromarray(EYE).save(tmp_path / "ok.png")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(EYE).resize((240, 240)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:300])
    ok = tmp_path / "ok.png"
    for x, error, message in ((tmp_path / "gone.png", FileNotFoundError, f"image not found: {tmp_path / 'gone.png'}"),
                              ([ok, tmp_path / "text.png"], ValueError, f"not an image file: {tmp_path / 'text.png'}"),
                              ([ok, str(tmp_path / "cut.jpg")], ValueError, f"corrupt image {tmp_path / 'cut.jpg'}: ")):
        with pytest.raises(error, match="^" + re.escape(message)):
            predict_proba(x, backend=backend)


def test_a_file_that_cannot_be_read_is_an_os_error_not_a_corrupt_image(tmp_path, monkeypatch):
    """Permission or I/O trouble is no fault of the image: it stays an OSError (a service retries it, --skip-bad
    names it), where a corrupt file is a ValueError."""
    path = tmp_path / "eye.png"
    Image.fromarray(EYE).save(path)

    def denied(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))
    monkeypatch.setattr(preprocess.Image, "open", denied)
    for read in (preprocess.load_image, predict_proba):
        with pytest.raises(PermissionError, match=re.escape(str(path))):
            read(path)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_numpy_subclasses_are_arrays(backend):
    assert predict_proba(np.matrix(EYE), backend=backend) == predict_proba(EYE, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_subclasses_are_tensors(backend):
    from torchvision import tv_tensors
    batch = torch.from_numpy(np.stack([EYE, EYE[::-1].copy()]))
    assert np.array_equal(predict_proba(tv_tensors.Image(batch[:, None]), backend=backend),
                          predict_proba(batch, backend=backend))


def test_an_onnx_model_without_onnxruntime_says_what_to_install(monkeypatch, tmp_path):
    from eye_clf.predict import DEFAULT_ONNX
    model = tmp_path / "m.onnx"
    model.write_bytes(DEFAULT_ONNX.read_bytes())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    with pytest.raises(ModuleNotFoundError, match=r"m.onnx: an ONNX model needs onnxruntime: pip install 'eye-clf\[onnx\]'"):
        predict_proba(EYE, checkpoint=model)


# ---- files: size limits, non-regular files -----------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, before eye_clf refuses it
def test_huge_images_are_refused_from_the_header(backend, tmp_path):
    huge = png_header(tmp_path / "huge.png", 13000, 13000)  # 4 GB decoded at 16 bits, a few bytes on disk
    with pytest.raises(ValueError, match=r"image too large: .*huge.png is 13000 x 13000 pixels"):
        predict_proba(huge, backend=backend)
    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)  # above PIL's own decompression-bomb limit
    with pytest.raises(ValueError, match=r"image too large: .*bomb.png"):
        predict_proba([EYE, bomb], backend=backend)


def test_the_size_limit_is_4096_by_4096_pixels(tmp_path):
    Image.new("L", (4096, 4096), 128).save(tmp_path / "limit.png")
    assert 0 <= predict_proba(tmp_path / "limit.png") <= 1
    over = png_header(tmp_path / "over.png", 4097, 4096)
    with pytest.raises(ValueError, match=r"image too large: .*over.png is 4097 x 4096 pixels, more than the 16777216"):
        predict_proba(over)


def test_large_jpegs_are_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100 * 100)
    big = Image.fromarray(EYE).resize((300, 300), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    opened = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda im, mode, size: opened.append(size) or real_draft(im, mode, size))
    reduced = preprocess.load_image(tmp_path / "big.jpg")
    assert opened == [(75, 75)]  # 1/4 scale: 5625 pixels <= 10000
    assert np.abs(reduced.astype(int) - preprocess.to_gray24(big)).max() <= 8
    with pytest.raises(ValueError, match=r"image too large: .*big.png is 300 x 300 pixels, more than the 10000"):
        preprocess.load_image(tmp_path / "big.png")


def test_large_camera_jpegs_with_multi_picture_data_are_decoded_reduced_too(tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100 * 100)
    big = Image.fromarray(EYE).resize((300, 300), Image.Resampling.BICUBIC)
    big.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[big], quality=95)  # 2 pictures
    assert Image.open(tmp_path / "camera.jpg").format == "MPO"
    assert np.abs(preprocess.load_image(tmp_path / "camera.jpg").astype(int) - preprocess.to_gray24(big)).max() <= 8


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [(0, 15), (15, 0), (0, 0)])
def test_an_empty_pil_image_is_refused(backend, size):
    with pytest.raises(ValueError, match=rf"input\[1\]: empty image of {size[0]} x {size[1]} pixels"):
        predict_proba([EYE, Image.new("L", size)], backend=backend)


def test_non_regular_files_are_named(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(ValueError, match=r"not a regular file: .*pipe.png"):
        predict_proba(fifo)


# ---- checkpoints that must not load ------------------------------------------------------------------------

def corrupt(state_key=None, value=None, **top):
    def change(ckpt):
        if state_key:
            ckpt["state_dict"][state_key] = value(ckpt["state_dict"][state_key])
        for k, v in top.items():
            if v is None:
                del ckpt[k]
            elif callable(v):
                ckpt[k] = v(ckpt[k])
            else:
                ckpt[k] = v
        return ckpt
    return change


BAD_CHECKPOINTS = [
    (corrupt("head.weight", lambda w: w * float("nan")), r"weight head.weight holds NaN or infinite values"),
    (corrupt("backbone.0.0.weight", lambda w: w.index_fill(0, torch.tensor([0]), float("inf"))),
     r"weight backbone.0.0.weight holds NaN or infinite values"),
    (corrupt("temperature", lambda t: t * 0), r"temperature 0.0 is not > 0"),
    (corrupt("temperature", lambda t: -t), r"temperature -[\d.]+ is not > 0"),
    (corrupt("head.weight", lambda w: torch.zeros(1, 3)), r"weights do not fit the model .*size mismatch"),
    (corrupt(preprocessing=lambda p: {**p, "mean": 0.4}), r"preprocessing mean is 0.4, but this code .* 0.5"),
    (corrupt(preprocessing=lambda p: {**p, "size": 32}), r"preprocessing size is 32, but this code .* 24"),
    (corrupt(preprocessing=lambda p: {**p, "mode": "RGB"}), r"preprocessing mode is 'RGB'"),
    (corrupt(preprocessing=lambda p: {**p, "resize": "nearest"}), r"preprocessing resize is 'nearest', but this code "
                                                                  r"preprocesses with resize 'bilinear, antialiased'"),
    (corrupt(preprocessing=lambda p: {k: v for k, v in p.items() if k != "std"}), r"preprocessing std is None"),
    (corrupt(preprocessing=None), r"checkpoint has no preprocessing dict"),
    (corrupt(model=lambda m: {**m, "depth": 3}), r"weights do not fit the model .*depth"),
    (lambda ckpt: [ckpt], r"is not an eye_clf checkpoint"),
    (corrupt(state_dict=lambda sd: {**sd, "extra": 3}), r"state_dict entry 'extra' is not a tensor but int"),
]


@pytest.mark.parametrize("change,message", BAD_CHECKPOINTS, ids=range(len(BAD_CHECKPOINTS)))
def test_bad_checkpoints_are_refused_naming_the_file(tiny_ckpt, tmp_path, change, message):
    bad = tmp_path / "bad.pt"
    torch.save(change(torch.load(tiny_ckpt, weights_only=True)), bad)
    with pytest.raises(ValueError, match=rf"bad\.pt:? {message}"):
        predict_proba(EYE, checkpoint=bad)


def test_bad_checkpoint_at_the_command_line_is_one_line(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "nan.pt"
    torch.save(corrupt("head.weight", lambda w: w * float("nan"))(torch.load(tiny_ckpt, weights_only=True)), bad)
    Image.fromarray(EYE).save(tmp_path / "eye.png")
    with pytest.raises(SystemExit) as err:
        main(["predict", str(tmp_path / "eye.png"), "--checkpoint", str(bad)])
    assert str(err.value.code) == f"error: {bad}: weight head.weight holds NaN or infinite values"


def test_a_missing_checkpoint_file_says_so(tmp_path):
    from eye_clf import models
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        models.load_checkpoint(tmp_path / "nope.pt")


def test_a_truncated_checkpoint_is_named(tmp_path):
    """A cut copy: torch's zip reader fails with RuntimeError, or (under about 64 kB) with an OSError that names no
    file ("[Errno 22] Invalid argument")."""
    from eye_clf.predict import DEFAULT_CHECKPOINT
    for size in (5000, 200_000):
        cut = tmp_path / f"cut{size}.pt"
        cut.write_bytes(DEFAULT_CHECKPOINT.read_bytes()[:size])
        with pytest.raises(ValueError, match=rf"cut{size}.pt is not a readable eye_clf checkpoint"):
            predict_proba(EYE, checkpoint=cut)


@pytest.mark.parametrize("text", ["not a checkpoint", "error: could not download model\n", "hello", "."])
def test_unreadable_checkpoint_is_named(tmp_path, text):
    bad = tmp_path / "bad.pt"
    bad.write_text(text)  # torch's unpickler fails with RuntimeError, IndexError, KeyError, ... on such files
    with pytest.raises(ValueError, match="bad.pt is not a readable eye_clf checkpoint"):
        predict_proba(EYE, checkpoint=bad)
    onnx = tmp_path / "bad.onnx"
    onnx.write_text("not a model")
    with pytest.raises(ValueError, match="bad.onnx is not a readable ONNX model"):
        predict_proba(EYE, checkpoint=onnx)
