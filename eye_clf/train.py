"""Training: one ``fit`` loop (AdamW, one-cycle LR, early stopping on validation loss, best-val-loss weights), the
recipe's optional refit on every image (its last epoch kept), and checkpoints that hold weights + architecture +
preprocessing + metrics + config."""
import ctypes
import functools
import platform
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from tqdm.auto import tqdm

from . import data, metrics
from .files import atomic_write, provenance
from .models import CHECKPOINT_FORMAT, build_model, logits, scores, torch_device
from .preprocess import PREPROCESSING


class ConfigError(ValueError):
    """A TrainConfig field with a value it cannot take; ``field`` names it (the CLI flag is --field-name)."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field


def option(default, help):
    """A TrainConfig field with the help text of its command-line flag."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """A training recipe; the defaults are the shipped model's (see results/cv_ablations.md)."""
    arch: str = option("eyenet", "architecture")
    method: str = option("finetune", "finetune: every layer trains; feature_extraction: frozen backbone, only the head")
    weights: str | None = option(None, 'initial weights: none (random init), or for the ResNets and Lite0/1/2 '
                                       '"imagenet" or a state-dict path, for iris_net a state-dict path (from '
                                       'scripts/iris_weights.py)')
    width: int = option(16, "EyeNet width (all four kinds): channels of its first stage (x2, x4 in the next ones)")
    dropout: float = option(0.0, "dropout before the final linear layer")
    input_size: int | None = option(None, "resize inside the model to this size (none: the architecture's default)")
    epochs: int = option(100, "training epochs (the best of 30/60/100 in 5-fold CV; one-cycle LR spans them all)")
    batch_size: int = option(64, "training batch size")
    lr: float = option(3e-3, "peak learning rate (AdamW, one-cycle schedule)")
    weight_decay: float = option(5e-4, "AdamW weight decay")
    label_smoothing: float = option(0.1, "targets s/2 and 1 - s/2: the labels themselves are uncertain on hard images")
    augment: float = option(1.0, "augmentation strength: flips, shifts, rotations, scales, light, blur (0: none)")
    zoom: float = option(0.1, "the augmentation's random zoom: a factor in 1 ± zoom (times the strength); 0.2 "
                              "covers crops 17 % tighter or looser than the training eyes")
    pad: str = option("zeros", "what fills the borders that the augmentation's shifts, rotations and zooms open: "
                               "zeros (black) or border (the edge pixels repeated, as a looser crop shows more of "
                               "the face); border needs batch_augment")
    affine_p: float = option(0.5, "batch augmentation: the probability that an image is shifted, rotated and zoomed "
                                  "(kornia's default 0.5, which the shipped recipe uses; the image-by-image path "
                                  "transforms every image); other than 0.5 needs batch_augment")
    invert: float = option(0.0, "probability of inverting colours during training")
    erase: float = option(0.0, "probability of random erasing during training: a rectangle of 2-20% of the image "
                               "set to the mean grey")
    batch_augment: bool = option(True, "augment whole batches on the training device (kornia: twice as fast on "
                                       "CPU), not image by image in the data loader (torchvision)")
    resample: str = option("nearest", "interpolation of the shifted, rotated and scaled training images: nearest "
                                      "(torchvision's default) or bilinear")
    soft_labels: bool = option(False, "train on each image's share of open votes among all its labels (the "
                                      "reference and the extra annotators' in other_annotations.csv), not on the "
                                      "reference alone; the epoch choice, temperature and metrics use the reference")
    mixup: float = option(0.0, "mixup: each training batch is blended with a shuffled copy of itself, images and "
                                "targets alike, with a weight drawn from Beta(a, a) per batch (0: none)")
    ema: float = option(0.0, "decay per step of an exponential moving average of the weights (and batch-norm "
                               "statistics) that is validated and kept in place of the raw weights (0: none)")
    sam: float = option(0.0, "sharpness-aware minimization: each step takes the gradient at the weights moved this "
                             "far (L2) up the batch's gradient, which favours flat minima (0: plain steps)")
    val_fraction: float = option(0.1, "training images held out to pick the best epoch, the temperature and the "
                                      "threshold (with refit they then train the final model too)")
    refit: bool = option(True, "after the validated fit, train again from scratch on the training and validation "
                               "images together for all the epochs and keep the last one, with the first fit's "
                               "temperature and decision threshold (every label trains the model; twice the time)")
    keep_last: bool = option(False, "keep (and calibrate) the last epoch, not the one of lowest validation loss, and "
                                    "never stop early; with refit the validated fit then calibrates the state the "
                                    "refit ships")
    patience: int = option(100, "early stopping: epochs without a better validation loss (one-cycle LR peaks at "
                                   "30% and its best epochs come at the end: the shipped recipe does not stop early; "
                                   "with refit the refit trains every epoch all the same: no validation part stops it)")
    tta: bool = option(True, "average the logits of the image and its mirror at prediction time (the temperature and "
                             "threshold are fit on those averaged logits)")
    calibrate: bool = option(True, "temperature scaling on the validation split after training")
    distill: float = option(0.0, "weight of the teachers' P(open) in the training target (needs teachers)")
    teacher_views: int = option(0, "0: the teachers score every augmented batch (online); K > 0: they score K "
                                   "augmented copies of each training image once and the student trains on "
                                   "those (for teachers too slow to run at every step)")
    seed: int = option(0, "random seed (initialisation, batches, augmentation, the validation split; CV folds are "
                          "always seed 0's)")
    device: str = option("auto", "torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")

    def __post_init__(self):
        from .models import ARCHS, EYENETS, METHODS
        eyenet = self.arch in EYENETS
        checks = dict(arch=(self.arch in ARCHS, f"one of {ARCHS}"),
                      method=(self.method in METHODS and (self.method == "finetune" or self.weights is not None),
                              f"one of {METHODS} (feature_extraction only with --weights: a frozen random "
                              "backbone learns nothing)"),
                      weights=(self.weights is None or not eyenet, "none for EyeNet (it has no pretrained weights)"),
                      width=(self.width >= 1, ">= 1"), dropout=(0 <= self.dropout < 1, "in [0, 1)"),
                      input_size=(self.input_size is None or self.input_size >= 8, ">= 8 or None"),
                      epochs=(self.epochs >= 1, ">= 1"), batch_size=(self.batch_size >= 1, ">= 1"),
                      lr=(self.lr > 0, "> 0"), weight_decay=(self.weight_decay >= 0, ">= 0"),
                      label_smoothing=(0 <= self.label_smoothing < 1, "in [0, 1)"),
                      zoom=(0 <= self.zoom < 1, "in [0, 1)"),
                      augment=(self.augment >= 0 and self.zoom * self.augment < 1 and 0.2 * self.augment <= 1,
                               ">= 0, with zoom x augment < 1 and the blur probability 0.2 x augment <= 1"),
                      affine_p=(0 <= self.affine_p <= 1 and (self.affine_p == 0.5 or self.batch_augment),
                                "in [0, 1] (other than 0.5 only with batch_augment)"),
                      invert=(0 <= self.invert <= 1, "in [0, 1]"),
                      pad=(self.pad in data.PADDING and (self.pad == "zeros" or self.batch_augment),
                           f"one of {data.PADDING} (border only with batch_augment)"),
                      erase=(0 <= self.erase <= 1, "in [0, 1]"),
                      resample=(self.resample in data.RESAMPLE, f"one of {data.RESAMPLE}"),
                      val_fraction=(0 < self.val_fraction < 0.5, "in (0, 0.5)"),
                      distill=(0 <= self.distill <= 1, "in [0, 1]"), mixup=(self.mixup >= 0, ">= 0"),
                      ema=(0 <= self.ema < 1, "in [0, 1)"), sam=(self.sam >= 0, ">= 0"),
                      teacher_views=(self.teacher_views >= 0 and (self.teacher_views == 0 or self.distill > 0),
                                     ">= 0 (above 0 only with distill)"),
                      patience=(self.patience >= 1, ">= 1"))
        for name, (ok, rule) in checks.items():
            if not ok:
                raise ConfigError(name, f"must be {rule}, got {getattr(self, name)!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError("device", f"must be auto or a torch device (cpu, cuda, cuda:1, ...), got "
                                            f"{self.device!r}") from None

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config key(s): {sorted(unknown)}")
        return cls(**d)


def device_of(name="auto"):
    """The torch device of a config's ``device``: auto is CUDA when present, else the CPU. A CUDA device that this
    machine lacks is a ConfigError."""
    try:
        return torch_device(name)
    except ValueError as err:
        raise ConfigError("device", f"{err}; use auto or cpu") from None


@functools.cache
def keep_freed_memory():
    """Have glibc's malloc keep freed memory for the next batch (blocks up to 32 MiB from its heap, which it trims
    only past 1 GiB free) rather than return it to the system and fault it in again: the same weights, without the
    page faults that took up to a fifth of training's CPU time (results/train_timing.txt). Process-wide;
    returns whether glibc took both settings (other C libraries: nothing is set)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return (libc.mallopt(-1, 1 << 30) == 1  # M_TRIM_THRESHOLD (set, it also stops glibc's own moving thresholds)
            and libc.mallopt(-3, 32 << 20) == 1)  # M_MMAP_THRESHOLD: glibc's largest


def seed_everything(seed):
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_spec(cfg):
    """The builder arguments that rebuild the architecture (without downloading weights)."""
    return dict(arch=cfg.arch, width=cfg.width, dropout=cfg.dropout, input_size=cfg.input_size,
                pretrained_layout=cfg.weights is not None)


def fit_temperature(z, y):
    """The temperature T that minimises the BCE of sigmoid(z / T) on held-out logits (temperature scaling)."""
    y = torch.as_tensor(y, dtype=torch.float32)
    return minimize_scalar(lambda t: F.binary_cross_entropy_with_logits(z / t, y).item(), bounds=(0.05, 20),
                           method="bounded").x


def _bce(z, y, smoothing):
    return F.binary_cross_entropy_with_logits(z, y * (1 - smoothing) + smoothing / 2)


def teacher_proba(teachers, x):
    """Mean P(open) of the teachers on a normalized batch, each teacher's logits averaged with the mirror image's
    and divided by its temperature (fit on mirror-averaged logits only if its recipe used TTA): the student learns
    the mirror averaging and needs no TTA."""
    return torch.stack([torch.sigmoid(logits(t, x, tta=True)) for t in teachers]).mean(0).to(x.device)


def augmentation_of(cfg):
    """The training augmentation of a recipe: for whole batches (kornia) with ``cfg.batch_augment``, else image by
    image (torchvision); None when it augments nothing."""
    if cfg.batch_augment:
        return data.batch_augmentation(cfg.augment, cfg.invert, cfg.resample, cfg.erase, cfg.zoom, cfg.pad,
                                       cfg.affine_p)
    return data.augmentation(cfg.augment, cfg.invert, cfg.resample, cfg.erase, cfg.zoom)


def augmented_views(images, cfg):
    """``cfg.teacher_views`` copies of uint8 N x 24 x 24 images, each augmented as in training (K x N x 24 x 24
    uint8), reproducible from ``cfg.seed``."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.uint8).unsqueeze(1)
    aug = augmentation_of(cfg) or (lambda im: im)
    with torch.random.fork_rng():  # torch.manual_seed reseeds CUDA too: every generator is restored after
        torch.manual_seed(cfg.seed)
        if cfg.batch_augment:
            views = torch.stack([(aug(x / 255) * 255).round().to(torch.uint8) for _ in range(cfg.teacher_views)])
        else:
            views = torch.stack([torch.stack([aug(im) for im in x]) for _ in range(cfg.teacher_views)])
    return views.squeeze(2)


def view_proba(teachers, views):
    """The teachers' P(open) (see teacher_proba) on each of K x N augmented views: a K x N float32 array."""
    return np.stack([teacher_proba(teachers, data.to_tensor(v.numpy())).numpy() for v in views])


class ViewBank(torch.utils.data.Dataset):
    """Training on precomputed views: item i is one of its K views (drawn at random), mirrored half of the time
    (the teachers' targets are mirror-averaged, so they hold for both), with its label and the teachers' P(open)."""

    def __init__(self, views, targets, soft):
        self.views, self.soft = views.unsqueeze(2), torch.as_tensor(soft, dtype=torch.float32)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        k = int(torch.randint(len(self.views), ()))
        x = self.views[k, i]
        x = x.flip(-1) if torch.rand(()) < 0.5 else x
        return data.standardize(x.float()), self.targets[i], self.soft[k, i]


def sam_gradient(model, loss_fn, rho):
    """Replace the gradients in ``model`` (those of ``loss_fn()`` at w) with those of ``loss_fn()`` at
    w + rho * g / ||g|| (SAM's ascent step), then put w back. Batch-norm running means and variances are left as the
    first pass made them."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    weights = [p.detach().clone() for p in params]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=rho / (norm.item() + 1e-12))
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running: the second pass does not move them
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(w)


def _epoch_metrics(prefix, loss, y, p):
    return {f"{prefix}_loss": loss, f"{prefix}_accuracy": metrics.accuracy(y, p),
            f"{prefix}_eer": metrics.eer(y, p)[0]}


def _training_set(images, y_train, cfg, teachers, bank):
    """The training images as a Dataset, the batch augmentation (or None: none, or done by the Dataset) and the
    teachers left to score batches online (none when precomputed views replace them)."""
    if cfg.distill and cfg.teacher_views:
        if bank is None:
            views = augmented_views(images, cfg)
            bank = views, view_proba(teachers, views)
        return ViewBank(bank[0], y_train, bank[1]), None, ()
    if cfg.batch_augment:
        return data.EyeDataset(images, y_train), augmentation_of(cfg), teachers
    return data.EyeDataset(images, y_train, augmentation_of(cfg)), None, teachers


def _train_epoch(model, loader, step, cfg, dev, batch_aug, teachers, loss_of):
    """One pass over ``loader``; ``step()`` follows each batch's backward pass(es) (optimizer, schedule, EMA).
    Returns the mean training loss, the batches' (rounded, with mixup) labels and their P(open)."""
    model.train()
    total, ys, ps = 0.0, [], []
    for xb, yb, *soft in loader:
        xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
        if batch_aug is not None:
            xb = (batch_aug(xb * data.STD + data.MEAN) - data.MEAN) / data.STD
        target = yb * (1 - cfg.label_smoothing) + cfg.label_smoothing / 2
        if cfg.distill:
            soft = soft[0].to(dev) if soft else teacher_proba(teachers, xb)
            target = cfg.distill * soft + (1 - cfg.distill) * target
        if cfg.mixup:
            lam, perm = float(np.random.beta(cfg.mixup, cfg.mixup)), torch.randperm(len(yb), device=dev)
            xb, yb, target = (lam * v + (1 - lam) * v[perm] for v in (xb, yb, target))
        loss, z = loss_of(xb, target)
        model.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.sam:
            sam_gradient(model, lambda: loss_of(xb, target)[0], cfg.sam)
        step()
        total += loss.item() * len(yb)
        ys.append(yb.cpu().numpy())
        ps.append(torch.sigmoid(z.detach()).cpu().numpy())
    y, p = np.concatenate(ys).round(), np.concatenate(ps)
    return total / len(y), y, p


def fit(images, targets, train_idx, val_idx, cfg=None, progress=True, teachers=(), bank=None, soft=None):
    """Train on ``train_idx``, select the epoch of best validation loss on ``val_idx`` (``cfg.keep_last``: the last
    epoch; no ``val_idx``: the last epoch, uncalibrated).

    Training images are augmented image by image in the data loader or, with ``cfg.batch_augment``, a whole batch
    at a time on the training device (about twice as fast on CPU).

    With ``teachers`` (trained models that never saw ``val_idx``) and ``cfg.distill`` = w, the target of each
    augmented image is w * (teachers' P(open) on that same view) + (1 - w) * its smoothed label (distillation).
    The teachers score every batch (online) or, with ``cfg.teacher_views`` = K, K views of each image once;
    ``bank`` = (views, P) made by ``augmented_views`` and ``view_proba`` skips that scoring. The validation loss
    always uses the labels.

    With ``cfg.mixup`` the training metrics compare the blended images' predictions with their rounded blended
    labels.

    With ``cfg.sam`` every step is sharpness-aware (see sam_gradient): two forward-backward passes a batch.

    With ``cfg.ema`` the moving average of the weights is what is validated, selected and returned.

    ``soft`` (with ``cfg.soft_labels``): per-image training targets in [0, 1] in place of ``targets`` (see
    data.soft_targets); the training metrics then count the rounded targets, everything else uses ``targets``.

    On glibc the process's malloc then keeps freed memory (keep_freed_memory).

    Returns ``(model, history)``: the model (in eval mode, ``model.tta`` = ``cfg.tta``) holds the selected epoch's
    weights; history is one dict per epoch
    (train/val loss, accuracy, EER, learning rate, seconds).
    """
    cfg = cfg or TrainConfig()
    if bool(teachers or bank) != bool(cfg.distill):
        raise ValueError("distillation needs both teachers and cfg.distill > 0")
    if bank is not None and not cfg.teacher_views:
        raise ValueError("a bank of teacher views needs cfg.teacher_views > 0")
    if cfg.soft_labels != (soft is not None):
        raise ValueError("cfg.soft_labels and soft targets go together (see data.soft_targets)")
    keep_freed_memory()
    y_train = np.asarray(targets if soft is None else soft)[train_idx]
    train_set, batch_aug, teachers = _training_set(images[train_idx], y_train, cfg, teachers, bank)
    seed_everything(cfg.seed)
    dev = device_of(cfg.device)
    teachers = [t.to(dev) for t in teachers]  # online teachers score each batch where it is
    model = build_model(cfg.arch, cfg.method, cfg.weights, cfg.width, cfg.dropout, cfg.input_size)
    model.to(dev)
    loader = torch.utils.data.DataLoader(train_set, cfg.batch_size, shuffle=True,
                                         drop_last=len(train_set) > cfg.batch_size,  # keep one batch at least
                                         generator=torch.Generator().manual_seed(cfg.seed))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * len(loader))
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    kept = ema.module if ema else model  # the weights that are validated and returned
    x_val = data.to_tensor(images[val_idx])
    y_val = targets[val_idx]
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    history, best_loss, best_state, stale = [], float("inf"), None, 0

    def loss_of(x, target):
        with torch.autocast(**amp):
            z = model(x).float()
        return F.binary_cross_entropy_with_logits(z, target), z

    def step():
        opt.step()
        sched.step()
        if ema:
            ema.update_parameters(model)

    bar = tqdm(range(cfg.epochs), desc=f"{cfg.arch}/{cfg.method}", disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        loss, y_tr, p_tr = _train_epoch(model, loader, step, cfg, dev, batch_aug, teachers, loss_of)
        if not (np.isfinite(loss) and np.isfinite(p_tr).all()):
            raise ValueError(f"training diverged in epoch {epoch + 1} (the loss is not finite); lower --lr")
        row = dict(epoch=epoch + 1, lr=sched.get_last_lr()[0], **_epoch_metrics("train", loss, y_tr, p_tr))
        val_loss = -float(epoch)  # without a validation part the last epoch is the one kept
        if len(val_idx):
            z_val = logits(kept, x_val, tta=cfg.tta)
            val_loss = _bce(z_val, torch.as_tensor(y_val, dtype=torch.float32), cfg.label_smoothing).item()
            row.update(_epoch_metrics("val", val_loss, y_val, torch.sigmoid(z_val).numpy()))
            bar.set_postfix(val_loss=f"{val_loss:.4f}", val_eer=f"{row['val_eer']:.4f}")
        history.append(dict(row, seconds=time.perf_counter() - t0))
        if val_loss < best_loss or cfg.keep_last:
            best_loss, stale = val_loss, 0
            best_state = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    if cfg.calibrate and len(val_idx):
        model.temperature.fill_(fit_temperature(logits(model, x_val, tta=cfg.tta), y_val))
    model.tta = cfg.tta
    return model.eval(), history


def refit(images, targets, train_idx, val_idx, cfg, first, progress=True, soft=None, teachers=()):
    """``cfg.refit``: ``cfg`` trained again from scratch on the training and validation images together (distilling
    from ``teachers`` as the first fit did), its last epoch kept, with the temperature of ``first`` (the validated
    fit). Returns ``(model, history)``."""
    model, history = fit(images, targets, np.r_[train_idx, val_idx], val_idx[:0], cfg, progress, teachers,
                         soft=soft)
    model.temperature.fill_(float(first.temperature))
    return model, history


def fit_recipe(images, targets, train_idx, val_idx, cfg, progress=True, teachers=(), soft=None, bank=None,
               refit_val=None):
    """The recipe, as the shipped model and every CV fold train it: the validated fit (``val_idx`` picks its epoch
    and temperature), its decision threshold (the EER point of its validation P(open), mirror-averaged with
    ``cfg.tta``), then with ``cfg.refit`` the refit on the training images and ``refit_val`` (default: ``val_idx``).
    ``bank``: scored views for the validated fit (the refit scores views of its own images with ``teachers``, once
    with ``cfg.teacher_views``, else online).

    Returns ``(model, histories, p_val, extras)``: the fits' histories (validated fit first), the validated fit's
    validation P(open), and what the checkpoint records besides ``checkpoint()``: the threshold and the hashes of
    the images it trained on or chose with (``training_images``) and of those that chose (``validation_images``).
    """
    model, history = fit(images, targets, train_idx, val_idx, cfg, progress, teachers=() if bank else teachers,
                         bank=bank, soft=soft)
    p_val = scores(model, images[val_idx], tta=cfg.tta)
    histories = [history]
    if cfg.refit:  # the temperature and threshold stay those of the validated fit
        model, again = refit(images, targets, train_idx, val_idx if refit_val is None else refit_val, cfg, model,
                             progress, soft, teachers)
        histories.append(again)
    extras = dict(threshold=metrics.eer(targets[val_idx], p_val)[1],
                  training_images=data.image_hashes(images[np.r_[train_idx, val_idx]]),
                  validation_images=data.image_hashes(images[val_idx]))
    return model, histories, p_val, extras


def checkpoint(model, cfg, metrics_=None, history=None, prov=None):
    """A plain-types dict (loadable with ``torch.load(weights_only=True)``) describing a trained model; ``history``:
    that of the validated fit (with ``cfg.refit`` the kept weights are those of the refit's last epoch); ``prov``:
    the run's provenance (default: taken now)."""
    scored = [r for r in history or () if "val_loss" in r]
    if cfg.refit:  # the refit's last epoch
        kept = cfg.epochs
    elif scored and not cfg.keep_last:  # the best-validation-loss one
        kept = min(scored, key=lambda r: r["val_loss"])["epoch"]
    else:  # the last (without a validation part too); unknown without a history
        kept = len(history) if history else None
    return {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": model_spec(cfg),
        "preprocessing": dict(PREPROCESSING, tta=cfg.tta),
        "weights": cfg.weights or "random init",
        "metrics": metrics_ or {},
        "best_epoch": kept,
        "config": asdict(cfg),
        "provenance": prov or provenance(next(model.parameters()).device),
    }


def save_checkpoint(ckpt, path):
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
