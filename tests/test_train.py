from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision

from eye_clf import data, metrics, models, train
from eye_clf.train import TrainConfig, fit

from conftest import ATOL, synthetic

CFG = TrainConfig(arch="eyenet", width=8, epochs=4, batch_size=16, lr=3e-3, augment=0, patience=100, label_smoothing=0,
                  refit=False, tta=False, device="cpu")  # CUDA (bf16, cuDNN) is not bit-exact between runs


@pytest.fixture(scope="module")
def toy():
    images, targets = synthetic(200)
    return images, targets, *data.split(targets, seed=0)[:2]


def val_loss(model, images, targets):
    z = models.logits(model, data.to_tensor(images))
    return torch.nn.functional.binary_cross_entropy_with_logits(z, torch.as_tensor(targets).float()).item()


def test_fit_learns_a_separable_task(toy):
    images, targets, tr, va = toy
    model, history = fit(images, targets, tr, va, CFG, progress=False)
    assert len(history) == CFG.epochs
    keys = {"epoch", "lr", "seconds"} | {f"{s}_{m}" for s in ("train", "val") for m in ("loss", "accuracy", "eer")}
    assert all(set(row) == keys for row in history)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    p = models.scores(model, images[va])
    assert metrics.accuracy(targets[va], p) > 0.9 and metrics.eer(targets[va], p)[0] < 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] == pytest.approx(metrics.accuracy(targets[va], p))


@pytest.mark.parametrize("batch_augment", [False, True])
def test_fit_is_seeded_with_either_augmentation(toy, batch_augment):
    images, targets, tr, va = toy
    cfg = replace(CFG, epochs=2, augment=1.0, batch_augment=batch_augment, device="cpu")  # CUDA: not bit-exact
    a = fit(images, targets, tr, va, cfg, progress=False)[1]
    b = fit(images, targets, tr, va, cfg, progress=False)[1]
    c = fit(images, targets, tr, va, replace(cfg, seed=1), progress=False)[1]
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
    assert [r["val_loss"] for r in a] != [r["val_loss"] for r in c]


def test_fit_with_batch_augmentation_learns_and_keeps_the_channels_last_layout(toy):
    images, targets, tr, va = toy
    model, _ = fit(images, targets, tr, va, replace(CFG, augment=0.5, batch_augment=True, epochs=6),
                   progress=False)
    assert metrics.eer(targets[va], models.scores(model, images[va]))[0] < 0.1
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)


def misleading(toy):
    """The toy task with inverted validation labels: the better the model learns, the worse its val loss."""
    images, targets, tr, va = toy
    targets = targets.copy()
    targets[va] = 1 - targets[va]
    return images, targets, tr, va


def test_soft_labels_train_on_the_soft_targets_and_validate_on_the_labels(toy):
    images, targets, tr, va = toy
    cfg = replace(CFG, soft_labels=True)
    with pytest.raises(ValueError, match="soft_labels and soft targets"):
        fit(images, targets, tr, va, cfg, progress=False)
    with pytest.raises(ValueError, match="soft_labels and soft targets"):
        fit(images, targets, tr, va, CFG, progress=False, soft=targets.astype(float))
    _, h_hard = fit(images, targets, tr, va, CFG, progress=False)
    _, h_same = fit(images, targets, tr, va, cfg, progress=False, soft=targets.astype(float))
    assert [r["val_loss"] for r in h_same] == [r["val_loss"] for r in h_hard]  # 0/1 soft targets: the same run
    flipped = np.where(np.isin(np.arange(len(targets)), va), targets, 1 - targets).astype(float)
    _, history = fit(images, targets, tr, va, cfg, progress=False, soft=flipped)
    assert history[-1]["train_accuracy"] > 0.9  # it learns the training targets it is given...
    assert history[-1]["val_accuracy"] < 0.1  # ...and is validated against the labels


def test_ema_weights_are_the_ones_validated_and_returned(toy):
    images, targets, tr, va = toy
    _, h_raw = fit(images, targets, tr, va, CFG, progress=False)
    _, h_slow = fit(images, targets, tr, va, replace(CFG, ema=0.9999), progress=False)
    # a decay this close to 1 keeps the average near the weights after the first step: it learns almost nothing
    assert h_raw[-1]["val_accuracy"] > 0.9 > h_slow[-1]["val_accuracy"]
    assert h_slow[-1]["train_accuracy"] > 0.9  # while the raw weights it averages did learn
    model, _ = fit(images, targets, tr, va, replace(CFG, ema=0.9), progress=False)
    assert val_loss(model, images[va], targets[va]) < 0.3


def test_mixup_blends_images_and_targets_and_still_learns(toy, monkeypatch):
    images, targets, tr, va = toy
    model, history = fit(images, targets, tr, va, replace(CFG, mixup=0.4), progress=False)
    assert metrics.eer(targets[va], models.scores(model, images[va]))[0] < 0.1
    # blend weight 0: every image and target is its shuffled partner's, so the targets must move with the images
    # (shuffled images under unshuffled targets are random labels: nothing to learn)
    monkeypatch.setattr(np.random, "beta", lambda a, b: 0.0)
    _, h_zero = fit(images, targets, tr, va, replace(CFG, mixup=1.0), progress=False)
    assert h_zero[-1]["val_accuracy"] > 0.9
    with pytest.raises(train.ConfigError, match="mixup: must be >= 0"):
        TrainConfig(mixup=-0.1)


def test_sam_gradient_is_the_gradient_at_the_ascended_weights_and_restores_them():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    x, y = torch.randn(8, 3), torch.rand(8, 1)

    def loss_fn():
        return torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
    loss_fn().backward()
    g = [p.grad.clone() for p in model.parameters()]
    w = [p.detach().clone() for p in model.parameters()]
    stats = [b.clone() for b in model[1].buffers()]
    rho = 0.3
    train.sam_gradient(model, loss_fn, rho)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), w))  # the weights are put back
    assert all(torch.equal(a, b) for a, b in zip(list(model[1].buffers())[:2], stats[:2]))  # running mean, var
    assert model[1].momentum == 0.1
    # the reference: the same loss at w + rho * g / ||g||, on a copy
    norm = torch.sqrt(sum((a ** 2).sum() for a in g))
    ascended = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    ascended.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, a in zip(ascended.parameters(), g):
            p.add_(rho * a / norm)
    torch.nn.functional.binary_cross_entropy_with_logits(ascended(x), y).backward()
    for p, q in zip(model.parameters(), ascended.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert not torch.allclose(torch.cat([p.grad.ravel() for p in model.parameters()]),
                              torch.cat([a.ravel() for a in g]))  # not the plain gradient


def test_fit_with_sam_learns_and_differs_from_plain_steps(toy):
    images, targets, tr, va = toy
    model, h_sam = fit(images, targets, tr, va, replace(CFG, sam=0.05), progress=False)
    assert metrics.eer(targets[va], models.scores(model, images[va]))[0] < 0.1
    _, h_plain = fit(images, targets, tr, va, CFG, progress=False)
    assert [r["val_loss"] for r in h_sam] != [r["val_loss"] for r in h_plain]
    with pytest.raises(train.ConfigError, match="sam: must be >= 0"):
        TrainConfig(sam=-0.1)


def test_returned_model_holds_the_best_validation_loss_epoch(toy):
    images, targets, tr, va = misleading(toy)
    model, history = fit(images, targets, tr, va, replace(CFG, calibrate=False), progress=False)
    losses = [r["val_loss"] for r in history]
    assert len(history) == CFG.epochs and np.argmin(losses) < len(losses) - 1  # the last epoch is not the best
    assert val_loss(model, images[va], targets[va]) == pytest.approx(min(losses), rel=1e-5)


def test_keep_last_keeps_and_calibrates_the_last_epoch(toy):
    """keep_last: the weights of a last-epoch fit (the one without a validation part, the same seed) though an
    earlier epoch had the lower validation loss, with the temperature fit on their validation logits."""
    cfg = replace(CFG, keep_last=True)
    for images, targets, tr, va in (misleading(toy), toy):
        model, history = fit(images, targets, tr, va, cfg, progress=False)
        last, _ = fit(images, targets, tr, va[:0], CFG, progress=False)
        x, x_val = data.to_tensor(images), data.to_tensor(images[va])
        torch.testing.assert_close(models.logits(model, x) * model.temperature, models.logits(last, x))
        assert model.temperature.item() == pytest.approx(train.fit_temperature(models.logits(last, x_val),
                                                                                targets[va]), rel=1e-5)
        assert len(history) == CFG.epochs and train.checkpoint(model, cfg, history=history)["best_epoch"] == CFG.epochs
    assert np.argmin([r["val_loss"] for r in fit(*misleading(toy), CFG, progress=False)[1]]) < CFG.epochs - 1
    assert model.temperature.item() != 1


def test_fit_without_a_validation_part_keeps_the_last_epoch_uncalibrated(toy):
    images, targets, tr, va = toy
    model, history = fit(images, targets, tr, va[:0], CFG, progress=False)
    assert len(history) == CFG.epochs and all(set(r) == {"epoch", "lr", "seconds", "train_loss", "train_accuracy",
                                                         "train_eer"} for r in history)
    assert model.temperature.item() == 1
    assert metrics.eer(targets[va], models.scores(model, images[va]))[0] < 0.1
    assert train.checkpoint(model, CFG, history=history)["best_epoch"] == CFG.epochs  # the last, kept



def test_refit_trains_on_training_and_validation_images_to_the_last_epoch(toy, monkeypatch):
    images, targets, tr, va = misleading(toy)
    first, history = fit(images, targets, tr, va, CFG, progress=False)
    assert np.argmin([r["val_loss"] for r in history]) < CFG.epochs - 1  # validation keeps an early epoch
    calls, real_fit = [], train.fit
    monkeypatch.setattr(train, "fit",
                        lambda im, y, t, v, *a, **k: calls.append((t, v)) or real_fit(im, y, t, v, *a, **k))
    model, again = train.refit(images, targets, tr, va, CFG, first, progress=False)
    (t, v), = calls
    assert sorted(t) == sorted(np.r_[tr, va]) and len(v) == 0 and len(again) == CFG.epochs
    assert model.temperature.item() == first.temperature.item() != 1
    last, _ = real_fit(images, targets, np.r_[tr, va], va[:0], CFG, progress=False)  # the refit's last epoch
    x = data.to_tensor(images)
    torch.testing.assert_close(models.logits(model, x) * model.temperature, models.logits(last, x))


def test_temperature_scaling_fits_held_out_logits(toy):
    rng = np.random.default_rng(0)
    calibrated = rng.normal(0, 2, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-calibrated))).astype(int)  # labels drawn from sigmoid(z)
    assert train.fit_temperature(torch.tensor(3 * calibrated), y) == pytest.approx(3, rel=0.15)  # overconfident
    assert train.fit_temperature(torch.tensor(calibrated / 2), y) == pytest.approx(0.5, rel=0.15)
    images, targets, tr, va = misleading(toy)
    model, history = fit(images, targets, tr, va, CFG, progress=False)
    assert model.temperature.item() != 1
    assert val_loss(model, images[va], targets[va]) < min(r["val_loss"] for r in history)


def test_early_stopping(toy):
    images, targets, tr, va = misleading(toy)
    cfg = replace(CFG, epochs=20, patience=2)
    _, history = fit(images, targets, tr, va, cfg, progress=False)
    best = int(np.argmin([r["val_loss"] for r in history])) + 1
    assert len(history) == best + cfg.patience < cfg.epochs


def test_fit_with_fewer_training_images_than_a_batch():
    images, targets = synthetic(60)
    tr, va = np.arange(40), np.arange(40, 60)
    model, history = fit(images, targets, tr, va, replace(CFG, epochs=2, batch_size=64), progress=False)
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])


def test_device_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert train.device_of("auto") == torch.device("cuda")
    assert train.device_of("cpu") == torch.device("cpu")
    with pytest.raises(train.ConfigError, match="cuda:1 asked for, but torch sees 1 CUDA device"):
        train.device_of("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert train.device_of("auto") == torch.device("cpu")
    assert train.device_of() == torch.device("cpu")
    with pytest.raises(train.ConfigError, match="device: cuda asked for"):
        train.device_of("cuda")


def test_config_from_dict():
    assert TrainConfig.from_dict({"arch": "resnet18", "epochs": 3}) == TrainConfig(arch="resnet18", epochs=3)
    with pytest.raises(ValueError, match="unknown config key.*'epoch'"):
        TrainConfig.from_dict({"epoch": 3})


# ---- checkpoints and files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["eyenet", "res_eyenet", "dw_eyenet", "cn_eyenet"])
def test_checkpoint_round_trip(toy, tmp_path, arch):
    images, targets, tr, va = toy
    cfg = replace(CFG, arch=arch, epochs=2, tta=True)
    model, history = fit(images, targets, tr, va, cfg, progress=False)
    path = tmp_path / "sub" / "ckpt.pt"
    train.save_checkpoint(train.checkpoint(model, cfg, {"val": {"eer": 0.1}}, history), path)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == train.CHECKPOINT_FORMAT and raw["config"] == cfg.__dict__
    assert raw["model"]["arch"] == arch and raw["preprocessing"]["mean"] == data.MEAN
    assert raw["preprocessing"]["tta"] is True and raw["metrics"] == {"val": {"eer": 0.1}}
    assert raw["best_epoch"] == min(history, key=lambda r: r["val_loss"])["epoch"]
    loaded, ckpt = models.load_checkpoint(path)
    assert not loaded.training  # and channels-last, as built for training: faster convolutions on CPU
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in loaded.parameters() if p.dim() == 4)
    x = images[va]
    assert np.allclose(models.scores(loaded, x, tta=True), models.scores(model, x, tta=True), atol=ATOL)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_pretrained_feature_extraction_fit_and_checkpoint(toy, tmp_path, arch):
    """Pretrained layouts (gray 7x7 stem, resize, input re-scaling) survive the checkpoint; fit keeps the frozen
    backbone, BatchNorm statistics included, exactly as loaded."""
    images, targets, tr, va = toy
    weights = "imagenet"
    if arch == "resnet18":
        weights = tmp_path / "r18.pth"
        torch.save(torchvision.models.resnet18().state_dict(), weights)
    cfg = replace(CFG, arch=arch, method="feature_extraction", weights=str(weights), input_size=32, epochs=1)
    model, history = fit(images, targets, tr[:64], va[:20], cfg, progress=False)
    fresh = train.build_model(arch, "feature_extraction", str(weights), input_size=32)
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(v, model.backbone.state_dict()[k].cpu()), k
    assert not torch.equal(fresh.head.weight, model.head.weight.cpu())
    train.save_checkpoint(train.checkpoint(model, cfg, {}, history), tmp_path / "c.pt")
    loaded, _ = models.load_checkpoint(tmp_path / "c.pt")
    assert loaded.input_size == 32 and loaded.in_scale == model.in_scale and loaded.in_shift == model.in_shift
    assert np.allclose(models.scores(loaded, images[:8]), models.scores(model, images[:8]), atol=ATOL)


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an eye_clf checkpoint"):
        models.load_checkpoint(tmp_path / "other.pt")


def test_zoom_pad_and_affine_p_reach_the_training_augmentation(monkeypatch):
    seen = []
    real = data.batch_augmentation
    monkeypatch.setattr(data, "batch_augmentation", lambda *a: seen.append(a) or real(*a))
    images, targets = synthetic(40)
    tr, va, _ = data.split(targets, seed=0)
    cfg = TrainConfig(width=4, epochs=1, batch_size=16, zoom=0.2, pad="border", affine_p=1.0, refit=False)
    fit(images, targets, tr, va, cfg, progress=False)
    train.augmented_views(images[:4], replace(cfg, teacher_views=2, distill=0.5))
    assert [a[4:] for a in seen] == [(0.2, "border", 1.0)] * 2


def test_a_diverging_fit_says_so(toy):
    images, targets, tr, va = toy
    with pytest.raises(ValueError, match=r"training diverged in epoch 1 \(the loss is not finite\); lower --lr"):
        train.fit(images, targets, tr, va, replace(CFG, lr=1e6, epochs=2), progress=False)


@pytest.mark.parametrize("arch", [None, 3])  # (a bad name: test_experiment)
def test_an_unknown_arch_in_a_config_dict_is_a_config_error(arch):
    """A hand-edited or null config (``TrainConfig.from_dict``) is refused naming the field, as the CLI's choices are."""
    with pytest.raises(train.ConfigError, match=r"arch: must be one of \("):
        TrainConfig.from_dict({"arch": arch})


def test_the_temperature_is_fit_on_the_logits_the_model_predicts_with(monkeypatch):
    """With mirror TTA the temperature must be fit on mirror-averaged logits, as predictions average them."""
    seen, real = [], train.fit_temperature
    monkeypatch.setattr(train, "fit_temperature", lambda z, y: seen.append(z.clone()) or real(z, y))
    images, targets = synthetic(200)
    tr, va, _ = data.split(targets, seed=0)
    model, _ = fit(images, targets, tr, va, TrainConfig(width=8, epochs=3, batch_size=16, augment=0, tta=True,
                                                        device="cpu"), progress=False)
    x = data.to_tensor(images[va])
    torch.testing.assert_close(seen[0], models.logits(model, x, tta=True) * model.temperature)
    assert not torch.allclose(seen[0], models.logits(model, x, tta=False) * model.temperature)


def test_label_smoothing_reaches_the_training_and_validation_targets(monkeypatch):
    seen, real = [], train.F.binary_cross_entropy_with_logits
    monkeypatch.setattr(train.F, "binary_cross_entropy_with_logits",
                        lambda z, y, *a, **k: seen.append(y.detach().clone()) or real(z, y, *a, **k))
    images, targets = synthetic(64)
    cfg = TrainConfig(width=4, epochs=1, batch_size=32, augment=0, refit=False, tta=False, calibrate=False,
                      label_smoothing=0.2, device="cpu")
    fit(images, targets, np.arange(48), np.arange(48, 64), cfg, progress=False)
    assert len(seen) >= 2 and len(seen[-1]) == 16  # training batches, then the 16 validation images' loss
    for y in seen:
        assert y.unique().tolist() == pytest.approx([0.1, 0.9])


def test_fit_has_glibc_keep_freed_memory_with_settings_it_takes(toy, monkeypatch):
    images, targets, tr, va = toy
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(train.ctypes, "CDLL", lambda name: Libc())
    for libc, expected in ((("glibc", "2.36"), [(-1, 1 << 30), (-3, 32 << 20)]), (("", ""), [])):
        monkeypatch.setattr(train.platform, "libc_ver", lambda: libc)
        train.keep_freed_memory.cache_clear()
        calls.clear()
        fit(images, targets, tr, va, replace(CFG, epochs=1), progress=False)
        assert calls == expected  # the trim and mmap thresholds on glibc; elsewhere nothing
    monkeypatch.undo()
    train.keep_freed_memory.cache_clear()
    if train.platform.libc_ver()[0] == "glibc":
        assert train.keep_freed_memory()  # this glibc accepts both values (mallopt returns 0 for one it refuses)
