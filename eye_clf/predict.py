"""``predict_proba``: P(open) for paths, folders, PIL images, numpy arrays, torch tensors or lists of them, computed
by onnxruntime (numpy + Pillow + onnxruntime, no torch) or by torch. Inputs are read and checked the same way,
without torch, whichever backend runs."""
import importlib.util
import json
import os
import sys
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from .files import sha256
from .preprocess import IMG_SIZE, list_images, load_image, subfolder_hint, to_gray24, value_range

SHIPPED = Path(str(resources.files("eye_clf") / "shipped"))  # package data; plots_checkpoints/ links to its files
DEFAULT_CHECKPOINT = SHIPPED / "eye_clf.pt"
DEFAULT_ONNX = SHIPPED / "eye_clf.onnx"
TRAIN_ONE, EXPORT_ONE = "train one with `python -m eye_clf train`", "export one with `python -m eye_clf export`"
BACKENDS = ("onnx", "torch")
CHANNELS = (1, 2, 3, 4)  # gray, gray + alpha, RGB, RGBA
CACHE_SIZE = 4  # loaded models kept, most recently used first
_cache = OrderedDict()
_cache_lock = threading.Lock()  # guards _cache and _loading, never held while a model loads
_loading = {}  # one lock per model being loaded: threads (a service) load each model once, and the callers of
# models already loaded do not wait for it


def _stamp(path):
    """What tells a model file from one that replaced it: modification and change times, inode and size (a copy
    that keeps the modification time, as ``cp -p`` or an unpacked archive, still gets a new inode and ctime)."""
    st = path.stat()
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size


def _cached(backend, path, load, paired=None):
    """The model of ``path`` from the cache, else ``load(path)`` cached; ``paired``: the stamp of another file the
    model depends on (backend: "onnx", "shipped onnx", ("torch", device))."""
    key = (backend, path, _stamp(path), paired)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _cache_lock:
            if key in _cache:  # loaded by the thread this one waited for
                return _cache[key]
        try:
            model = load(path)
            try:
                now = _stamp(path)
            except OSError:  # removed meanwhile: served, not cached
                now = None
            with _cache_lock:
                if now == key[2]:  # still the file on disk, so no successor another thread loaded is dropped
                    for stale in [k for k in _cache if k[:2] == key[:2]]:  # its earlier version, or a chmod
                        del _cache[stale]
                    _cache[key] = model
                    while len(_cache) > CACHE_SIZE:
                        _cache.popitem(last=False)
        finally:  # after the model is in the cache, so that no later caller loads it again
            with _cache_lock:
                if _loading.get(key) is loading:  # (after a failed load a later caller may have made its own)
                    del _loading[key]
        return model


def model_file(path, how="", name="checkpoint"):
    """``path`` as a Path if it is a file; else a FileNotFoundError, or for a folder (a run folder, say) a ValueError
    that names the model in it. ``how``: how to get a model, added to the not-found message; ``name``: the
    argument's name in the messages."""
    path = Path(path)
    if path.is_file():  # (every prediction passes here: one stat)
        return path
    if path.is_dir():
        inside = path / "eye_clf.pt"
        raise ValueError(f"{name}: {path} is a folder, not a model file"
                         + (f"; the run's model is {inside}" if inside.is_file() else ""))
    raise FileNotFoundError(f"{name} not found: {path}" + (f" ({how})" if how else ""))


def _refuse_folder(checkpoint):
    """A run folder given as ``checkpoint`` is refused by name, with the model in it, whichever backend is there."""
    if checkpoint is not None and str(checkpoint) != "" and Path(checkpoint).is_dir():  # ("" is refused as empty)
        model_file(checkpoint)


def _model_path(checkpoint, default, how):
    """The model file of a ``checkpoint`` argument, or the shipped ``default`` when it is None (missing: an
    incomplete install, not a model to make)."""
    if checkpoint is not None and str(checkpoint) == "":
        raise ValueError("checkpoint: empty path")
    if checkpoint is not None:
        return model_file(Path(checkpoint).resolve(), how)
    path = Path(default).resolve()
    if path.is_file():  # (every prediction with the shipped model passes here: one stat; the rest explains a miss)
        return path
    if not SHIPPED.parent.is_dir():
        raise FileNotFoundError(f"shipped model not found: eye_clf is imported from {SHIPPED.parent}, which is not a "
                                "folder (a zip archive?); its model files must be on disk: install eye-clf with pip")
    other = DEFAULT_ONNX if default == DEFAULT_CHECKPOINT else DEFAULT_CHECKPOINT
    there = (f"; the shipped {other.name} is there, for backend='{'onnx' if other == DEFAULT_ONNX else 'torch'}'"
             if other.is_file() else "")
    return model_file(path, "an incomplete install: `git checkout eye_clf/shipped` in a checkout, else reinstall "
                      f"eye-clf{there}", "shipped model")


def _load_torch(path, device):
    from .models import fold_batchnorm, load_checkpoint
    model = fold_batchnorm(load_checkpoint(path)[0])
    return model.to(device), model.tta


def load_model(checkpoint=None, device=None):
    """The torch model of a checkpoint (default: the shipped one) on ``device`` (default: CUDA when present, else
    CPU), with each BatchNorm folded into the convolution before it (``models.fold_batchnorm``; same outputs, faster
    inference). Returns
    ``(model, tta)``, tta (also ``model.tta``): whether the checkpoint predicts with mirror averaging. The last
    CACHE_SIZE models loaded are kept and shared between callers, threads included (each loads once): do not move
    or train them."""
    try:
        from .models import torch_device
    except ImportError as err:
        raise ModuleNotFoundError(f"load_model needs torch ({err}): pip install 'eye-clf[torch]'; load_session and "
                                  "predict_proba predict with onnxruntime alone"
                                  + ("" if _installed("onnxruntime") else " (pip install 'eye-clf[onnx]')")) from None

    try:
        device = torch_device(device)
    except ValueError as err:
        raise ValueError(f"device: {err}") from None
    path = _model_path(checkpoint, DEFAULT_CHECKPOINT, TRAIN_ONE)
    return _cached(("torch", str(device)), path, lambda p: _load_torch(p, device))


def _load_onnx(path):
    try:
        import onnxruntime as ort
    except ImportError as err:
        if not _installed("onnxruntime"):
            raise ModuleNotFoundError(f"{path}: an ONNX model needs onnxruntime: pip install 'eye-clf[onnx]'"
                                      + (", or predict with backend='torch'" if _installed("torch") else "")) from None
        raise ImportError(f"{path}: onnxruntime is installed but fails to import ({type(err).__name__}: {err}): "
                          "reinstall it (pip install --force-reinstall onnxruntime)"
                          + (", or predict with backend='torch'" if _installed("torch") else "")) from None

    opts = ort.SessionOptions()
    # idle threads sleep instead of spinning: a loop of one call per frame would otherwise keep a core busy
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit():  # the thread count torch honours too (0: onnxruntime's default)
        opts.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{path} is not a readable ONNX model ({type(err).__name__})") from None
    inp, out = session.get_inputs(), session.get_outputs()
    if ([(i.name, i.type, i.shape[1:]) for i in inp] != [("images", "tensor(uint8)", [IMG_SIZE, IMG_SIZE])]
            or [o.name for o in out] != ["p_open"]):
        raise ValueError(f"{path} is not an eye_clf ONNX model (input images: uint8 N x {IMG_SIZE} x {IMG_SIZE}, "
                         "output p_open); export one with `python -m eye_clf export`")
    return session


def _load_shipped_onnx(path):
    """The shipped session, refused when the shipped checkpoint beside it is not the one it was exported from."""
    session = _load_onnx(path)
    if DEFAULT_CHECKPOINT.is_file():
        made_from = session.get_modelmeta().custom_metadata_map.get("eye_clf.checkpoint_sha256")
        if made_from != sha256(DEFAULT_CHECKPOINT):
            raise ValueError(f"{path} was not exported from {DEFAULT_CHECKPOINT} (an interrupted `eye-clf ship`?): "
                             "ship the run again, or restore the pair (in a checkout: `git checkout eye_clf/shipped`; "
                             "installed: reinstall eye-clf)")
    return session


def load_session(checkpoint=None):
    """The onnxruntime session of an ``.onnx`` file (default: the shipped ``eye_clf.onnx``, checked against the
    shipped checkpoint), on CPU; it honours $OMP_NUM_THREADS, and its idle threads sleep (no spin-waiting between
    calls). The last CACHE_SIZE models loaded are kept."""
    path = _model_path(checkpoint, DEFAULT_ONNX, EXPORT_ONE)
    if checkpoint is not None and path.suffix.lower() == ".pt":
        raise ValueError(f"{path} is a .pt checkpoint, which torch reads (load_model, or predict_proba's "
                         "checkpoint=); load_session reads ONNX files (`python -m eye_clf export` writes one)")
    if checkpoint is not None:
        return _cached("onnx", path, _load_onnx)
    pair = _stamp(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else None
    return _cached("shipped onnx", path, _load_shipped_onnx, pair)  # checked again when either file changes


def onnx_metadata(checkpoint=None):
    """The ``eye_clf.*`` metadata of an exported graph (default: the shipped one), keys without the prefix, JSON
    values decoded (``checkpoint_sha256`` stays a string); the file is loaded and checked first (``load_session``)."""
    props = load_session(checkpoint).get_modelmeta().custom_metadata_map
    return {k.removeprefix("eye_clf."): v if k.endswith("sha256") else json.loads(v)
            for k, v in props.items() if k.startswith("eye_clf.")}


def recommended_threshold(checkpoint=None):
    """The threshold on P(open) that a model recommends (an eye is open when P(open) >= it): the EER point of its
    run's validation images. None when the model records none; 0.5 is then the natural choice, as the models are
    calibrated (in cross-validation either gives the same accuracy to a tenth of a point: README section 5).
    ``checkpoint``: a .pt or .onnx file; by default the shipped model, read from its ONNX graph when onnxruntime is
    installed (the model predict_proba runs then), else from its .pt checkpoint."""
    _refuse_folder(checkpoint)
    onnx_file = checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx"
    if onnx_file or checkpoint is None and _installed("onnxruntime"):
        value = onnx_metadata(checkpoint).get("threshold")
    else:
        try:
            from .models import load_checkpoint
        except ImportError as err:
            if checkpoint is None:
                raise ModuleNotFoundError(_no_backend(err)) from None
            raise ModuleNotFoundError(f"checkpoint: a .pt checkpoint needs torch ({err}): pip install "
                                      "'eye-clf[torch]', or pass its .onnx export") from None
        path = _model_path(checkpoint, DEFAULT_CHECKPOINT, TRAIN_ONE)
        value = load_checkpoint(path)[1].get("threshold")
    return None if value is None else float(value)


def _installed(name):
    """Whether module ``name`` can be imported, as importlib sees it (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _no_backend(err):
    return (f"predicting needs onnxruntime or torch ({err}): pip install 'eye-clf[onnx]' (small, CPU only) or "
            "'eye-clf[torch]'")


def _is_torch(x):
    """A torch tensor (subclasses too, e.g. torchvision's tv_tensors), told without importing torch."""
    tensor = getattr(sys.modules.get("torch"), "Tensor", None)  # None while another thread is importing torch
    return tensor is not None and isinstance(x, tensor)


def torch_only(model, checkpoint, tta):
    """The arguments given that only the torch backend takes."""
    onnx_file = checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx"
    return [name for name, given in (("model", model is not None), ("tta", tta is not None),
                                     ("checkpoint", checkpoint is not None and not onnx_file)) if given]


def _choose_backend(backend, model, checkpoint, tta):
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend: expected one of {BACKENDS} or None, got {backend!r}")
    if model is not None:
        module = getattr(getattr(sys.modules.get("torch"), "nn", None), "Module", None)
        if module is None or not isinstance(model, module) or not hasattr(model, "temperature"):
            raise TypeError(f"model: expected an eye_clf model (eye_clf.load_model(path)[0], or one that "
                            f"eye_clf.models.build_model made), got a {type(model).__name__}; pass a checkpoint "
                            "file as checkpoint=")
        if checkpoint is not None:
            raise ValueError("model and checkpoint: pass one of them (the model would be used, the checkpoint not)")
    _refuse_folder(checkpoint)
    onnx_file = checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx"
    if onnx_file and tta is not None:
        raise ValueError(f"tta: {checkpoint} is an ONNX model, whose graph holds its mirror averaging as exported; "
                         "tta works with a .pt checkpoint (backend='torch') only")
    only = torch_only(model, checkpoint, tta)
    if backend is None:
        onnx_ok = onnx_file or _installed("onnxruntime")
        backend = "onnx" if onnx_ok and not only else "torch"
    if backend == "onnx" and only:
        why = {"model": "a torch model runs on torch",
               "tta": "the ONNX graph holds its checkpoint's mirror averaging as exported",
               "checkpoint": "a .pt checkpoint runs on torch; `python -m eye_clf export` converts it to ONNX"}
        raise ValueError(f"{only[0]}: needs backend='torch' ({why[only[0]]})")
    if backend == "torch" and onnx_file:
        raise ValueError(f"checkpoint: {checkpoint} is an ONNX model; use backend='onnx' or a .pt checkpoint")
    return backend


def _gray(a, name, single):
    """An N x H x W or N x H x W x C (C in CHANNELS) uint8, uint16 (0..65535, scaled by 1/257 as 16-bit files are)
    or float 0..1 array as N x 24 x 24 uint8; an error names the first bad image of a batch (``name[i]``), or
    ``name`` for a ``single`` image."""
    if min(a.shape[1:3]) == 0:
        raise ValueError(f"{name}: empty image(s) of {a.shape[1]} rows x {a.shape[2]} columns of pixels")
    if a.dtype == np.uint16:
        a = np.round(a / 257).astype(np.uint8)
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name}: dtype {a.dtype} is not supported; use uint8 (0..255), uint16 (0..65535) or "
                             "float (0..1)")
        flat = a.reshape(len(a), -1)
        bad = ~((flat >= 0) & (flat <= 1)).all(1)  # NaN compares False: out of range too
        if bad.any():
            i = int(bad.argmax())
            where = name if single else f"{name}[{i}]"
            raise ValueError(f"{where}: float images must hold finite values in 0..1, got {value_range(flat[i])}")
        a = np.round(a * 255).astype(np.uint8)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.shape[1:] == (IMG_SIZE, IMG_SIZE):
        return a
    return np.stack([to_gray24(Image.fromarray(im), name if single else f"{name}[{i}]") for i, im in enumerate(a)])


def _from_array(x, name):
    """numpy or torch: H x W is one image; N x H x W a batch of gray images; N x H x W x C (numpy) or
    N x C x H x W (torch) a batch of colour images. Returns (N x 24 x 24 uint8, is_single)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "USO":  # numpy text or objects: not pixels
        raise ValueError(f"{name}: a numpy array of {x.dtype} is not an image; pass several paths or images as a "
                         "list (list(...) of the array), one image as a numeric array")
    if isinstance(x, np.ndarray):
        x = np.asarray(x)  # subclasses (np.matrix, a masked array) as their values
    torch_layout = _is_torch(x)
    kind, batch4 = ("tensor", "N x C x H x W") if torch_layout else ("array", "N x H x W x C")
    shape = tuple(x.shape)
    if x.ndim == 3 and shape[-1] in CHANNELS:
        raise ValueError(
            f"{name}: a 3-D {kind} is a batch N x H x W, so shape {shape} would be {shape[0]} images of "
            f"{shape[1]} x {shape[2]} pixels; pass one colour image as a PIL image or as a batch of one "
            f"({batch4} with N = 1), gray images as H x W or N x H x W")
    if x.ndim == 4 and shape[1 if torch_layout else 3] not in CHANNELS:
        raise ValueError(f"{name}: a 4-D {kind} is a batch {batch4} with C = 1, 2, 3 or 4 (gray, gray + alpha, RGB, "
                         f"RGBA), got shape {shape}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{name}: expected an image H x W or a batch N x H x W or {batch4}, got shape {shape}")
    if x.ndim >= 3 and shape[0] == 0:  # no eye in this frame: no images
        return np.empty((0, IMG_SIZE, IMG_SIZE), np.uint8), False
    if torch_layout:
        x = _torch_to_numpy(x, name)
        if x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
    return _gray(x[None] if x.ndim == 2 else x, name, x.ndim == 2), x.ndim == 2


def _torch_to_numpy(t, name):
    if t.is_meta:
        raise ValueError(f"{name}: a tensor on the meta device holds no pixels")
    if t.layout != sys.modules["torch"].strided:
        raise ValueError(f"{name}: a tensor of layout {t.layout} is not supported; pass .to_dense() of it")
    t = t.detach().cpu()
    try:
        return t.numpy()
    except TypeError:  # dtypes numpy lacks: bfloat16 and float8 become float32, the rest is refused
        if t.is_floating_point():
            return t.float().numpy()
        raise ValueError(f"{name}: dtype {t.dtype} is not supported; use uint8 (0..255), uint16 (0..65535) or "
                         "float (0..1)") from None


def _to_images(x, name="input"):
    """One input as a list of N x 24 x 24 uint8 arrays; returns (arrays, is_single)."""
    if isinstance(x, (str, os.PathLike)):
        if str(x) == "":
            raise ValueError(f"{name}: empty path")
        path = Path(x)
        if path.is_dir():
            files = list_images(path, links_out=True)
            if not files:
                raise ValueError(f"{name}: no image files in folder {path}{subfolder_hint(path)}")
            return [np.stack([load_image(f) for f in files])], False
        return [load_image(path)[None]], True
    if isinstance(x, Image.Image):
        return [to_gray24(x, name)[None]], True
    if isinstance(x, np.ndarray) or _is_torch(x):
        a, single = _from_array(x, name)
        return [a], single
    if isinstance(x, (list, tuple)):  # an empty one adds no images
        return [a for i, item in enumerate(x) for a in _to_images(item, f"{name}[{i}]")[0]], False
    hint = (" (for a file object or bytes, pass PIL.Image.open(it), or PIL.Image.open(io.BytesIO(data)))"
            if hasattr(x, "read") or isinstance(x, (bytes, bytearray, memoryview)) else
            " (for an iterator such as a generator, pass list(...) of it)" if hasattr(x, "__next__") else
            " (pixel values in nested lists? pass np.asarray(rows, dtype=np.uint8) for 0..255, or a float array of "
            "0..1)" if isinstance(x, (int, float)) else "")
    raise TypeError(f"{name}: cannot read a {type(x).__name__} as an image; pass a path, folder, PIL image, "
                    f"numpy array, torch tensor or a list of these{hint}")


def _onnx_scores(session, images, batch_size):
    return np.concatenate([session.run(["p_open"], {"images": images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def predict_proba(x, model=None, checkpoint=None, batch_size=64, tta=None, backend=None):
    """P(open) of eye image(s): a float for a single image (a path to a file, a PIL image, an H x W array), else a
    numpy array (float32) of one value per image (a folder, a batch, a list, even of one image; an empty list or
    batch adds none, also inside a list). Open or closed: compare with ``recommended_threshold()``.

    ``x``: an image path; a folder (its image files sorted by name, symlinks followed; hidden files are skipped);
    a PIL image; a numpy array or torch tensor; or a list of these. Arrays and tensors follow one rule: **H x W is
    one image, N x H x W is a batch of gray images** (a 3 x 24 x 24 tensor is three eyes, never one colour image), and
    colour batches are 4-D: numpy N x H x W x C, torch N x C x H x W (C = 1 to 4: gray, gray + alpha, RGB, RGBA).
    A 3-D input whose last axis has 1 to 4 entries is refused as ambiguous: pass one colour image as a PIL image or
    a batch of one.
    Values: uint8 0..255, uint16 0..65535 (scaled by 1/257, as 16-bit files) or float 0..1 (bfloat16 and float16
    too). Any size and colour: images become 24x24 grayscale as in training (PIL modes: see ``eye_clf.preprocess``).
    Files above ``preprocess.MAX_PIXELS`` are refused (JPEGs are first decoded at a reduced scale, if that fits).

    ``backend``: ``"onnx"`` (onnxruntime, no torch needed) or ``"torch"``. The default is onnx when onnxruntime
    is installed and no torch-only argument is given (``model``, ``tta`` or a ``.pt`` checkpoint), else torch:
    both give the same P(open) to 1e-4 on CPU (CUDA may use TF32); onnxruntime starts faster and needs far less
    memory. ``checkpoint``: a ``.pt`` (torch) or ``.onnx`` file replacing the shipped model; ``model``: an eye_clf
    torch model (``load_model(path)[0]``, or one ``eye_clf.models.build_model`` made) in its place, predicting
    with its checkpoint's mirror averaging (``model.tta``); ``tta``: override the checkpoint's mirror averaging
    (torch only);
    ``batch_size``: images per forward pass (on CPU, 64 runs torch about 1.5x faster than 1024, whose activations
    overflow the cache; onnxruntime is level: ``scripts/benchmark.py --batch-size``).
    """
    backend = _choose_backend(backend, model, checkpoint, tta)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)  # numpy integers overflow (uint8) or are refused by torch.split
    arrays, single = _to_images(x)
    if backend == "onnx":
        session = load_session(checkpoint)
    else:
        try:
            from .models import scores
        except ImportError as err:
            if not _installed("onnxruntime") and not torch_only(model, checkpoint, tta):
                raise ModuleNotFoundError(_no_backend(err)) from None
            only = torch_only(model, checkpoint, tta)
            cause = (f"checkpoint='{checkpoint}' (not an .onnx file)" if only[:1] == ["checkpoint"] else
                     f"{only[0]}=" if only else "backend='torch'")
            raise ModuleNotFoundError(f"{cause} needs torch, which is missing ({err}): pip install "
                                      "'eye-clf[torch]', or predict with the ONNX model") from None
        if model is None:
            model, _ = load_model(checkpoint)
        tta = getattr(model, "tta", False) if tta is None else tta
    images = np.ascontiguousarray(np.concatenate([np.empty((0, IMG_SIZE, IMG_SIZE), np.uint8), *arrays]))
    if not len(images):  # nothing to score (no eye in this frame); the model is loaded all the same, so that a
        return np.empty(0, np.float32)  # missing file or backend fails now, not at the first eye
    p = _onnx_scores(session, images, batch_size) if backend == "onnx" else scores(model, images, batch_size, bool(tta))
    return float(p[0]) if single else p
