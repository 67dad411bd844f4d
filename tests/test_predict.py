import numpy as np
import pytest
import torch
from PIL import Image

import eye_clf
from eye_clf import data, predict, train
from eye_clf.predict import predict_proba

from conftest import ATOL, smooth_image, synthetic

BRIGHT = np.clip(smooth_image(seed=1).astype(int) + 60, 0, 255).astype(np.uint8)  # looks "open" to the toy model
DARK = (smooth_image(seed=2) // 3).astype(np.uint8)


@pytest.fixture
def ck(tiny_ckpt):
    """predict_proba bound to the tiny checkpoint."""
    return lambda x, **kw: predict_proba(x, checkpoint=tiny_ckpt, **kw)


def reference(model, images):
    """P(open) computed directly from the model for 24x24 uint8 images."""
    return train.scores(model, np.stack(images))


def test_the_tiny_model_tells_bright_from_dark(ck):
    assert ck(BRIGHT) > 0.5 > ck(DARK)


def test_paths_and_folders(ck, tiny_model, tmp_path):
    Image.fromarray(BRIGHT).save(tmp_path / "b.png")
    Image.fromarray(DARK).save(tmp_path / "a.png")
    Image.fromarray(BRIGHT).convert("RGB").save(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("ignored")
    expected = reference(tiny_model, [DARK, BRIGHT, BRIGHT])  # sorted by name: a, b, c
    one = ck(str(tmp_path / "a.png"))
    assert isinstance(one, float) and one == pytest.approx(expected[0], abs=ATOL)
    assert ck(tmp_path / "b.png") == pytest.approx(expected[1], abs=ATOL)
    p = ck(tmp_path)
    assert isinstance(p, np.ndarray) and p.shape == (3,)
    assert np.allclose(p, expected, atol=ATOL)
    assert np.allclose(ck(str(tmp_path)), p)


def test_pil_images(ck, tiny_model):
    expected = reference(tiny_model, [BRIGHT])[0]
    assert ck(Image.fromarray(BRIGHT)) == pytest.approx(expected, abs=ATOL)
    assert ck(Image.fromarray(BRIGHT).convert("RGB")) == pytest.approx(expected, abs=ATOL)
    large = Image.fromarray(BRIGHT).resize((960, 720), Image.Resampling.BICUBIC).convert("RGB")
    assert ck(large) == pytest.approx(expected, abs=0.05)


def test_numpy_arrays(ck, tiny_model):
    expected = reference(tiny_model, [BRIGHT, DARK])
    assert ck(BRIGHT) == pytest.approx(expected[0], abs=ATOL)
    assert ck(BRIGHT[..., None]) == pytest.approx(expected[0], abs=ATOL)
    assert ck(np.repeat(BRIGHT[..., None], 3, -1)) == pytest.approx(expected[0], abs=ATOL)
    rgba = np.dstack([BRIGHT] * 3 + [np.full_like(BRIGHT, 255)])
    assert ck(rgba) == pytest.approx(expected[0], abs=ATOL)
    assert ck(BRIGHT / 255.0) == pytest.approx(expected[0], abs=ATOL)
    assert ck((BRIGHT / 255.0).astype(np.float32)) == pytest.approx(expected[0], abs=ATOL)
    batch = ck(np.stack([BRIGHT, DARK]))
    assert isinstance(batch, np.ndarray) and np.allclose(batch, expected, atol=ATOL)
    rgb_batch = np.repeat(np.stack([BRIGHT, DARK])[..., None], 3, -1)
    assert np.allclose(ck(rgb_batch), expected, atol=ATOL)
    big = np.kron(BRIGHT, np.ones((5, 4), np.uint8))  # 120 x 96, non-square
    assert ck(big) == pytest.approx(expected[0], abs=0.05)


def test_torch_tensors(ck, tiny_model):
    expected = reference(tiny_model, [BRIGHT, DARK])
    t = torch.from_numpy(BRIGHT)
    assert ck(t) == pytest.approx(expected[0], abs=ATOL)
    assert ck(t[None]) == pytest.approx(expected[0], abs=ATOL)                    # 1 x H x W
    assert ck(t.expand(3, -1, -1)) == pytest.approx(expected[0], abs=ATOL)        # 3 x H x W
    assert ck(t.float() / 255) == pytest.approx(expected[0], abs=ATOL)
    assert ck((t.float() / 255).half()) == pytest.approx(expected[0], abs=0.02)
    nchw = torch.from_numpy(np.stack([BRIGHT, DARK]))[:, None]
    assert np.allclose(ck(nchw), expected, atol=ATOL)
    assert np.allclose(ck(nchw.expand(-1, 3, -1, -1).float() / 255), expected, atol=ATOL)
    assert np.allclose(ck(torch.from_numpy(np.stack([BRIGHT, DARK]))), expected, atol=ATOL)  # N x H x W


def test_list_of_mixed_inputs(ck, tiny_model, tmp_path):
    Image.fromarray(DARK).save(tmp_path / "dark.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(BRIGHT).save(folder / f"{i}.png")
    items = [str(tmp_path / "dark.png"), Image.fromarray(BRIGHT), BRIGHT / 255, torch.from_numpy(DARK), folder,
             np.stack([DARK, BRIGHT])]
    p = ck(items)
    expected = reference(tiny_model, [DARK, BRIGHT, BRIGHT, DARK, BRIGHT, BRIGHT, DARK, BRIGHT])
    assert isinstance(p, np.ndarray) and np.allclose(p, expected, atol=ATOL)
    single = ck([BRIGHT])
    assert isinstance(single, np.ndarray) and single.shape == (1,)
    assert np.allclose(ck(tuple(items[:2])), expected[:2], atol=ATOL)


def test_same_eye_any_form_same_answer(ck, tmp_path):
    images, _ = synthetic(6, seed=5)
    for i, im in enumerate(images):
        eye = np.clip(smooth_image(seed=i).astype(int) - 128 + int(im.mean()), 0, 255).astype(np.uint8)
        Image.fromarray(eye).save(tmp_path / "eye.png")
        as_path, as_array = ck(tmp_path / "eye.png"), ck(eye)
        upscaled_rgb = Image.fromarray(eye).resize((96, 96), Image.Resampling.BICUBIC).convert("RGB")
        assert as_path == as_array
        assert ck(upscaled_rgb) == pytest.approx(as_array, abs=0.05)


def test_batching_and_tta(ck, tiny_model):
    images, _ = synthetic(50, seed=7)
    assert np.allclose(ck(images, batch_size=7), ck(images), atol=ATOL)
    x = data.to_tensor(images).to(next(tiny_model.parameters()).device)
    with torch.no_grad():
        z = (tiny_model(x) + tiny_model(x.flip(-1))) / 2 / tiny_model.temperature  # calibrated logits
    assert np.allclose(ck(images, tta=True), torch.sigmoid(z).cpu().numpy(), atol=ATOL)


# ---- which model -------------------------------------------------------------------------------------------

def test_model_and_checkpoint_arguments(ck, tiny_model, tiny_ckpt, monkeypatch):
    images, _ = synthetic(10, seed=8)
    by_ckpt = ck(images)
    assert np.allclose(predict_proba(images, model=tiny_model), by_ckpt, atol=ATOL)
    assert np.allclose(predict_proba(images, checkpoint=str(tiny_ckpt)), by_ckpt, atol=ATOL)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tiny_ckpt)
    assert np.allclose(eye_clf.predict_proba(images), by_ckpt, atol=ATOL)
    model, tta = eye_clf.load_model()
    assert tta is False and model is eye_clf.load_model(tiny_ckpt)[0]  # cached


def test_missing_default_checkpoint_is_a_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tmp_path / "nowhere" / "eye_clf.pt")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nowhere.*python -m eye_clf train"):
        predict_proba(BRIGHT)
    with pytest.raises(FileNotFoundError, match="other.pt"):
        predict_proba(BRIGHT, checkpoint=tmp_path / "other.pt")


# ---- bad input: a clear error naming the input -------------------------------------------------------------

def test_bad_files(ck, tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found.*missing.png"):
        ck(tmp_path / "missing.png")
    (tmp_path / "notes.jpg").write_text("this is text")
    with pytest.raises(ValueError, match="not an image file.*notes.jpg"):
        ck(str(tmp_path / "notes.jpg"))
    noise = np.random.default_rng(0).integers(0, 256, (80, 80), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:800])
    with pytest.raises(ValueError, match="corrupt image.*cut.jpg"):
        ck(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="corrupt image.*cut.jpg"):
        ck([BRIGHT, tmp_path / "cut.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files in folder.*empty"):
        ck(tmp_path / "empty")


@pytest.mark.parametrize("bad,message", [
    (np.zeros((1, 1, 2, 24, 24), np.uint8), r"input: expected an image or a batch.*\(1, 1, 2, 24, 24\)"),
    (torch.zeros(1, 1, 2, 24, 24), r"input: expected an image or a batch"),
    (np.zeros((24, 24, 2), np.uint8), r"input: expected an H x W or H x W x C.*\(24, 24, 2\)"),
    (np.zeros((2, 24, 24, 2), np.uint8), r"input\[0\]: expected an H x W or H x W x C.*\(24, 24, 2\)"),
    (np.zeros(24, np.uint8), r"input: expected an image or a batch.*\(24,\)"),
    (np.zeros((24, 0), np.uint8), r"input: empty image"),
    (np.zeros((0, 24, 24), np.uint8), r"input: empty batch"),
    (np.zeros((24, 24), np.int32), r"input: dtype int32 is not supported"),
    (np.zeros((24, 24), np.complex128), r"input: dtype complex128 is not supported"),
    (np.zeros((24, 24), bool), r"input: dtype bool is not supported"),
    (torch.zeros(24, 24, dtype=torch.int64), r"input: dtype int64 is not supported"),
    (np.full((24, 24), 1.5), r"input: float images must hold finite values in 0..1, got 1.5"),
    (np.full((24, 24), -0.1), r"input: float images must hold finite values in 0..1"),
    (np.full((24, 24), 200.0), r"input: float images must hold finite values in 0..1"),
    (np.where(np.eye(24) > 0, np.nan, 0.5), r"input: float images must hold finite values in 0..1"),
    (np.full((24, 24), np.inf, np.float32), r"input: float images must hold finite values in 0..1"),
    ([BRIGHT, np.full((24, 24), 2.0)], r"input\[1\]: float images"),
    ([BRIGHT, [np.zeros((24, 24), np.int16)]], r"input\[1\]\[0\]: dtype int16"),
    ([], r"input: empty list"),
])
def test_bad_arrays_name_the_input(ck, bad, message):
    with pytest.raises(ValueError, match=message):
        ck(bad)


@pytest.mark.parametrize("bad", [42, b"bytes", {"image": BRIGHT}, None])
def test_unsupported_types(ck, bad):
    with pytest.raises(TypeError, match=f"input: cannot read a {type(bad).__name__} as an image"):
        ck(bad)
    with pytest.raises(TypeError, match=rf"input\[1\]: cannot read a {type(bad).__name__}"):
        ck([BRIGHT, bad])


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is not a readable eye_clf checkpoint"):
        predict_proba(np.zeros((24, 24), np.uint8), checkpoint=bad)
