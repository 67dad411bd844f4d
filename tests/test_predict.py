import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import eye_clf
from eye_clf import data, models, predict
from eye_clf.__main__ import main
from eye_clf.export import export_onnx
from eye_clf.predict import DEFAULT_CHECKPOINT, predict_proba

from conftest import ATOL, smooth_image, synthetic

BRIGHT = np.clip(smooth_image(seed=1).astype(int) + 60, 0, 255).astype(np.uint8)  # looks "open" to the toy model
DARK = (smooth_image(seed=2) // 3).astype(np.uint8)
TOL = max(ATOL, 1e-5)  # the reference is the unfused torch model; predict_proba runs a fused one or onnxruntime


@pytest.fixture(scope="module")
def tiny_onnx(tiny_ckpt, tmp_path_factory):
    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(params=["torch", "onnx"])
def ck(request, tiny_ckpt):
    """predict_proba bound to the tiny checkpoint, run by each backend."""
    path = tiny_ckpt if request.param == "torch" else request.getfixturevalue("tiny_onnx")
    return lambda x, **kw: predict_proba(x, checkpoint=path, **kw)


@pytest.fixture(scope="module")
def unfused(tiny_ckpt):
    """The tiny checkpoint's model as trained: BatchNorm not folded, on CPU."""
    return models.load_checkpoint(tiny_ckpt)[0]


@pytest.fixture
def reference(unfused):
    """P(open) computed directly from the unfused model for 24x24 uint8 images."""
    return lambda images, tta=False: models.scores(unfused, np.stack(images), tta=tta)


def test_the_tiny_model_tells_bright_from_dark(ck):
    assert ck(BRIGHT) > 0.5 > ck(DARK)


def test_fused_model_and_onnx_match_the_unfused_model(tiny_ckpt, tiny_onnx, unfused):
    images, _ = synthetic(64, seed=9)
    fused, _ = predict.load_model(tiny_ckpt)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfused.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    expected = models.scores(unfused, images)
    assert np.allclose(predict_proba(images, model=fused), expected, atol=TOL)
    assert np.allclose(predict_proba(images, checkpoint=tiny_onnx), expected, atol=TOL)
    assert not np.allclose(expected, expected.mean(), atol=1e-3)  # the images do get different answers


def test_paths_and_folders(ck, reference, tmp_path):
    Image.fromarray(BRIGHT).save(tmp_path / "b.png")
    Image.fromarray(DARK).save(tmp_path / "a.png")
    Image.fromarray(BRIGHT).convert("RGB").save(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("ignored")
    expected = reference([DARK, BRIGHT, BRIGHT])  # sorted by name: a, b, c
    one = ck(str(tmp_path / "a.png"))
    assert isinstance(one, float) and one == pytest.approx(expected[0], abs=TOL)
    assert ck(tmp_path / "b.png") == pytest.approx(expected[1], abs=TOL)
    p = ck(tmp_path)
    assert isinstance(p, np.ndarray) and p.shape == (3,)
    assert np.allclose(p, expected, atol=TOL)
    assert np.allclose(ck(str(tmp_path)), p)


def test_folders_skip_hidden_files_and_follow_links(ck, tmp_path):
    folder, outside = tmp_path / "eyes", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    Image.fromarray(BRIGHT).save(folder / "eye.png")
    (folder / "._eye.png").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble")  # not an image
    (folder / ".hidden.png").write_bytes(b"not an image either")
    Image.fromarray(DARK).save(outside / "dark.png")
    (folder / "link_out.png").symlink_to(outside / "dark.png")
    (folder / "link_in.png").symlink_to(folder / "eye.png")
    assert [p.name for p in data.list_images(folder)] == ["eye.png", "link_in.png"]  # the studio serves these
    assert [p.name for p in data.list_images(folder, links_out=True)] == ["eye.png", "link_in.png", "link_out.png"]
    assert np.allclose(ck(folder), ck([folder / "eye.png", folder / "eye.png", outside / "dark.png"]))


def test_pil_images(ck, reference):
    expected = reference([BRIGHT])[0]
    assert ck(Image.fromarray(BRIGHT)) == pytest.approx(expected, abs=TOL)
    assert ck(Image.fromarray(BRIGHT).convert("RGB")) == pytest.approx(expected, abs=TOL)
    large = Image.fromarray(BRIGHT).resize((960, 720), Image.Resampling.BICUBIC).convert("RGB")
    assert ck(large) == pytest.approx(expected, abs=0.05)


def test_numpy_arrays(ck, reference):
    expected = reference([BRIGHT, DARK])
    assert ck(BRIGHT) == pytest.approx(expected[0], abs=TOL)
    assert ck(BRIGHT / 255.0) == pytest.approx(expected[0], abs=TOL)
    assert ck((BRIGHT / 255.0).astype(np.float32)) == pytest.approx(expected[0], abs=TOL)
    batch = ck(np.stack([BRIGHT, DARK]))
    assert isinstance(batch, np.ndarray) and np.allclose(batch, expected, atol=TOL)
    nhwc = np.stack([BRIGHT, DARK])[..., None]
    for colour in (nhwc, np.repeat(nhwc, 3, -1), np.concatenate([np.repeat(nhwc, 3, -1), nhwc * 0 + 255], -1),
                   np.concatenate([nhwc, nhwc * 0 + 9], -1)):  # gray + alpha (np.asarray of a PIL LA image)
        assert np.allclose(ck(colour), expected, atol=TOL)
    one_rgb = ck(np.repeat(BRIGHT[None, ..., None], 3, -1))  # one colour image: a batch of one
    assert isinstance(one_rgb, np.ndarray) and one_rgb == pytest.approx([expected[0]], abs=TOL)
    big = np.kron(BRIGHT, np.ones((5, 4), np.uint8))  # 120 x 96, non-square
    assert ck(big) == pytest.approx(expected[0], abs=0.05)


def test_torch_tensors(ck, reference):
    expected = reference([BRIGHT, DARK])
    t = torch.from_numpy(BRIGHT)
    assert ck(t) == pytest.approx(expected[0], abs=TOL)
    assert ck(t[None]) == pytest.approx([expected[0]], abs=TOL)                   # a batch of one, 1 x H x W
    assert ck(t.float() / 255) == pytest.approx(expected[0], abs=TOL)
    assert ck((t.float() / 255).half()) == pytest.approx(expected[0], abs=0.02)
    assert ck((t.float() / 255).bfloat16()) == pytest.approx(expected[0], abs=0.02)
    nchw = torch.from_numpy(np.stack([BRIGHT, DARK]))[:, None]
    assert np.allclose(ck(nchw), expected, atol=TOL)
    assert np.allclose(ck(nchw.expand(-1, 3, -1, -1).float() / 255), expected, atol=TOL)
    assert np.allclose(ck(torch.cat([nchw, nchw * 0 + 9], 1)), expected, atol=TOL)  # gray + alpha
    assert np.allclose(ck(torch.from_numpy(np.stack([BRIGHT, DARK]))), expected, atol=TOL)  # N x H x W


def test_a_3d_input_is_a_batch_for_numpy_and_torch_alike(ck, reference):
    for n in (1, 3, 4):  # 3 or 4 eyes are never read as one colour image
        images, _ = synthetic(n, seed=n)
        expected = reference(list(images))
        as_numpy, as_torch = ck(images), ck(torch.from_numpy(images))
        assert as_numpy.shape == as_torch.shape == (n,)
        assert np.array_equal(as_numpy, as_torch) and np.allclose(as_numpy, expected, atol=TOL)
    rgb = np.repeat(synthetic(3, seed=3)[0][..., None], 3, -1)  # N x H x W x C and N x C x H x W
    assert np.array_equal(ck(rgb), ck(torch.from_numpy(rgb).permute(0, 3, 1, 2)))


def test_list_of_mixed_inputs(ck, reference, tmp_path):
    Image.fromarray(DARK).save(tmp_path / "dark.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(BRIGHT).save(folder / f"{i}.png")
    items = [str(tmp_path / "dark.png"), Image.fromarray(BRIGHT), BRIGHT / 255, torch.from_numpy(DARK), folder,
             np.stack([DARK, BRIGHT])]
    p = ck(items)
    expected = reference([DARK, BRIGHT, BRIGHT, DARK, BRIGHT, BRIGHT, DARK, BRIGHT])
    assert isinstance(p, np.ndarray) and np.allclose(p, expected, atol=TOL)
    single = ck([BRIGHT])
    assert isinstance(single, np.ndarray) and single.shape == (1,)
    assert np.allclose(ck(tuple(items[:2])), expected[:2], atol=TOL)


def test_same_eye_any_form_same_answer(ck, tmp_path):
    images, _ = synthetic(6, seed=5)
    for i, im in enumerate(images):
        eye = np.clip(smooth_image(seed=i).astype(int) - 128 + int(im.mean()), 0, 255).astype(np.uint8)
        Image.fromarray(eye).save(tmp_path / "eye.png")
        as_path, as_array = ck(tmp_path / "eye.png"), ck(eye)
        upscaled_rgb = Image.fromarray(eye).resize((96, 96), Image.Resampling.BICUBIC).convert("RGB")
        assert as_path == as_array
        assert ck(upscaled_rgb) == pytest.approx(as_array, abs=0.05)


def test_batching(ck):
    images, _ = synthetic(50, seed=7)
    assert np.allclose(ck(images, batch_size=7), ck(images), atol=ATOL)
    assert np.allclose(ck(images, batch_size=np.int64(7)), ck(images), atol=ATOL)
    assert np.allclose(ck(np.concatenate([images] * 6), batch_size=np.uint8(200))[-50:], ck(images), atol=ATOL)


def test_prediction_while_another_thread_imports_torch(monkeypatch):
    """Half-way through ``import torch`` (another thread) sys.modules holds a torch without Tensor or nn yet."""
    import types
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    assert 0 <= predict_proba(BRIGHT, backend="onnx") <= 1


def test_tta_averages_the_mirror_image(tiny_ckpt, unfused):
    images, _ = synthetic(50, seed=7)
    x = data.to_tensor(images)
    with torch.no_grad():
        z = (unfused(x) + unfused(x.flip(-1))) / 2 / unfused.temperature  # calibrated logits
    mirrored = predict_proba(images, checkpoint=tiny_ckpt, tta=True)
    assert np.allclose(mirrored, torch.sigmoid(z).numpy(), atol=TOL)
    assert not np.allclose(mirrored, predict_proba(images, checkpoint=tiny_ckpt), atol=1e-4)


# ---- which model and which backend -------------------------------------------------------------------------

def test_model_and_checkpoint_arguments(tiny_ckpt, tiny_onnx, monkeypatch):
    images, _ = synthetic(10, seed=8)
    by_ckpt = predict_proba(images, checkpoint=tiny_ckpt)
    model, tta = eye_clf.load_model(tiny_ckpt)
    assert np.allclose(predict_proba(images, model=model), by_ckpt, atol=ATOL)
    assert np.allclose(predict_proba(images, checkpoint=str(tiny_ckpt)), by_ckpt, atol=ATOL)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tiny_ckpt)
    monkeypatch.setattr(predict, "DEFAULT_ONNX", tiny_onnx)
    for backend in (None, "onnx", "torch"):
        assert np.allclose(eye_clf.predict_proba(images, backend=backend), by_ckpt, atol=TOL), backend
    assert tta is False and model is eye_clf.load_model()[0]  # cached
    assert eye_clf.load_session() is eye_clf.load_session() and eye_clf.load_session(tiny_onnx) is not None


def test_a_loaded_model_predicts_with_its_checkpoints_mirror_averaging(tiny_ckpt, tmp_path):
    """model=load_model(ckpt)[0] predicts as checkpoint=ckpt does, TTA included; the caller's mode is kept."""
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["preprocessing"]["tta"] = True
    mirrored = tmp_path / "tta.pt"
    torch.save(ckpt, mirrored)
    images, _ = synthetic(10, seed=8)
    model, tta = eye_clf.load_model(mirrored, device="cpu")
    assert tta is True and model.tta is True and next(model.parameters()).device.type == "cpu"
    by_ckpt = predict_proba(images, checkpoint=mirrored)
    assert np.allclose(predict_proba(images, model=model), by_ckpt, atol=ATOL)
    assert not np.allclose(predict_proba(images, model=model, tta=False), by_ckpt, atol=1e-4)
    model.train()
    predict_proba(images, model=model)
    assert model.training  # predict_proba put it back in training mode
    model.eval()
    with pytest.raises(ValueError, match="model and checkpoint: pass one"):
        predict_proba(images, model=model, checkpoint=mirrored)
    with pytest.raises(ValueError, match="device: 'gpu0' is not a torch device"):
        eye_clf.load_model(mirrored, device="gpu0")
    with pytest.raises(ValueError, match="device: cuda:7 asked for, but torch sees"):
        eye_clf.load_model(mirrored, device="cuda:7")


def test_default_backend_is_onnx_unless_a_torch_only_argument_is_given(tiny_ckpt, tiny_onnx, monkeypatch):
    used = []
    monkeypatch.setattr(predict, "_onnx_scores", lambda *a: used.append("onnx") or np.zeros(1))
    monkeypatch.setattr(models, "scores", lambda *a: used.append("torch") or np.zeros(1))
    monkeypatch.setattr(predict, "DEFAULT_ONNX", tiny_onnx)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tiny_ckpt)
    predict_proba(BRIGHT)
    predict_proba(BRIGHT, checkpoint=tiny_onnx)
    predict_proba(BRIGHT, checkpoint=tiny_ckpt)
    predict_proba(BRIGHT, tta=True)
    predict_proba(BRIGHT, model=eye_clf.load_model()[0])
    predict_proba(BRIGHT, backend="torch")
    assert used == ["onnx", "onnx", "torch", "torch", "torch", "torch"]


def test_a_shipped_onnx_not_exported_from_the_shipped_checkpoint_is_refused(tiny_ckpt, tiny_onnx, tmp_path,
                                                                            monkeypatch):
    """An interrupted ship could leave the .pt of one run (its threshold) beside the .onnx of another."""
    other = tmp_path / "other.pt"
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["threshold"] = 0.9
    torch.save(ckpt, other)
    shipped = tmp_path / "shipped.onnx"  # a file no earlier test has loaded (loaded models are cached)
    shipped.write_bytes(tiny_onnx.read_bytes())
    monkeypatch.setattr(predict, "DEFAULT_ONNX", shipped)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", other)
    predict_proba(BRIGHT, checkpoint=shipped)  # named explicitly it is not checked, and does not skip the check
    with pytest.raises(ValueError, match=r"shipped.onnx was not exported from .*other.pt .*ship the run again, or "
                                         r"restore the pair \(in a checkout: `git checkout eye_clf/shipped`"):
        predict_proba(BRIGHT)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tiny_ckpt)
    assert predict_proba(BRIGHT) == predict_proba(BRIGHT, checkpoint=tiny_onnx)


def test_the_model_cache_keeps_the_four_last_used(tiny_ckpt, tmp_path):
    copies = [tmp_path / f"c{i}.pt" for i in range(6)]
    for copy in copies:
        copy.write_bytes(tiny_ckpt.read_bytes())
    predict._cache.clear()
    for copy in copies[:4]:
        predict.load_model(copy)
    predict.load_model(copies[0])  # used again: now the most recent of the four
    predict.load_model(copies[4])  # a fifth drops the least recently used, c1, not the first loaded, c0
    assert predict.CACHE_SIZE == 4 and [key[1].name for key in predict._cache] == ["c2.pt", "c3.pt", "c0.pt", "c4.pt"]


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_a_model_file_replaced_with_the_same_modification_time_is_loaded_again(suffix, tiny_ckpt, tiny_onnx, tmp_path):
    """``cp -p``, ``rsync -a`` or an unpacked archive keep the modification time of the file they put in place."""
    model = tmp_path / f"model{suffix}"
    model.write_bytes((tiny_ckpt if suffix == ".pt" else tiny_onnx).read_bytes())
    first = predict_proba(BRIGHT, checkpoint=model)
    ckpt = torch.load(tiny_ckpt, weights_only=False)
    ckpt["state_dict"]["head.bias"] += 3  # another model
    torch.save(ckpt, tmp_path / "other.pt")
    other = tmp_path / "other.pt" if suffix == ".pt" else export_onnx(tmp_path / "other.pt", tmp_path / "other.onnx")
    mtime = model.stat().st_mtime_ns
    os.utime(other, ns=(mtime, mtime))
    os.replace(other, model)
    assert model.stat().st_mtime_ns == mtime
    assert predict_proba(BRIGHT, checkpoint=model) != first
    assert sum(key[1] == model.resolve() for key in predict._cache) == 1  # the replaced one is no longer kept


def test_a_shipped_pair_replaced_keeps_one_session(tiny_ckpt, tmp_path, monkeypatch):
    """After a ship (both files replaced) the previous shipped session leaves the cache."""
    pt, graph = tmp_path / "eye_clf.pt", tmp_path / "eye_clf.onnx"
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", pt)
    monkeypatch.setattr(predict, "DEFAULT_ONNX", graph)
    for bias in (0, 3):
        ckpt = torch.load(tiny_ckpt, weights_only=False)
        ckpt["state_dict"]["head.bias"] += bias
        torch.save(ckpt, tmp_path / "new.pt")
        export_onnx(tmp_path / "new.pt", tmp_path / "new.onnx")
        os.replace(tmp_path / "new.pt", pt)
        os.replace(tmp_path / "new.onnx", graph)
        predict.load_session()
    assert sum(key[1] == graph.resolve() for key in predict._cache) == 1


def test_threads_that_predict_at_once_load_a_model_once(tiny_ckpt, tmp_path, monkeypatch):
    """A service calling predict_proba from several threads: the first calls share one load of the model."""
    import threading
    model = tmp_path / "shared.pt"
    model.write_bytes(tiny_ckpt.read_bytes())
    loads, real, entered, real_cached, all_in = [], predict._load_torch, set(), predict._cached, threading.Event()

    def counting(*args, **kwargs):
        entered.add(threading.get_ident())
        if len(entered) == 4:
            all_in.set()
        return real_cached(*args, **kwargs)

    def slow_load(path, device):  # returns only once every thread is in the cache lookup, however slow they start
        loads.append(path)
        all_in.wait(60)
        return real(path, device)
    monkeypatch.setattr(predict, "_cached", counting)
    monkeypatch.setattr(predict, "_load_torch", slow_load)
    results = []
    threads = [threading.Thread(target=lambda: results.append(predict_proba(BRIGHT, checkpoint=model)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all_in.is_set() and len(loads) == 1 and len(results) == 4 and len(set(results)) == 1


def test_loading_a_model_holds_up_no_prediction_with_another(tiny_ckpt, tmp_path, monkeypatch):
    import threading
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    for path in (first, second):
        path.write_bytes(tiny_ckpt.read_bytes())
    expected = predict_proba(BRIGHT, checkpoint=first)  # loaded and cached
    loading, release, done, real = threading.Event(), threading.Event(), threading.Event(), predict._load_torch

    def held_load(path, device):
        loading.set()
        release.wait()  # until the test has seen whether the other prediction finished meanwhile
        return real(path, device)
    monkeypatch.setattr(predict, "_load_torch", held_load)
    slow = threading.Thread(target=predict_proba, args=(BRIGHT,), kwargs=dict(checkpoint=second))
    slow.start()
    results = []
    fast = threading.Thread(target=lambda: (results.append(predict_proba(BRIGHT, checkpoint=first)), done.set()))
    try:
        assert loading.wait(timeout=60)
        fast.start()
        finished_during_the_load = done.wait(timeout=60)  # a hang guard: it finishes in milliseconds
    finally:
        release.set()
    slow.join()
    fast.join()
    assert finished_during_the_load and results == [expected]


def test_predictions_run_safely_while_other_models_load(tiny_ckpt, tmp_path):
    """Loading must not patch torch for the whole process (torch.fx tracing does): a service keeps predicting."""
    import threading
    expected = predict_proba(BRIGHT, checkpoint=tiny_ckpt, backend="torch")
    errors, results, stop = [], [], threading.Event()

    def predict_meanwhile():
        while not stop.is_set():
            try:
                results.append(predict_proba(BRIGHT, checkpoint=tiny_ckpt, backend="torch"))
            except Exception as err:  # noqa: BLE001 (any failure is the finding)
                errors.append(repr(err))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads finely
    worker = threading.Thread(target=predict_meanwhile)
    worker.start()
    try:
        for i in range(20):
            copy = tmp_path / f"m{i}.pt"
            copy.write_bytes(tiny_ckpt.read_bytes())
            predict.load_model(copy)
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(interval)
    assert errors == [] and results and set(results) == {expected}


def test_a_failed_load_is_tried_again(tiny_ckpt, tmp_path):
    import os
    path = tmp_path / "later.pt"
    path.write_text("not yet")
    with pytest.raises(ValueError, match="not a readable eye_clf checkpoint"):
        predict.load_model(path)
    stamp = path.stat().st_mtime_ns
    path.write_bytes(tiny_ckpt.read_bytes())
    os.utime(path, ns=(stamp, stamp))  # the same cache key as the failed load
    assert predict_proba(BRIGHT, checkpoint=path) == pytest.approx(predict_proba(BRIGHT, checkpoint=tiny_ckpt))


def test_missing_default_checkpoint_is_a_helpful_error(tmp_path, monkeypatch, tiny_ckpt):
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tmp_path / "nowhere" / "eye_clf.pt")
    monkeypatch.setattr(predict, "DEFAULT_ONNX", tmp_path / "nowhere" / "eye_clf.onnx")
    incomplete = r" \(an incomplete install: `git checkout eye_clf/shipped` in a checkout, else reinstall eye-clf"
    with pytest.raises(FileNotFoundError, match=rf"^shipped model not found: .*nowhere.eye_clf.pt{incomplete}\)$"):
        predict_proba(BRIGHT, backend="torch")
    with pytest.raises(FileNotFoundError, match=rf"^shipped model not found: .*nowhere.eye_clf.onnx{incomplete}\)$"):
        predict_proba(BRIGHT, backend="onnx")
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*other.pt .*python -m eye_clf train"):
        predict_proba(BRIGHT, checkpoint=tmp_path / "other.pt")
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", tiny_ckpt)  # the other of the pair is there: it says so
    with pytest.raises(FileNotFoundError, match=rf"eye_clf.onnx{incomplete}; the shipped {tiny_ckpt.name} is "
                                                r"there, for backend='torch'\)$"):
        predict_proba(BRIGHT)
    assert 0 <= predict_proba(BRIGHT, backend="torch") <= 1


def test_torch_only_arguments_on_the_onnx_backend_say_why(tiny_ckpt):
    model = predict.load_model(tiny_ckpt)[0]
    with pytest.raises(ValueError, match=r"^model: needs backend='torch' \(a torch model runs on torch\)$"):
        predict_proba(BRIGHT, model=model, backend="onnx")
    with pytest.raises(ValueError, match=r"^tta: needs backend='torch' \(the ONNX graph holds its checkpoint's "
                                         r"mirror averaging as exported\)$"):
        predict_proba(BRIGHT, tta=True, backend="onnx")


def test_a_run_folder_given_as_the_checkpoint_is_named(tiny_ckpt, tmp_path):
    (tmp_path / "eye_clf.pt").write_bytes(tiny_ckpt.read_bytes())
    for backend in ("torch", None, "onnx"):  # (onnx: not "needs backend='torch'", as if the folder were a .pt)
        with pytest.raises(ValueError, match=rf"checkpoint: {tmp_path} is a folder, not a model file; the run's "
                                             rf"model is {tmp_path / 'eye_clf.pt'}"):
            predict_proba(BRIGHT, checkpoint=tmp_path, backend=backend)
    out = run_python(BLOCK_TORCH + f"""
import numpy as np
import eye_clf
try:
    eye_clf.predict_proba({EYE}, checkpoint={str(tmp_path)!r})  # onnxruntime alone: not "needs torch"
except ValueError as err:
    print(err)
""").strip()
    assert out == f"checkpoint: {tmp_path} is a folder, not a model file; the run's model is {tmp_path / 'eye_clf.pt'}"


# ---- what a prediction imports -----------------------------------------------------------------------------

HEAVY = ("sklearn", "scipy", "pandas", "tqdm", "cleanlab", "matplotlib", "openpyxl")
BLOCK_TORCH = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, BlockTorch())
"""


def run_python(code):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         cwd=data.REPO_ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_prediction_imports_no_training_library(backend):
    loaded = run_python(f"""
        import sys
        import numpy as np
        import eye_clf
        eye_clf.predict_proba(np.zeros((24, 24), np.uint8), backend={backend!r})
        print(" ".join(sorted(sys.modules)))
        """).split()
    heavy = [m for m in HEAVY if m in loaded and not (backend == "torch" and m == "tqdm")]  # torch imports tqdm
    assert heavy == []
    assert ("torch" in loaded) == (backend == "torch")


def test_onnx_prediction_runs_where_torch_cannot_be_imported(tmp_path):
    Image.fromarray(BRIGHT).save(tmp_path / "b.png")
    Image.fromarray(DARK).save(tmp_path / "d.png")
    inputs = f"[{str(tmp_path / 'b.png')!r}, {str(tmp_path)!r}, Image.fromarray(DARK), DARK / 255, np.stack([DARK])]"
    out = run_python(BLOCK_TORCH + f"""
import numpy as np
from PIL import Image
import eye_clf
DARK = np.array({DARK.tolist()}, np.uint8)
print(eye_clf.predict_proba({inputs}).tolist())
try:
    import torch
except ImportError as err:
    print(err)
""").splitlines()
    expected = predict_proba([tmp_path / "b.png", tmp_path, Image.fromarray(DARK), DARK / 255, np.stack([DARK])],
                             backend="onnx")
    assert np.allclose(eval(out[0]), expected, atol=1e-7)
    assert out[1] == "blocked: torch"


def install_advice(call, onnxruntime=True):
    """The ModuleNotFoundError message of ``call`` (Python source) with torch, and unless ``onnxruntime`` also
    onnxruntime, not installed as importlib sees it."""
    return run_python(BLOCK_TORCH + ("" if onnxruntime else 'sys.modules["onnxruntime"] = None\n') + f"""
import numpy as np
import eye_clf
try:
    {call}
except ModuleNotFoundError as err:
    print(err)
""").strip()


NO_BACKEND = ("predicting needs onnxruntime or torch (blocked: torch): pip install 'eye-clf[onnx]' (small, CPU only) "
              "or 'eye-clf[torch]'")
EYE = "np.zeros((24, 24), np.uint8)"


def test_prediction_without_any_backend_says_what_to_install():
    assert install_advice(f"eye_clf.predict_proba({EYE})", onnxruntime=False) == NO_BACKEND
    assert install_advice("eye_clf.predict_proba([])", onnxruntime=False) == NO_BACKEND  # no eye yet: said all the same
    assert install_advice(f"eye_clf.predict_proba({EYE}, checkpoint='model.pt')", onnxruntime=False).startswith(
        "checkpoint='model.pt' (not an .onnx file) needs torch, which is missing")  # not for onnx


def test_an_onnx_prediction_without_onnxruntime_offers_torch_only_when_it_is_there():
    need = f"{predict.DEFAULT_ONNX}: an ONNX model needs onnxruntime: pip install 'eye-clf[onnx]'"
    assert install_advice(f"eye_clf.predict_proba({EYE}, backend='onnx')", onnxruntime=False) == need
    assert install_advice("eye_clf.load_session()", onnxruntime=False) == need
    assert install_advice("eye_clf.load_model()", onnxruntime=False).endswith(
        "predict with onnxruntime alone (pip install 'eye-clf[onnx]')")
    out = run_python(f"""
        import sys
        sys.modules["onnxruntime"] = None  # torch installed, onnxruntime not
        import numpy as np
        import eye_clf
        try:
            eye_clf.predict_proba({EYE}, backend='onnx')
        except ModuleNotFoundError as err:
            print(err)
        """).strip()
    assert out == need + ", or predict with backend='torch'"


@pytest.mark.parametrize("value, threads", [(" 1 ", 1), ("2", 2), ("", 0), ("two", 0)])
def test_onnxruntime_threads_follow_omp_num_threads(monkeypatch, value, threads):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert predict._load_onnx(predict.DEFAULT_ONNX).get_session_options().intra_op_num_threads == threads


def test_load_session_of_a_pt_checkpoint_says_torch_reads_it(tiny_ckpt):
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tiny_ckpt))} is a .pt checkpoint, which torch reads "
                                         r"\(load_model, or predict_proba's checkpoint=\); load_session reads ONNX"):
        predict.load_session(tiny_ckpt)


def test_an_unpacked_install_is_needed_for_the_shipped_model(tmp_path, monkeypatch):
    archive = tmp_path / "app.zip"  # eye_clf imported from a zip archive: its files are not on disk
    archive.write_bytes(b"PK")
    monkeypatch.setattr(predict, "SHIPPED", archive / "eye_clf" / "shipped")
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", predict.SHIPPED / "eye_clf.pt")
    monkeypatch.setattr(predict, "DEFAULT_ONNX", predict.SHIPPED / "eye_clf.onnx")
    for backend in predict.BACKENDS:
        with pytest.raises(FileNotFoundError, match=rf"^shipped model not found: eye_clf is imported from "
                                                    rf"{re.escape(str(archive / 'eye_clf'))}, which is not a folder "
                                                    r"\(a zip archive\?\); .*install eye-clf with pip$"):
            predict_proba(BRIGHT, backend=backend)


def test_the_threshold_without_any_backend_says_what_to_install():
    assert install_advice("eye_clf.recommended_threshold()", onnxruntime=False) == NO_BACKEND


def test_torch_only_prediction_without_torch_says_to_install_torch():
    assert install_advice(f"eye_clf.predict_proba({EYE}, backend='torch')") == (
        "backend='torch' needs torch, which is missing (blocked: torch): pip install "
        "'eye-clf[torch]', or predict with the ONNX model")
    assert install_advice(f"eye_clf.predict_proba({EYE}, tta=False)").startswith(
        "tta= needs torch, which is missing")


def test_an_onnxruntime_that_fails_to_import_is_named_with_its_error(tmp_path):
    broken = tmp_path / "onnxruntime"  # installed, but its library cannot be loaded (a missing system library, say)
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("libonnxruntime.so.1: cannot open shared object file")')
    out = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        import eye_clf
        for call in (lambda: eye_clf.predict_proba({EYE}), eye_clf.recommended_threshold):
            try:
                call()
            except ImportError as err:
                print(err)
        print(eye_clf.predict_proba({EYE}, backend="torch"))
        """).splitlines()
    assert out[0] == out[1] == (f"{predict.DEFAULT_ONNX}: onnxruntime is installed but fails to import (ImportError: "
                                "libonnxruntime.so.1: cannot open shared object file): reinstall it (pip install "
                                "--force-reinstall onnxruntime), or predict with backend='torch'")
    assert 0 <= float(out[2]) <= 1


def test_load_model_without_torch_says_what_to_install():
    assert install_advice("eye_clf.load_model()").startswith(
        "load_model needs torch (blocked: torch): pip install 'eye-clf[torch]'")


RUNTIME_ONLY = """
import sys
class Block:  # what pip install 'eye-clf[onnx]' lacks
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "onnx", "onnxscript", *%r):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
from eye_clf.__main__ import main
main(sys.argv[1:])
""" % (HEAVY,)


def run_runtime_cli(tmp_path, *argv):
    script = tmp_path / "cli.py"
    script.write_text(RUNTIME_ONLY)
    return subprocess.run([sys.executable, str(script), *map(str, argv)], capture_output=True, text=True,
                          cwd=data.REPO_ROOT)


def test_predict_command_runs_with_the_runtime_alone(tmp_path, capsys):
    (tmp_path / "eyes").mkdir()
    Image.fromarray(BRIGHT).save(tmp_path / "eyes" / "b.png")
    Image.fromarray(DARK).save(tmp_path / "eyes" / "d,1.png")  # a comma: the CSV quotes the name
    out = run_runtime_cli(tmp_path, "predict", tmp_path / "eyes")
    assert out.returncode == 0, out.stderr
    main(["predict", str(tmp_path / "eyes")])  # every library installed
    full = capsys.readouterr()
    assert out.stdout == full.out and out.stderr == full.err  # the same rows and "decision: ... (threshold)" line
    assert out.stdout.splitlines()[2].startswith(f'"{tmp_path / "eyes" / "d,1.png"}",')
    out = run_runtime_cli(tmp_path, "predict", tmp_path / "eyes", "--out", tmp_path / "p.csv")
    assert out.returncode == 0 and (tmp_path / "p.csv").read_text() == full.out


def test_predict_command_takes_an_onnx_checkpoint(tmp_path, tiny_ckpt, tiny_onnx, capsys):
    Image.fromarray(BRIGHT).save(tmp_path / "b.png")
    Image.fromarray(DARK).save(tmp_path / "d.png")
    rows = {}
    for model in (tiny_onnx, tiny_ckpt):
        main(["predict", str(tmp_path), "--checkpoint", str(model)])
        said = capsys.readouterr()
        rows[model.suffix] = [line.split(",") for line in said.out.splitlines()[1:]]
        assert said.err == "decision: open when P(open) >= 0.500000 (0.5: the checkpoint records no threshold)\n"
    assert [r[0] for r in rows[".onnx"]] == [str(tmp_path / "b.png"), str(tmp_path / "d.png")]
    assert np.allclose([float(r[1]) for r in rows[".onnx"]], [float(r[1]) for r in rows[".pt"]], atol=1e-4)
    assert [r[2] for r in rows[".onnx"]] == [r[2] for r in rows[".pt"]] == ["open", "closed"]


def test_the_command_without_the_training_libraries_names_what_to_install(tmp_path):
    out = run_runtime_cli(tmp_path, "--help")
    assert out.returncode == 0 and "{predict}" in out.stdout
    assert ("Only predict runs here: train, ship, export, evaluate, cv, label, audit need the training libraries "
            "(blocked: ") in " ".join(out.stdout.split())
    out = run_runtime_cli(tmp_path, "train", "--epochs", "3")
    assert out.returncode == 1
    assert re.fullmatch(r"error: train needs the training libraries \(blocked: \w+\): pip install 'eye-clf\[train\]'"
                        r"\n", out.stderr)
    Image.fromarray(BRIGHT).save(tmp_path / "x.png")
    out = run_runtime_cli(tmp_path, "predict", tmp_path / "x.png", "--checkpoint", DEFAULT_CHECKPOINT)
    assert out.returncode == 1 and "torch" in out.stderr and "pip install 'eye-clf[torch]'" in out.stderr
    run = tmp_path / "run"  # a run folder: named as one, not taken for a .pt that needs torch
    run.mkdir()
    (run / "eye_clf.pt").write_bytes(DEFAULT_CHECKPOINT.read_bytes())
    out = run_runtime_cli(tmp_path, "predict", tmp_path / "x.png", "--checkpoint", run)
    assert out.returncode == 1 and out.stderr == (f"error: checkpoint: {run} is a folder, not a model file; the run's "
                                                  f"model is {run / 'eye_clf.pt'}\n")


def test_the_shipped_model_tells_open_from_closed_on_the_real_images(real_root):
    """A sanity check of the shipped weights (not a quality figure: it trained on these images)."""
    from eye_clf import metrics
    labels = data.read_labels(data.REPO_ROOT / data.LABELS_NAME).iloc[::10]  # 400 of the 4000
    files = [real_root / "EyesDataset" / name for name in labels["img_name"]]
    for backend in ("onnx", "torch"):
        p = predict_proba(files, backend=backend)
        assert metrics.accuracy(labels["target"].to_numpy(), p, eye_clf.recommended_threshold()) > 0.95
        assert metrics.eer(labels["target"].to_numpy(), p)[0] < 0.05


def test_the_shipped_pair_is_checked_again_when_only_the_checkpoint_changes(tiny_ckpt, tmp_path, monkeypatch):
    """An interrupted ship that replaced eye_clf.pt alone: a running process must not go on serving the old
    graph as if it were the new checkpoint's."""
    pt, graph = tmp_path / "eye_clf.pt", tmp_path / "eye_clf.onnx"
    pt.write_bytes(tiny_ckpt.read_bytes())
    export_onnx(pt, graph)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", pt)
    monkeypatch.setattr(predict, "DEFAULT_ONNX", graph)
    predict_proba(BRIGHT, backend="onnx")  # the pair matches: loaded and cached
    ckpt = torch.load(pt, weights_only=False)
    ckpt["threshold"] = 0.9
    torch.save(ckpt, tmp_path / "new.pt")
    os.replace(tmp_path / "new.pt", pt)
    with pytest.raises(ValueError, match="was not exported from"):
        predict_proba(BRIGHT, backend="onnx")


def test_a_tensor_that_requires_grad_is_scored(tiny_ckpt):
    """The output of a torch pipeline often still tracks gradients."""
    t = torch.from_numpy(BRIGHT).float().div(255).requires_grad_()
    assert predict_proba(t, checkpoint=tiny_ckpt) == predict_proba(BRIGHT, checkpoint=tiny_ckpt)


def test_float_images_round_to_the_nearest_grey_level():
    a = (BRIGHT / 255 - 0.4 / 255).astype(np.float32)  # just below each level
    assert np.array_equal(predict._from_array(a, "x")[0][0], BRIGHT)


def test_a_large_batch_is_normalized_a_batch_at_a_time(unfused):
    """float32 copies of the whole uint8 input would take 4x its memory, and more."""
    import tracemalloc
    images = np.random.default_rng(0).integers(0, 256, (20000, 24, 24), dtype=np.uint8)  # 11.5 MB
    expected = np.concatenate([models.scores(unfused, images[i:i + 1000]) for i in range(0, len(images), 1000)])
    tracemalloc.start()
    p = models.scores(unfused, images)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.allclose(p, expected, atol=1e-6) and peak < images.nbytes


def test_onnx_sessions_do_not_spin_between_calls(tiny_onnx):
    """A loop of one call per frame would keep a core busy with onnxruntime's default spin-waiting."""
    options = predict.load_session(tiny_onnx).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
