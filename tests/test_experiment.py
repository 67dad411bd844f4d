"""The main job (train_run, ship), cross-validation bookkeeping and the recipe's validation."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from eye_clf import cv, data, experiment, files, metrics, models, train
from eye_clf.files import sha256
from eye_clf.train import ConfigError, TrainConfig

from conftest import synthetic

SMALL = TrainConfig(width=4, epochs=2, batch_size=32, augment=0, device="cpu")  # CUDA trains in bf16


def record_fits(monkeypatch, what):
    """Patch train.fit to record ``what(train_idx, val_idx, teachers)`` of every validated fit (not of the refits,
    which have no validation part); returns the list of records."""
    records, real_fit = [], train.fit

    def recording_fit(images_, targets_, train_idx, val_idx, cfg, progress, teachers, **kw):
        if len(val_idx):
            records.append(what(train_idx, val_idx, teachers))
        return real_fit(images_, targets_, train_idx, val_idx, cfg, progress, teachers, **kw)

    monkeypatch.setattr(train, "fit", recording_fit)
    return records


def test_train_run_writes_a_run_folder_and_leaves_the_shipped_model_alone(real_root, tmp_path, monkeypatch):
    shipped, figures, out = tmp_path / "shipped", tmp_path / "figures", tmp_path / "run"
    shipped.mkdir()
    figures.mkdir()
    shutil.copyfile(experiment.SHIPPED / "eye_clf.pt", shipped / "eye_clf.pt")  # a stand-in the run compares with
    before = (shipped / "eye_clf.pt").read_bytes()
    monkeypatch.setattr(experiment, "SHIPPED", shipped)  # a regression must not replace the real shipped model
    monkeypatch.setattr(experiment, "FIGURES", figures)
    cfg = TrainConfig(width=8, epochs=1, refit=False)  # the validated fit alone (refit: the next test)
    res = experiment.train_run(cfg, real_root, out_dir=out, limit=200, progress=False)
    assert [p.name for p in shipped.iterdir()] == ["eye_clf.pt"] and (shipped / "eye_clf.pt").read_bytes() == before
    assert not any(figures.iterdir())
    assert sorted(p.name for p in out.iterdir()) == ["eye_clf.pt", "history.csv", "history.json", "run.json",
                                                     "train_val_loss_metrics_history.png"]
    tr, va = res["split"]
    assert len(tr) == 180 and len(va) == 20 and not set(tr) & set(va)
    ckpt = torch.load(out / "eye_clf.pt", weights_only=True)
    p_val = models.scores(res["model"], res["images"][va])
    assert ckpt["metrics"]["val"]["eer"] == pytest.approx(metrics.eer(res["targets"][va], p_val)[0])
    assert ckpt["threshold"] == res["val"]["eer_threshold"]
    assert sorted(ckpt["training_images"]) == sorted({data.image_hash(im) for im in res["images"]})
    run = json.loads((out / "run.json").read_text())
    assert run["config"] == asdict(cfg) and len(run["provenance"]["git_commit"]) == 40
    reference = (data.REPO_ROOT / "img_name_target.xlsx").resolve()  # what it read: the default labels file
    assert run["data"] == dict(images=str((real_root / "EyesDataset").resolve()), labels=str(reference),
                               labels_sha256=sha256(reference), n=200, n_open=int(res["targets"].sum()),
                               data_id=cv.data_id(res["images"], res["targets"]))
    with Image.open(out / "train_val_loss_metrics_history.png") as im:
        assert im.format == "PNG" and im.width > 300


def test_train_distill_trains_its_teachers_on_the_students_split_without_refit(monkeypatch, real_root, tmp_path):
    monkeypatch.setattr(experiment, "TEACHERS", {"tiny": TrainConfig(width=4, epochs=1, seed=7)})  # refit default
    cfg = TrainConfig(width=4, epochs=1, refit=False, distill=0.5, seed=3, val_fraction=0.2)
    res = experiment.train_run(cfg, real_root, out_dir=tmp_path, limit=100, progress=False)
    teacher = json.loads((tmp_path / "teachers" / "tiny" / "run.json").read_text())
    assert teacher["config"]["refit"] is False and teacher["n_train"] == len(res["split"][0])
    assert (teacher["config"]["seed"], teacher["config"]["val_fraction"]) == (3, 0.2)


def test_train_refuses_a_teacher_that_trained_on_the_students_validation_images(real_root, tmp_path):
    refit_teacher = experiment.train_run(TrainConfig(width=4, epochs=1, seed=3), real_root, out_dir=tmp_path / "t",
                                         limit=100, progress=False)["out"] / "eye_clf.pt"
    student = TrainConfig(width=4, epochs=1, refit=False, distill=0.5, seed=3)
    with pytest.raises(ValueError, match=r"not trained on the student's split \(refit, which trains on the "
                                         r"validation images\).*--no-refit"):
        experiment.train_run(student, real_root, out_dir=tmp_path / "s", limit=100, progress=False,
                             teachers=[refit_teacher])
    assert not (tmp_path / "s").exists()  # refused before any training or output
    other_seed = experiment.train_run(TrainConfig(width=4, epochs=1, seed=4, refit=False), real_root,
                                      out_dir=tmp_path / "t4", limit=100, progress=False)["out"] / "eye_clf.pt"
    with pytest.raises(ValueError, match=r"its weights learnt \d+ of the student's 10 validation images"):
        experiment.train_run(student, real_root, out_dir=tmp_path / "s", limit=100, progress=False,
                             teachers=[other_seed])


def test_a_refit_run_trains_its_model_on_every_image_and_reports_the_validated_fit(real_root, tmp_path):
    import matplotlib.pyplot as plt
    cfg = TrainConfig(width=8, epochs=2)  # the shipped recipe refits
    figures = plt.get_fignums()
    res = experiment.train_run(cfg, real_root, out_dir=tmp_path, limit=200, progress=False)
    assert plt.get_fignums() == figures  # the curves went to their PNG, not into the caller's open figures
    run, ckpt = json.loads((tmp_path / "run.json").read_text()), torch.load(tmp_path / "eye_clf.pt", weights_only=True)
    assert run["n_train"] == 200 and run["n_val"] == 20 and ckpt["best_epoch"] == 2
    # the refit's weights learnt all 200 images, the validation part included
    assert len(ckpt["training_images"]) == 200 and len(ckpt["validation_images"]) == 20
    assert set(ckpt["validation_images"]) <= set(ckpt["training_images"])
    assert ckpt["threshold"] == res["val"]["eer_threshold"]
    assert len(res["history"]) == 2 and "val_loss" in res["history"][0]  # the validated fit's curves
    va = res["split"][1]  # the validation figures are the validated fit's, not those of the refit that saw va
    refit_eer = metrics.eer(res["targets"][va], models.scores(res["model"], res["images"][va]))
    assert (refit_eer[0], refit_eer[1]) != (res["val"]["eer"], res["val"]["eer_threshold"])


def test_oof_predictions_never_come_from_a_model_that_saw_the_image(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    seen = record_fits(monkeypatch, lambda tr, va, _: set(tr) | set(va))
    oof, per_fold = cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path)
    rows = [json.loads((tmp_path / f"fold{k}.json").read_text()) for k in range(3)]
    tests = [set(r["test_idx"]) for r in rows]
    assert len(seen) == 3                                           # one validated fit a fold, each recorded
    assert all(not (t & s) for t, s in zip(tests, seen))           # a fold's model never saw its test images
    assert sorted(i for t in tests for i in t) == list(range(60))   # and every image is predicted exactly once
    assert np.isfinite(oof).all() and len(per_fold) == 3
    for r in rows:  # each fold's figures are those of its own test images, at its validation threshold
        test, p = r["test_idx"], np.asarray(cv.predicted(r))
        assert r["accuracy_at_val_threshold"] == metrics.accuracy(targets[test], p, r["val_threshold"])
        assert r["eer"] == metrics.eer(targets[test], p)[0]
    for r, s in zip(rows, seen):  # each fold model records the epoch it kept and the images it saw
        ckpt = torch.load(tmp_path / f"fold{r['fold']}.pt", weights_only=True)
        assert ckpt["best_epoch"] == r["best_epoch"] and ckpt["threshold"] == r["val_threshold"]
        assert ckpt["training_images"] == data.image_hashes(images[sorted(s)])
        assert not set(ckpt["training_images"]) & set(data.image_hashes(images[r["test_idx"]]))
        assert set(ckpt["validation_images"]) < set(ckpt["training_images"])
    assert [r["fold"] for r in experiment.cv_rows(tmp_path.name, tmp_path.parent)] == [0, 1, 2]  # its own fold count
    (tmp_path / "fold2.json").unlink()
    assert experiment.cv_rows(tmp_path.name, tmp_path.parent) is None  # unfinished
    (tmp_path / "fold2.json").write_text('{"fold": 2')  # cut short: named, as the fold files a CV resumes
    with pytest.raises(ValueError, match=r"fold2\.json is not a fold file of eye_clf's CV"):
        experiment.cv_rows(tmp_path.name, tmp_path.parent)


def test_cv_of_finds_a_cv_of_the_config_and_if_asked_of_the_same_data(tmp_path):
    images, targets = synthetic(60)
    key = dict(config=asdict(SMALL), folds=2, seed=0, n=60, n_open=int(targets.sum()))
    for name, extra in (("old", {}), ("other", dict(data="0123456789abcdef"))):
        (tmp_path / name).mkdir()
        for k in range(2):
            (tmp_path / name / f"fold{k}.json").write_text(
                json.dumps(dict(fold=k, key=dict(key, **extra), test_idx=[], p=[])))
    assert experiment.cv_of(SMALL, tmp_path) is None  # 2 folds: not the 5-fold CV the figures quote
    (tmp_path / "a_seed1").mkdir()
    for k in range(2):  # other folds (fold seed 1) of the same config: never the answer
        (tmp_path / "a_seed1" / f"fold{k}.json").write_text(
            json.dumps(dict(fold=k, key=dict(key, seed=1), test_idx=[], p=[])))
    assert experiment.cv_of(SMALL, tmp_path, folds=2)[0] == "old"  # the first of the config, whatever its data
    (tmp_path / "old" / "fold1.json").unlink()
    assert experiment.cv_of(SMALL, tmp_path, folds=2)[0] == "other"
    assert experiment.cv_of(SMALL, tmp_path, images, targets, folds=2) is None  # made on other data
    assert experiment.cv_of(replace(SMALL, epochs=SMALL.epochs + 1), tmp_path, folds=2) is None
    assert experiment.cv_of(replace(SMALL, device="auto"), tmp_path, folds=2)[0] == "other"  # the device: no recipe


def test_a_run_whose_weights_file_is_missing_is_named_before_any_fold_trains(monkeypatch, tmp_path):
    """RUNS' weights paths are from the repository root: from elsewhere (or before the file is made) the run, the
    file and the folder looked in are named, and no fold folder is started."""
    ablations = load_script("cv_ablations")
    monkeypatch.chdir(tmp_path)
    images, targets = synthetic(60)
    with pytest.raises(FileNotFoundError, match=r"^iris_mediapipe_e20: its weights runs/iris_net.pt are not found "
                                                rf"from {re.escape(str(Path.cwd()))}: run this from the repository "
                                                r"root, after making them as the comment above iris_mediapipe_e20 "
                                                r"in RUNS says$"):
        ablations.run("iris_mediapipe_e20", images, targets, None, fold_dir=tmp_path / "folds")
    assert not (tmp_path / "folds").exists()


def test_the_default_teacher_is_the_cross_validated_config():
    ablations = load_script("cv_ablations")
    assert experiment.TEACHERS["lite0_imagenet"] == ablations.config("lite0_imagenet_e12")


@pytest.mark.parametrize("argv, message", [([], "nothing to do: name runs to train"),
                                           (["--table", "--threads", "0"], "must be >= 1, got 0")])
def test_cv_ablations_refuses_an_empty_or_bad_command_line(argv, message):
    out = subprocess.run([sys.executable, str(data.REPO_ROOT / "scripts" / "cv_ablations.py"), *argv],
                         capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr


def test_the_table_tells_the_reference_itself_from_an_unfinished_reference():
    cells = load_script("cv_ablations").cells
    f = pd.DataFrame(dict(fold=[0, 1], eer=[0.02, 0.03], eer_tta=[0.02, 0.03], accuracy_at_val_threshold=[0.9, 0.9],
                          ece=[0.01, 0.01]))
    ref = [dict(fold=0, eer=0.01), dict(fold=1, eer=0.01)]
    assert cells(f, {"vs": "self"})["vs"] == "(reference)"
    assert cells(f, {"vs": None})["vs"] == "— (reference unfinished)"
    assert cells(f, {"vs": ref})["vs"].startswith("+1.50 ± ")


def test_cv_of_never_answers_with_a_distilled_run(tmp_path):
    images, targets = synthetic(60)
    key = dict(config=asdict(SMALL), folds=2, seed=0, n=60, n_open=int(targets.sum()), teachers=["lite0_96px"])
    (tmp_path / "student").mkdir()
    for k in range(2):
        (tmp_path / "student" / f"fold{k}.json").write_text(json.dumps(dict(fold=k, key=key, test_idx=[], p=[])))
    assert experiment.cv_of(SMALL, tmp_path, folds=2) is None  # its teachers need not be the ones a training uses


def test_resuming_folds_from_before_the_data_fingerprint_checks_their_scores(tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path)
    for k in range(2):
        row = json.loads((tmp_path / f"fold{k}.json").read_text())
        del row["key"]["data"]
        (tmp_path / f"fold{k}.json").write_text(json.dumps(row))
    _, per_fold = cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path)
    assert len(per_fold) == 2  # the same data: resumed
    order = np.random.default_rng(1).permutation(60)  # the same counts, the images and labels reordered
    with pytest.raises(ValueError, match="fold 0 was made on other data .*, and so were the run's other folds, "
                                         "which trained on those images: rerun the whole CV"):
        cv.cross_val_predict(images[order], targets[order], SMALL, folds=2, progress=False, fold_dir=tmp_path)


def test_a_validation_part_without_both_classes_is_refused_before_training(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    targets = np.r_[np.zeros(3), np.ones(57)].astype(targets.dtype)
    record_fits(monkeypatch, lambda tr, va, t: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"val_fraction 0.1 of 57 open and 3 closed images leaves the validation "
                                         r"part \(6 images\) without an image of each class"):
        experiment.split(targets, replace(SMALL, val_fraction=0.1))
    with pytest.raises(ValueError, match=r"^fold 0 of 3, its training part \(40 of the 60 images\): val_fraction 0.1 "
                                         r"of 38 open and 2 closed images .* fraction \(--val-fraction\), or use "
                                         r"more folds \(larger training parts\)$"):
        cv.cross_val_predict(images, targets, replace(SMALL, val_fraction=0.1), folds=3, progress=False)
    with pytest.raises(ValueError, match=r"val_fraction 0.01 of 57 open and 3 closed images leaves the validation "
                                         r"part \(1 image\)"):  # sklearn refuses a part of one image
        experiment.split(targets, replace(SMALL, val_fraction=0.01))
    with pytest.raises(ValueError, match=r"val_fraction 0.9 of 8 open and 2 closed images leaves the training part "
                                         r"\(1 image\)"):  # (the config refuses fractions from 0.5 up)
        data.validation_split(np.arange(10), np.r_[0, 0, np.ones(8)], 0.9, 0)


def test_cv_of_the_same_data_refuses_one_with_the_same_counts_but_other_labels(tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "run")
    for k in range(2):  # as if written before the data fingerprint
        row = json.loads((tmp_path / "run" / f"fold{k}.json").read_text())
        del row["key"]["data"]
        (tmp_path / "run" / f"fold{k}.json").write_text(json.dumps(row))
    assert experiment.cv_of(SMALL, tmp_path, images, targets, folds=2)[0] == "run"
    swapped = targets.copy()
    swapped[[np.argmax(targets), np.argmin(targets)]] = swapped[[np.argmin(targets), np.argmax(targets)]]
    assert experiment.cv_of(SMALL, tmp_path, images, swapped, folds=2) is None  # one open and one closed label swapped


def test_inputs_fingerprint_is_per_fold(tmp_path):
    teacher = tmp_path / "teacher"
    teacher.mkdir()

    def fold(k, p):
        (teacher / f"fold{k}.json").write_text(json.dumps(dict(fold=k, key=dict(config={}), test_idx=[0, 1], p=p)))
    fold(0, [0.1, 0.9])
    before = cv.inputs_id([teacher], None, None, 0)
    fold(1, [0.2, 0.8])  # fold 1 finishes later
    assert cv.inputs_id([teacher], None, None, 0) == before != cv.inputs_id([teacher], None, None, 1)
    fold(0, [0.3, 0.7])  # fold 0 retrained
    assert cv.inputs_id([teacher], None, None, 0) != before
    assert cv.inputs_id([], None, None, 0) is None


def test_refit_folds_score_a_model_of_the_whole_training_part_with_the_first_fits_threshold(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    fits, real_fit = [], train.fit

    def recording_fit(images_, targets_, train_idx, val_idx, *args, **kw):
        model, history = real_fit(images_, targets_, train_idx, val_idx, *args, **kw)
        fits.append((set(train_idx), set(val_idx), model))
        return model, history

    monkeypatch.setattr(train, "fit", recording_fit)  # the validated fit's and the refit's
    cfg = TrainConfig(width=4, epochs=2, batch_size=32, augment=0)  # the shipped recipe: refit, mirror TTA
    cv.cross_val_predict(images, targets, cfg, folds=3, progress=False, fold_dir=tmp_path)
    rows = [json.loads((tmp_path / f"fold{k}.json").read_text()) for k in range(3)]
    assert len(fits) == 6  # per fold the validated fit, then the refit on its training and validation parts
    for k, row in enumerate(rows):
        (train_, val, first), (whole, none, last) = fits[2 * k], fits[2 * k + 1]
        assert whole == train_ | val and not none and not whole & set(row["test_idx"])
        val = sorted(val)
        assert row["val_threshold"] == metrics.eer(targets[val], models.scores(first, images[val], tta=True))[1]
        np.testing.assert_allclose(row["p"], models.scores(last, images[row["test_idx"]]), atol=1e-6)
        assert last.temperature.item() == first.temperature.item()


def test_cv_metrics_are_those_of_what_the_checkpoint_predicts(tmp_path):
    images, targets = synthetic(60)
    for tta in (False, True):
        cfg = TrainConfig(width=4, epochs=2, batch_size=32, augment=0, tta=tta)
        out = tmp_path / str(tta)
        oof, per_fold = cv.cross_val_predict(images, targets, cfg, folds=3, progress=False, fold_dir=out)
        for k, row in per_fold.iterrows():
            full = json.loads((out / f"fold{k}.json").read_text())
            own = np.array(full["p_tta" if tta else "p"])
            assert cv.predicted(full) == full["p_tta" if tta else "p"]
            np.testing.assert_array_equal(oof[full["test_idx"]], own)
            assert row["eer"] == metrics.eer(targets[full["test_idx"]], own)[0] == full["eer"]
            assert row["ece"] == metrics.ece(targets[full["test_idx"]], own)


def test_cv_resumes_from_fold_files_and_refuses_another_config(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    first, _ = cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path)
    monkeypatch.setattr(cv, "fit_recipe", lambda *a, **k: pytest.fail("a finished fold was retrained"))
    again, _ = cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match=r"another config, data or device \(width 4 there, 5 here; batch_size 32 "
                                         r"there, 64 here; .*augment 0 there, 1.0 here.*\); move it away"):
        cv.cross_val_predict(images, targets, TrainConfig(width=5, epochs=2), folds=3, fold_dir=tmp_path)
    row = json.loads((tmp_path / "fold0.json").read_text())
    assert torch.load(tmp_path / "fold0.pt", weights_only=True)["threshold"] == row["val_threshold"]  # as predict uses
    assert row["key"]["device"] == "cpu"  # the device type trained on (CUDA trains in bfloat16)
    row["key"]["device"] = "cuda"
    (tmp_path / "fold0.json").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=r"fold0.json was made with another config, data or device \(device 'cuda' "
                                         r"there, 'cpu' here\)"):
        cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path)
    del row["key"]["device"]  # folds from before the field ran on the CPU
    (tmp_path / "fold0.json").write_text(json.dumps(row))
    np.testing.assert_array_equal(first, cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False,
                                                              fold_dir=tmp_path)[0])
    row["test_idx"] = row["test_idx"][::-1]  # the same key, but not this split's fold (another scikit-learn)
    (tmp_path / "fold0.json").write_text(json.dumps(row))
    with pytest.raises(ValueError, match="fold0.json: its test fold is not fold 0 of this split"):
        cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path)


def test_cv_only_trains_the_named_folds_and_reads_the_others(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    fits = record_fits(monkeypatch, lambda tr, va, _: None)
    oof, per_fold = cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path, only=[2])
    assert len(fits) == 1 and sorted(p.name for p in tmp_path.glob("*.json")) == ["fold2.json"]
    test = json.loads((tmp_path / "fold2.json").read_text())["test_idx"]
    assert per_fold["fold"].tolist() == [2] and np.isfinite(oof[test]).all() and np.isnan(oof).sum() == 60 - len(test)
    full, _ = cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path, only=[0, 1])
    assert len(fits) == 3 and np.isfinite(full).all()  # folds 0 and 1 trained, fold 2 read from its file
    with pytest.raises(ValueError, match="fold indices in 0..2"):
        cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, only=[3])


def test_a_fold_from_before_a_config_field_existed_keeps_its_behaviour():
    key = dict(config={k: v for k, v in asdict(TrainConfig()).items() if k not in ("batch_augment", "refit", "tta")},
               folds=5)
    assert cv.same_key(key)["config"]["batch_augment"] is False  # such folds augmented image by image
    assert cv.same_key(key)["config"]["teacher_views"] == TrainConfig().teacher_views
    assert not cv.same_key(key)["config"]["refit"] and TrainConfig().refit  # folds before refit did not refit
    assert not cv.same_key(key)["config"]["tta"] and TrainConfig().tta  # nor predict with the mirror
    assert cv.predicted(dict(key=key, p=[0.2], p_tta=[0.3])) == [0.2]


def test_interval_is_the_t_interval():
    mean, half = cv.interval([1, 2, 3, 4, 5])
    # t(0.975, 4) = 2.7764, sample std = 1.5811, n = 5
    assert mean == 3 and half == pytest.approx(2.7764 * 1.5811 / 5 ** 0.5, rel=1e-4)
    assert np.isnan(cv.interval([0.1])[1])


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_table_shows_paired_differences(monkeypatch, tmp_path):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    for name, eers in ((ablations.REFERENCE, [0.03, 0.02, 0.04, 0.03, 0.03]),
                       ("eyenet16_e60", [0.04, 0.03, 0.04, 0.05, 0.04])):
        for k, e in enumerate(eers):
            row = dict(fold=k, eer=e, eer_tta=e, accuracy=0.97, ece=0.01, best_epoch=10, seconds=5.0,
                       key=dict(config={}, folds=5), test_idx=[], p=[])
            (tmp_path / "cv" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    ablations.table(None, None)
    md = (tmp_path / "cv_ablations.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| eyenet16_e60"))
    diff = np.array([0.04, 0.03, 0.04, 0.05, 0.04]) - np.array([0.03, 0.02, 0.04, 0.03, 0.03])
    m, h = cv.interval(diff)
    assert f"{100 * m:+.2f} ± {100 * h:.2f}" in line and "3.00 ± " in md
    assert "vs the shipped recipe" not in md  # no finished CV of the shipped config among these runs


def test_ablation_table_tags_a_student_whose_teacher_may_have_seen_its_validation_part(monkeypatch, tmp_path):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    for teacher_seed, tagged in ((0, False), (1, True)):
        for name in ("eyenet32_e30", "student16_e32_mix"):
            seed = teacher_seed if name == "eyenet32_e30" else 0
            config = asdict(replace(ablations.config(name), seed=seed))
            (tmp_path / "cv" / name).mkdir(parents=True, exist_ok=True)
            for k in range(5):
                row = dict(fold=k, eer=0.02, eer_tta=0.02, ece=0.01, best_epoch=10, seconds=5.0, test_idx=[k], p=[0.5],
                           key=dict(config=config, folds=5, seed=0, n=100, n_open=50))
                (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
        ablations.table(None, None)
        md = (tmp_path / "cv_ablations.md").read_text()
        assert ("| student16_e32_mix (a teacher may have seen its validation part" in md) == tagged
        assert "| eyenet32_e30 (a teacher" not in md  # the teacher is not
    for f in (tmp_path / "cv" / "eyenet32_e30").glob("*.json"):
        f.unlink()
    with pytest.raises(ValueError, match="eyenet32_e30: no fold results"):  # missing, not seen: no tag
        ablations.table(None, None)


def test_ablation_table_pairs_each_run_with_the_shipped_recipe_too(monkeypatch, tmp_path):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    shipped = asdict(TrainConfig())
    for name, eers, config in ((ablations.REFERENCE, [0.03] * 5, {}), ("eyenet16_e60", [0.04] * 5, {}),
                               ("eyenet16_e100_refit_tta", [0.02, 0.01, 0.02, 0.03, 0.02], shipped)):
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k, e in enumerate(eers):
            row = dict(fold=k, eer=e, eer_tta=e, ece=0.01, best_epoch=10, seconds=5.0,
                       key=dict(config=config, folds=5, seed=0), test_idx=[], p=[])
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    ablations.table(None, None)
    lines = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[1:-1]]
             for l in (tmp_path / "cv_ablations.md").read_text().splitlines() if l.startswith("| eyenet16")}
    header = next(l for l in (tmp_path / "cv_ablations.md").read_text().splitlines() if l.startswith("| run"))
    col = [c.strip() for c in header.split("|")[1:-1]].index("ΔEER vs the shipped recipe (paired)")
    m, h = cv.interval(0.04 - np.array([0.02, 0.01, 0.02, 0.03, 0.02]))
    assert lines["eyenet16_e60"][col] == f"{100 * m:+.2f} ± {100 * h:.2f}"
    assert lines["eyenet16_e100_refit_tta (shipped)"][col] == "(reference)"
    assert lines[ablations.REFERENCE][col].startswith("+1.00")


def test_learning_curves_place_finished_runs_by_their_training_images(monkeypatch, tmp_path, capsys):
    """Each finished run of a curve is a point at its share of the training part (4000 images, 5 folds, 10 %
    validation: 2,880 at 100 %); unfinished runs and curves without a finished run are left out. 4, 3, 2 % at 720,
    1,440, 2,880 images: one point per doubling, so 1.5 % at 2,880 * 2 ** 0.5 images."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    drawn = {}
    monkeypatch.setattr(ablations.plots, "plot_learning_curve", lambda curves, path, goal: drawn.update(curves))
    runs = {"eyenet16_e100_train25": (0.25, 0.04), "eyenet16_e100_train50": (0.5, 0.03), ablations.REFERENCE: (1, 0.02)}
    for name, (fraction, eer) in runs.items():
        key = dict(config={}, folds=5, seed=0, n=4000, n_open=2038, **({"train_fraction": fraction} if fraction < 1
                                                                          else {}))
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k in range(5):
            row = dict(fold=k, eer=eer + 0.001 * (k - 2), key=key, test_idx=[], p=[])
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    (tmp_path / "cv" / "eyenet16_e100_train75").mkdir()
    (tmp_path / "cv" / "eyenet16_e100_train75" / "fold0.json").write_text(  # unfinished: fold 0 only
        json.dumps(dict(fold=0, eer=0.0, key=dict(config={}, folds=5), test_idx=[], p=[])))
    ablations.learning_curves(tmp_path / "lc.png")
    half = cv.interval(0.001 * np.arange(-2, 3))[1]
    assert list(drawn) == ["EyeNet-16, the base recipe"]
    assert drawn["EyeNet-16, the base recipe"] == [pytest.approx((720, 0.04, half)),
                                                      pytest.approx((1440, 0.03, half)),
                                                      pytest.approx((2880, 0.02, half))]
    assert "-1.00 points per doubling of the images; at that rate 1.5% at about 4,073 images" in capsys.readouterr().out


def test_a_refit_learning_curve_counts_the_validation_images_its_weights_trained_on(monkeypatch, tmp_path):
    """With the refit the scored weights train on the training share and the 320 validation images."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    drawn = {}
    monkeypatch.setattr(ablations.plots, "plot_learning_curve", lambda curves, path, goal: drawn.update(curves))
    for name, fraction, eer in (("eyenet16_e100_refit_tta_train25", 0.25, 0.04), ("eyenet16_e100_refit_tta", 1, 0.03)):
        key = dict(config={}, folds=5, seed=0, n=4000, **({"train_fraction": fraction} if fraction < 1 else {}))
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k in range(5):
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(
                json.dumps(dict(fold=k, eer=eer, key=key, test_idx=[], p=[])))
    ablations.learning_curves(tmp_path / "lc.png")
    assert [p[0] for p in drawn["EyeNet-16, the shipped recipe, seed 0"]] == [720 + 320, 3200]


def test_learning_curves_without_finished_runs_say_so_and_draw_nothing(monkeypatch, tmp_path):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    (tmp_path / "lc.png").write_bytes(b"earlier figure")
    with pytest.raises(SystemExit, match="no finished run of any learning curve in .*eyenet16_e100_train25"):
        ablations.learning_curves(tmp_path / "lc.png")
    assert (tmp_path / "lc.png").read_bytes() == b"earlier figure"


def test_ablation_average_prints_its_paired_difference(monkeypatch, tmp_path, capsys):
    """A run's out-of-fold P(open) that separates every test fold (EER 0) is 3, 2, 4, 3, 3 points below those
    reference folds."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    targets = np.tile([0.0, 1.0], 50)
    for name in (ablations.REFERENCE, "eyenet16_e60"):
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k, e in enumerate([0.03, 0.02, 0.04, 0.03, 0.03]):
            idx = list(range(20 * k, 20 * k + 20))
            row = dict(fold=k, eer=e, test_idx=idx, val_threshold=0.5, p=(0.1 + 0.8 * targets[idx]).tolist(),
                       key=dict(config=dict(tta=False), folds=5))
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    ablations.ensemble(["eyenet16_e60"], targets)
    out = capsys.readouterr().out
    assert "EER 0.00%, paired ΔEER vs" in out and "(per fold [-3.0, -2.0, -4.0, -3.0, -3.0])" in out


def test_ablation_average_of_two_runs_averages_their_p_open(monkeypatch, tmp_path, capsys):
    """Each run alone is wrong on a different half of every fold (EER 50 %); their average separates it (0 %)."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    targets = np.tile([0.0, 1.0], 50)
    for name, wrong in (("eyenet16_e60", 0), ("eyenet16_e30", 1)):
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k in range(5):
            idx = np.arange(20 * k, 20 * k + 20)
            right = 0.2 + 0.6 * targets[idx]
            p = np.where((idx // 2) % 2 == wrong, 0.5 + 0.2 * (targets[idx] - 0.5) * -1, right)
            row = dict(fold=k, eer=0.5, test_idx=idx.tolist(), val_threshold=0.5, p=p.tolist(),
                       key=dict(config={}, folds=5))
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    alone = metrics.eer(targets, cv.out_of_fold(ablations.load("eyenet16_e60"), 100)[0])[0]
    p, f = ablations.ensemble(["eyenet16_e60", "eyenet16_e30"], targets)
    assert alone > 0.2 and f["eer"].max() == 0.0
    assert np.allclose(p, np.mean([cv.out_of_fold(ablations.load(n), 100)[0] for n in ("eyenet16_e60", "eyenet16_e30")],
                                  axis=0))


def test_paired_differences_match_folds_by_number_not_position():
    ablations = load_script("cv_ablations")
    f = pd.DataFrame(dict(fold=[3, 1], eer=[0.05, 0.02]))
    ref = [dict(fold=k, eer=0.01 * k) for k in (0, 1, 2, 3, 4)]
    assert np.allclose(ablations.paired_diff(f, ref), [0.05 - 0.03, 0.02 - 0.01])


def test_ablation_load_refuses_folds_of_another_config_or_data(monkeypatch, tmp_path):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    targets = np.tile([0.0, 1.0], 50)
    key = dict(config=asdict(ablations.config("eyenet16_e60")), folds=5, seed=0, n=100, n_open=50)
    (tmp_path / "cv" / "eyenet16_e60").mkdir(parents=True)
    for k, (_, test) in enumerate(data.kfold(targets, 5, 0)):
        idx = test.tolist()
        row = dict(fold=k, eer=0.0, test_idx=idx, val_threshold=0.5, p=(0.1 + 0.8 * targets[idx]).tolist(), key=key)
        (tmp_path / "cv" / "eyenet16_e60" / f"fold{k}.json").write_text(json.dumps(row))
    ablations.DATA[:] = [(targets, "")]
    assert len(ablations.load("eyenet16_e60")) == 5
    ablations.DATA[:] = [(1 - targets, "")]  # other labels: the stored EERs no longer recompute
    with pytest.raises(ValueError, match="eyenet16_e60: fold 0 was made on other data"):
        ablations.load("eyenet16_e60")
    ablations.DATA[:] = [(targets, "")]
    odd = json.loads((tmp_path / "cv" / "eyenet16_e60" / "fold2.json").read_text())
    odd["key"]["config"]["epochs"] = 30
    (tmp_path / "cv" / "eyenet16_e60" / "fold2.json").write_text(json.dumps(odd))
    with pytest.raises(ValueError, match="eyenet16_e60: its folds are not all of the config declared in RUNS"):
        ablations.load("eyenet16_e60")
    odd["key"]["config"]["epochs"] = 60
    odd["key"]["inputs"] = "0123456789abcdef"  # a fold rerun after the inputs fingerprint, beside older ones
    (tmp_path / "cv" / "eyenet16_e60" / "fold2.json").write_text(json.dumps(odd))
    assert len(ablations.load("eyenet16_e60")) == 5
    folds = [tmp_path / "cv" / "eyenet16_e60" / f"fold{k}.json" for k in range(5)]
    rows = [json.loads(f.read_text()) for f in folds]
    for change in (dict(seed=1), dict(folds=4)):  # another split: its fold k is not the other runs' fold k
        for f, row in zip(folds, rows):
            f.write_text(json.dumps({**row, "key": {**row["key"], **change}}))
        with pytest.raises(ValueError, match="eyenet16_e60: its test folds are not those of the 5-fold split"):
            ablations.load("eyenet16_e60", partial=True)
    other = data.kfold(targets, 5, 1)[2][1].tolist()  # fold 2 of another split under this split's key
    for f, row in zip(folds, rows):
        f.write_text(json.dumps(row if row["fold"] != 2 else
                                {**row, "test_idx": other, "p": (0.1 + 0.8 * targets[other]).tolist()}))
    with pytest.raises(ValueError, match="eyenet16_e60: its test folds are not those of the 5-fold split"):
        ablations.load("eyenet16_e60")
    folds[2].write_text(json.dumps(rows[2]))
    assert len(ablations.load("eyenet16_e60")) == 5
    declared = ablations.RUNS["eyenet16_e60"]
    for extra in (dict(train_fraction=0.5), dict(teachers=["eyenet16_e30"]), dict(undisputed_only=True),
                  dict(prune_folds=3)):  # a declaration changed after its folds ran
        monkeypatch.setitem(ablations.RUNS, "eyenet16_e60", {**declared, **extra})
        with pytest.raises(ValueError, match="eyenet16_e60: its folds are not all of the config declared"):
            ablations.load("eyenet16_e60")


def refused_before_the_data(*argv):
    """stderr of scripts/cv_ablations.py refusing a command line, as it must before it reads the data: with no data
    to read (and a time limit), a regression fails here instead of training into results/."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "cv_ablations.py"
    r = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300,
                       env={**os.environ, data.DATA_ENV: "/nonexistent"})
    assert r.returncode == 2, r.stderr
    return r.stderr


@pytest.mark.parametrize("argv, says", [(["--ensemble", "eyenet16_e30", "eyenet16_e30"], "--ensemble: a run named twice"),
                                        (["--average-curve", "eyenet16_e30", "eyenet16_e30"],
                                         "--average-curve: a run named twice"),
                                        (["--seeds", "eyenet16_e30", "eyenet16_e60"], "--seeds: ['eyenet16_e30', "
                                         "'eyenet16_e60'] are not all one recipe")])
def test_ablation_modes_refuse_runs_that_would_mislead(argv, says):
    assert says in refused_before_the_data(*argv)


def test_ablation_average_pairs_with_another_run_with_tta_as_asked(monkeypatch, tmp_path, capsys):
    """--against RUN: the average (EER 0 on every fold) against that run's folds, its TTA EERs when TTA is on."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    targets = np.tile([0.0, 1.0], 50)
    for name, eer, eer_tta in (("eyenet16_e60", 0.05, 0.05), ("eyenet16_e30", 0.03, 0.01)):
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k in range(5):
            idx = list(range(20 * k, 20 * k + 20))
            p = (0.1 + 0.8 * targets[idx]).tolist()
            row = dict(fold=k, eer=eer, eer_tta=eer_tta, test_idx=idx, val_threshold=0.5, p=p, p_tta=p,
                       key=dict(config={}, folds=5))
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    ablations.ensemble(["eyenet16_e60"], targets, against="eyenet16_e30")
    ablations.ensemble(["eyenet16_e60"], targets, tta=True, against="eyenet16_e30")
    plain, tta = capsys.readouterr().out.splitlines()
    assert "paired ΔEER vs eyenet16_e30 -3.00 ± 0.00" in plain
    assert "paired ΔEER vs eyenet16_e30 with mirror TTA -1.00 ± 0.00" in tta


def test_ablation_average_scores_a_tta_run_as_its_checkpoint_predicts(monkeypatch, tmp_path, capsys):
    """A run whose checkpoint uses mirror TTA enters a plain average with its mirrored P(open), not its unmirrored
    ones: here the mirrored ones separate every fold (EER 0) and the unmirrored ones are all wrong (EER 100 %)."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    targets = np.tile([0.0, 1.0], 50)
    (tmp_path / "cv" / "eyenet16_e60").mkdir(parents=True)
    for k in range(5):
        idx = list(range(20 * k, 20 * k + 20))
        row = dict(fold=k, eer=0.0, test_idx=idx, val_threshold=0.5, p=(0.9 - 0.8 * targets[idx]).tolist(),
                   p_tta=(0.1 + 0.8 * targets[idx]).tolist(), key=dict(config=dict(tta=True), folds=5))
        (tmp_path / "cv" / "eyenet16_e60" / f"fold{k}.json").write_text(json.dumps(row))
    p, folds = ablations.ensemble(["eyenet16_e60"], targets)
    assert np.allclose(p, 0.1 + 0.8 * targets) and (folds["eer"] == 0).all()
    assert "EER 0.00%" in capsys.readouterr().out


def test_over_seeds_prints_the_spread_of_the_runs_means(monkeypatch, tmp_path, capsys):
    """Runs whose fold EERs average 2 and 3 %: 2.50 ± t(0.975, 1) * 0.7071 / 2 ** 0.5 over the two."""
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    for name, eer in (("eyenet16_e60", 0.02), ("eyenet16_e30", 0.03)):
        (tmp_path / "cv" / name).mkdir(parents=True)
        for k in range(5):
            row = dict(fold=k, eer=eer + 0.001 * (k - 2), accuracy_at_val_threshold=0.97, accuracy=0.965, ece=0.015,
                       temperature=0.5 + 0.01 * k, val_threshold=0.3 + 0.1 * k, key=dict(folds=5, config={}),
                       p=[0.0, 1.0] * 50)  # certain scores: a calibrated model's ECE is 0
            (tmp_path / "cv" / name / f"fold{k}.json").write_text(json.dumps(row))
    targets = np.array([0, 1] * 50)
    for k in range(5):  # test folds of 100 images, scored as certain
        rows = (tmp_path / "cv" / name / f"fold{k}.json" for name in ("eyenet16_e60", "eyenet16_e30"))
        for path in rows:
            path.write_text(json.dumps({**json.loads(path.read_text()), "test_idx": list(range(100))}))
    ablations.over_seeds(["eyenet16_e60", "eyenet16_e30"], targets)
    out = capsys.readouterr().out
    half = cv.interval([2.0, 3.0])[1]
    assert f"eer: per run 2.00, 3.00; over the 2 runs 2.50 ± {half:.2f}% (from 2.00 to 3.00)" in out
    assert "ece: per run 1.50, 1.50; over the 2 runs 1.50 ± 0.00%" in out
    assert "accuracy (at 0.5): per run 96.50, 96.50; over the 2 runs 96.50 ± 0.00%" in out
    assert "fold temperatures: from 0.500 to 0.540" in out and "fold validation thresholds: from 0.300 to 0.700" in out
    assert ("ece of calibrated models with the same scores, over the 10 folds: mean 0.00% against the runs' 1.50% (a "
            "calibrated model's mean: 95th percentile 0.00%, at or above 1.50% in 0.0% of 1000 draws); with each "
            "fold's temperature refit on its own test fold (an oracle): ECE 0.00% against 0.00%") in out


def test_oracle_temperature_calibrates_scores_that_are_only_too_sharp():
    ablations = load_script("cv_ablations")
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-3 * z))  # three times too sharp: a temperature of 3 calibrates them
    line = ablations.oracle_temperature([dict(p=p.tolist(), test_idx=list(range(4000)), key=dict(config={}))], y)
    ece, floor = map(float, re.search(r"ECE ([\d.]+)% against ([\d.]+)%", line).groups())
    assert 100 * metrics.ece(y, p) > 5 and ece < 1.2 * floor + 0.2


def test_benchmark_times_the_backends_in_turn_and_shows_median_and_range():
    benchmark = load_script("benchmark")
    calls = []
    r = benchmark.rates([lambda: calls.append("a"), lambda: calls.append("b")], n=10, repeats=3)
    assert r.shape == (3, 2) and (r > 0).all() and calls == ["a", "b"] * 4  # a warm-up round, then three
    assert benchmark.spread(np.array([3.0, 1.0, 2.0]), ".1f") == "2.0 (1.0-3.0)"
    assert benchmark.spread(np.array([2.0]), ".0f") == "2"


def test_ablation_against_without_ensemble_is_an_error():
    """--against only qualifies --ensemble: alone it would be silently ignored."""
    assert "--against pairs an --ensemble with a run" in refused_before_the_data("--against", "eyenet16_e30")


def test_seeds_of_a_single_run_is_an_error():
    assert "--seeds needs two or more different runs" in refused_before_the_data("--seeds", "eyenet16_e30",
                                                                                  "eyenet16_e30")


def test_ablation_run_prints_each_folds_paired_difference(monkeypatch, tmp_path, capsys):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    for k, e in enumerate([0.03, 0.02, 0.04, 0.03, 0.03]):
        (tmp_path / "cv" / ablations.REFERENCE).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cv" / ablations.REFERENCE / f"fold{k}.json").write_text(
            json.dumps(dict(fold=k, eer=e, key=dict(config={}, folds=5), test_idx=[], p=[])))
    per_fold = pd.DataFrame(dict(fold=[0, 1, 2, 3, 4], eer=[0.04, 0.02, 0.035, 0.03, 0.03]))
    monkeypatch.setattr(ablations, "cross_val_predict", lambda *a, **kw: (None, per_fold))
    ablations.run("eyenet16_e60", None, None, None)
    assert "per fold: [1.0, 0.0, -0.5, 0.0, 0.0]" in capsys.readouterr().out


def test_reproduce_trains_a_run_again_and_tells_identical_folds_from_others(monkeypatch, tmp_path, capsys):
    ablations = load_script("cv_ablations")
    monkeypatch.setattr(ablations, "OUT", tmp_path)
    monkeypatch.setitem(ablations.RUNS, "eyenet16_e60", dict(width=4, epochs=2, batch_size=32, augment=0,
                                                             device="cpu"))
    images, targets = synthetic(60)
    ablations.DATA[:] = [(targets, cv.data_id(images, targets))]
    ablations.run("eyenet16_e60", images, targets, None)  # the committed run
    fold1 = tmp_path / "cv" / "eyenet16_e60" / "fold1.json"
    row = json.loads(fold1.read_text())
    fold1.write_text(json.dumps({**row, "p": [0.5 + p / 2 for p in row["p"]]}))  # as if trained otherwise
    capsys.readouterr()
    ablations.reproduce("eyenet16_e60", images, targets, None, tmp_path / "again", only=[0, 1])
    out = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    gap = max(0.5 - p / 2 for p in row["p"])
    assert "max |difference| in P(open) p 0 (bit-identical), p_tta 0 (bit-identical); EER" in out["fold 0"]
    assert f"max |difference| in P(open) p {gap:.3g}, p_tta 0 (bit-identical); EER" in out["fold 1"]
    assert "fold 2" not in out and f"on data {cv.data_id(images, targets)}" in out["fold 0"]
    assert f"(now, into {tmp_path / 'again'})" in out["fold 0"]
    cpu = files.provenance("cpu")["machine"]  # where floats differ, the machines say whether the CPU kernels did
    assert out["fold 0"].endswith(f"{cpu['cpu']} {cpu['cpu_capability']}".strip())
    assert out["fold 0"].count(cpu["platform"].removeprefix("Linux-").split("-x86_64")[0]) == 2
    ablations.reproduce("eyenet16_e60", images, targets, None, tmp_path / "again", only=[0])  # resumed: said so
    assert f"(found in {tmp_path / 'again'})" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "again").glob("*.json")) == ["fold0.json", "fold1.json"]
    results = Path(__file__).resolve().parent.parent / "results"
    assert "--into a folder outside results/" in refused_before_the_data("--reproduce", "eyenet16_e60", "--into",
                                                                         str(results / "cv" / "x"))
    assert "--into is --reproduce's fold folder" in refused_before_the_data("eyenet16_e60", "--into", str(tmp_path))
    (tmp_path / "a_file").write_text("")
    assert "a_file is a file; give a folder" in refused_before_the_data("--reproduce", "eyenet16_e60", "--into",
                                                                        str(tmp_path / "a_file"))


@pytest.mark.parametrize("change, field", [(dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"),
                                           (dict(batch_size=0), "batch_size"), (dict(arch="vgg"), "arch"),
                                           (dict(invert=1.5), "invert"), (dict(erase=-0.1), "erase"),
                                           (dict(val_fraction=0), "val_fraction"),
                                           (dict(label_smoothing=1), "label_smoothing"),
                                           (dict(resample="cubic"), "resample"),
                                           (dict(augment=6), "augment"),
                                           (dict(zoom=0.6, augment=2.0), "augment"),  # zoom x augment alone
                                           (dict(affine_p=1.0, batch_augment=False), "affine_p"),
                                           (dict(affine_p=1.5), "affine_p"),
                                           (dict(teacher_views=3), "teacher_views")])
def test_config_refuses_bad_values_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=f"^{field}: must be") as err:
        TrainConfig(**change)
    assert err.value.field == field


def test_auto_threads_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(experiment.os, "getloadavg", lambda: (1.2, 0, 0))
    monkeypatch.setattr(experiment.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert experiment.auto_threads() == 3
    monkeypatch.setattr(experiment.os, "getloadavg", lambda: (9.0, 0, 0))
    assert experiment.auto_threads() == 1
    for name in ("getloadavg", "sched_getaffinity"):  # Windows has neither (macOS: no affinity)
        monkeypatch.delattr(experiment.os, name)
    monkeypatch.setattr(experiment.os, "cpu_count", lambda: 4)
    assert experiment.auto_threads() == 4


@pytest.mark.parametrize("value, smoke", [(None, False), ("", False), ("0", False), ("1", True), (" 1 ", True)])
def test_smoke_mode_reads_the_switch(monkeypatch, value, smoke):
    if value is None:
        monkeypatch.delenv("EYE_CLF_SMOKE", raising=False)
    else:
        monkeypatch.setenv("EYE_CLF_SMOKE", value)
    assert experiment.smoke_mode() is smoke


@pytest.mark.parametrize("typo", ["true", "yes", "l", "2"])
def test_smoke_mode_refuses_a_typo_instead_of_starting_a_full_run(monkeypatch, typo):
    monkeypatch.setenv("EYE_CLF_SMOKE", typo)
    with pytest.raises(ValueError, match=f"EYE_CLF_SMOKE='{typo}'.*\"1\" for a smoke run"):
        experiment.smoke_mode()


def test_distillation_trains_towards_the_teachers_on_the_same_views():
    images, targets = synthetic(200)
    tr, va, _ = data.split(targets, seed=0)
    teacher, _ = train.fit(images, targets, tr, va, SMALL, progress=False)
    flipped = targets.copy()
    flipped[tr] = 1 - targets[tr]  # training labels that contradict the teacher: with distill=1 only it counts
    eers = {}
    for w in (0.0, 1.0):
        cfg = TrainConfig(**{**asdict(SMALL), "distill": w, "epochs": 4})
        student, _ = train.fit(images, flipped, tr, va, cfg, progress=False, teachers=[teacher] if w else ())
        eers[w] = metrics.eer(targets[va], models.scores(student, images[va]))[0]
    assert eers[1.0] < 0.1 < 0.9 < eers[0.0]  # the teacher's ranking, not the contradicting labels'
    with pytest.raises(ValueError, match="needs both teachers"):
        train.fit(images, targets, tr, va, TrainConfig(distill=0.5), progress=False)


def test_cv_students_distil_from_the_teacher_of_their_own_fold(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, replace(SMALL, refit=False), folds=3, progress=False,
                         fold_dir=tmp_path / "teacher")  # a teacher never trains on the validation part
    used = record_fits(monkeypatch, lambda tr, va, t: t[0].state_dict()["head.weight"].clone())
    student = TrainConfig(**{**asdict(SMALL), "distill": 0.5})
    cv.cross_val_predict(images, targets, student, folds=3, progress=False, fold_dir=tmp_path / "student",
                         teacher_dirs=[tmp_path / "teacher"])
    assert len(used) == 3  # one validated student fit a fold, each recorded
    for k, w in enumerate(used):
        expected = torch.load(tmp_path / "teacher" / f"fold{k}.pt", weights_only=True)["state_dict"]["head.weight"]
        assert torch.equal(w, expected)
    assert json.loads((tmp_path / "student" / "fold0.json").read_text())["key"]["teachers"] == ["teacher"]


def test_a_resumed_student_is_refused_when_a_teacher_may_have_seen_its_validation_part(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, replace(SMALL, refit=False), folds=3, progress=False,
                         fold_dir=tmp_path / "teacher")
    student = TrainConfig(**{**asdict(SMALL), "distill": 0.5})
    cv.cross_val_predict(images, targets, student, folds=3, progress=False, fold_dir=tmp_path / "student",
                         teacher_dirs=[tmp_path / "teacher"])
    monkeypatch.setattr(cv, "fit_recipe", lambda *a, **k: pytest.fail("a finished fold was retrained"))
    for k in range(3):  # the teacher's folds, as if rerun with another seed: another validation split
        row = json.loads((tmp_path / "teacher" / f"fold{k}.json").read_text())
        row["key"]["config"]["seed"] = 1
        (tmp_path / "teacher" / f"fold{k}.json").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=r"fold0.json: its fold model may have seen the student's validation or "
                                         r"test images \(seed 1, the student's 0\)"):
        cv.cross_val_predict(images, targets, student, folds=3, progress=False, fold_dir=tmp_path / "student",
                             teacher_dirs=[tmp_path / "teacher"])


def test_learning_curve_folds_train_on_a_part_and_keep_the_validation_part(monkeypatch, tmp_path):
    images, targets = synthetic(100)
    sizes = record_fits(monkeypatch, lambda tr, va, _: (len(tr), len(va)))
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "all")
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "half",
                         train_fraction=0.5)
    assert sizes == [(45, 5), (45, 5), (22, 5), (22, 5)]
    assert json.loads((tmp_path / "half" / "fold0.json").read_text())["key"]["train_fraction"] == 0.5


def test_untrainable_images_leave_only_the_training_parts(monkeypatch, tmp_path):
    images, targets = synthetic(100)
    trainable = np.arange(100) % 4 != 0
    splits = record_fits(monkeypatch, lambda tr, va, _: (set(tr), set(va)))
    refits, real_fit = [], train.fit

    def recording_refit(images_, targets_, train_idx, val_idx, *args, **kw):  # train.refit's call of train.fit
        if not len(val_idx):
            refits.append(set(train_idx))
        return real_fit(images_, targets_, train_idx, val_idx, *args, **kw)
    monkeypatch.setattr(train, "fit", recording_refit)
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "all")
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "some",
                         trainable=trainable)
    assert len(splits) == 4 and SMALL.refit and len(refits) == 4
    for (train_all, val_all), refit_all, refit_some in zip(splits[:2], refits[:2], refits[2:]):
        assert refit_all == train_all | val_all and refit_some == {i for i in refit_all if trainable[i]}
    for (train_all, val_all), (train_some, val_some) in zip(splits[:2], splits[2:]):
        assert train_some == {i for i in train_all if trainable[i]} and val_some == val_all
    assert json.loads((tmp_path / "some" / "fold0.json").read_text())["key"]["untrainable"] == 25
    tests = [json.loads((tmp_path / d / "fold1.json").read_text())["test_idx"] for d in ("all", "some")]
    assert tests[0] == tests[1]
    with pytest.raises(ValueError, match="trainable: a mask of 100 images"):
        cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, trainable=trainable[:-1])
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "some",
                         trainable=trainable)  # resumed: read, not retrained
    assert len(splits) == 4
    with pytest.raises(ValueError, match="another config, data or device"):  # another mask, same count of left-out images
        cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path / "some",
                             trainable=np.roll(trainable, 1))


def test_pruned_folds_drop_the_label_errors_an_inner_cv_of_the_training_part_finds(monkeypatch, tmp_path):
    images, targets = synthetic(160)
    flipped = np.arange(0, 160, 10)  # a tenth of the labels wrong
    noisy = targets.copy()
    noisy[flipped] = 1 - noisy[flipped]
    cfg = TrainConfig(width=8, epochs=4, batch_size=16, augment=0, label_smoothing=0, refit=False)
    fits = record_fits(monkeypatch, lambda tr, va, _: (set(tr), set(va)))
    cv.cross_val_predict(images, noisy, cfg, folds=2, progress=False, fold_dir=tmp_path / "all")
    cv.cross_val_predict(images, noisy, cfg, folds=2, progress=False, fold_dir=tmp_path / "pruned", prune_folds=2)
    # per outer fold: its own fit, then 2 inner fits (indices into its training part) and the pruned fit
    (train_all, val_all), (train_pruned, val_pruned) = fits[0], fits[4]
    assert len(fits) == 2 + 2 * 3
    row = json.loads((tmp_path / "pruned" / "fold0.json").read_text())
    pruned = set(row["pruned"])
    assert row["key"]["prune_folds"] == 2 and row["prune_seconds"] > 0
    assert pruned and pruned <= train_all and train_pruned == train_all - pruned and val_pruned == val_all
    caught = pruned & set(flipped.tolist())
    # most wrong labels found, and most of what is dropped is wrong (a tenth would be, dropped at random)
    assert len(caught) >= 0.8 * len(set(flipped.tolist()) & train_all) and len(caught) > 0.5 * len(pruned)
    with pytest.raises(ValueError, match="prune_folds: the pruning CV trains on the labels alone"):
        cv.cross_val_predict(images, noisy, TrainConfig(soft_labels=True), folds=2, prune_folds=2, soft=noisy)
    with pytest.raises(ValueError, match="prune_folds: the refit would train on the validation part"):
        cv.cross_val_predict(images, noisy, TrainConfig(), folds=2, prune_folds=2)
    for bad in (1, -2):  # refused before any training, naming the argument
        with pytest.raises(ValueError, match=f"prune_folds: 0 .* or an inner fold count of 2 or more, got {bad}"):
            cv.cross_val_predict(images, noisy, cfg, folds=2, fold_dir=tmp_path / "bad", prune_folds=bad)
    assert not (tmp_path / "bad").exists()


def test_the_recipes_cv_is_never_a_pruned_or_undisputed_only_run(tmp_path):
    images, targets = synthetic(60)
    small = replace(SMALL, refit=False)  # pruning runs do not refit
    cv.cross_val_predict(images, targets, small, progress=False, fold_dir=tmp_path / "a_pruned", prune_folds=2)
    cv.cross_val_predict(images, targets, small, progress=False, fold_dir=tmp_path / "b_undisputed",
                         trainable=np.arange(60) % 6 != 0)
    assert experiment.cv_of(small, tmp_path) is None  # same config, but not trained on every training image
    cv.cross_val_predict(images, targets, small, progress=False, fold_dir=tmp_path / "c_plain")
    assert experiment.cv_of(small, tmp_path)[0] == "c_plain"


def test_shipped_model_is_compared_only_on_images_it_never_saw(monkeypatch, tmp_path):
    images, targets = synthetic(100)
    tr, va, _ = data.split(targets, seed=0)
    model, history = train.fit(images, targets, tr, va, SMALL, progress=False)
    ckpt = train.checkpoint(model, SMALL, {}, history)
    monkeypatch.setattr(experiment, "SHIPPED", tmp_path)
    val = np.arange(60, 100)
    for seen, expected in ((range(0, 80), 20), (range(0, 100), None)):
        ckpt["training_images"] = [data.image_hash(images[i]) for i in seen]
        train.save_checkpoint(ckpt, tmp_path / "eye_clf.pt")
        res = experiment.compare_with_shipped(images, targets, val)
        assert (res and res["images"]) == expected


def test_ship_refuses_to_replace_an_installed_packages_model(monkeypatch, tmp_path, tiny_ckpt):
    shipped = tmp_path / "site-packages" / "eye_clf" / "shipped"
    shipped.mkdir(parents=True)
    monkeypatch.setattr(experiment, "SHIPPED", shipped)
    with pytest.raises(ValueError, match="ship replaces the model of an eye_clf checkout; this eye_clf is installed"):
        experiment.ship(tmp_path)
    assert not any(shipped.iterdir())


def test_ship_command_promotes_a_complete_run_and_refuses_a_partial_one(monkeypatch, tmp_path, tiny_ckpt):
    from eye_clf.__main__ import main
    shipped, figures, run = tmp_path / "checkout" / "eye_clf" / "shipped", tmp_path / "figures", tmp_path / "run"
    for d in (shipped, figures, run):
        d.mkdir(parents=True)
    (tmp_path / "checkout" / "pyproject.toml").write_text('[project]\nname = "eye-clf"\n')
    monkeypatch.setattr(experiment, "SHIPPED", shipped)
    monkeypatch.setattr(experiment, "FIGURES", figures)
    for wrong, message in ((tmp_path / "typo", f"run folder not found: {tmp_path / 'typo'}"),
                           (tiny_ckpt, f"not a folder: {tiny_ckpt} \\(ship takes the run folder that `train` wrote")):
        with pytest.raises(SystemExit, match=f"^error: {message}"):
            main(["ship", str(wrong)])
    (run / "eye_clf.pt").write_bytes(tiny_ckpt.read_bytes())
    with pytest.raises(SystemExit, match="not a complete run folder: missing .*history.csv"):
        main(["ship", str(run)])
    assert not any(shipped.iterdir()) and not any(figures.iterdir())  # nothing replaced
    for name in ("history.csv", "history.json", "train_val_loss_metrics_history.png"):
        (run / name).write_text(name)

    def broken(*args):
        raise RuntimeError("export failed")
    with monkeypatch.context() as m:
        m.setattr("eye_clf.export.export_onnx", broken)
        with pytest.raises(RuntimeError, match="export failed"):
            experiment.ship(run)
    assert not any(shipped.iterdir()) and not any(figures.iterdir())  # the export comes before any copy
    main(["ship", str(run)])
    assert (shipped / "eye_clf.pt").read_bytes() == tiny_ckpt.read_bytes() and (shipped / "eye_clf.onnx").is_file()
    assert (figures / "history.csv").read_text() == "history.csv"

    before = {f: f.read_bytes() for d in (shipped, figures) for f in d.iterdir()}
    for name in ("history.csv", "history.json", "train_val_loss_metrics_history.png"):
        (run / name).write_text(f"new {name}")
    copy = shutil.copyfile

    def copy_until_the_png(src, dst):  # the png is written last: its failure comes after every other file's copy
        if str(src).endswith(".png"):
            raise OSError(28, "No space left on device")
        return copy(src, dst)
    with monkeypatch.context() as m:
        m.setattr(shutil, "copyfile", copy_until_the_png)
        with pytest.raises(OSError, match="No space left"):
            experiment.ship(run)
    assert {f: f.read_bytes() for d in (shipped, figures) for f in d.iterdir()} == before  # the old set, no leftovers


def test_teacher_without_distill_is_refused_before_any_work(tiny_ckpt):
    from eye_clf.__main__ import main
    with pytest.raises(SystemExit, match="--teacher needs --distill"):
        main(["train", "--teacher", str(tiny_ckpt), "--limit", "40", "--out", "/nonexistent/never"])


def test_view_bank_distillation_trains_towards_the_teachers():
    images, targets = synthetic(200)
    tr, va, _ = data.split(targets, seed=0)
    teacher, _ = train.fit(images, targets, tr, va, SMALL, progress=False)
    flipped = targets.copy()
    flipped[tr] = 1 - targets[tr]
    cfg = TrainConfig(**{**asdict(SMALL), "distill": 1.0, "epochs": 4, "teacher_views": 2})
    student, _ = train.fit(images, flipped, tr, va, cfg, progress=False, teachers=[teacher])
    assert metrics.eer(targets[va], models.scores(student, images[va]))[0] < 0.1
    with pytest.raises(ValueError, match="needs cfg.teacher_views"):
        train.fit(images, targets, tr, va, TrainConfig(distill=0.5), progress=False, bank=(None, None))


@pytest.mark.parametrize("batch_augment", [False, True])
def test_augmented_views_are_reproducible_augmented_and_leave_the_global_rng_alone(batch_augment):
    images, _ = synthetic(20)
    cfg = TrainConfig(teacher_views=3, distill=0.5, seed=5, batch_augment=batch_augment)
    torch.manual_seed(0)
    views = train.augmented_views(images, cfg)
    after = torch.rand(())
    torch.manual_seed(0)
    assert torch.equal(views, train.augmented_views(images, cfg)) and torch.rand(()) == after
    assert views.shape == (3, 20, 24, 24) and views.dtype == torch.uint8
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[0], torch.as_tensor(images))


def test_cv_scores_each_teacher_fold_on_the_views_once(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, replace(SMALL, refit=False), folds=3, progress=False,
                         fold_dir=tmp_path / "teacher")  # a teacher never trains on the validation part
    calls = []
    real = cv.view_proba
    monkeypatch.setattr(cv, "view_proba", lambda t, v: calls.append(len(v)) or real(t, v))
    for name, w in (("mixed", 0.5), ("soft", 1.0)):  # two students on the same views: one scoring
        cfg = TrainConfig(**{**asdict(SMALL), "distill": w, "teacher_views": 2})
        cv.cross_val_predict(images, targets, cfg, folds=3, progress=False, fold_dir=tmp_path / name,
                             teacher_dirs=[tmp_path / "teacher"])
    assert calls == [2, 2, 2]
    cached = sorted((tmp_path / "teacher").glob("fold*.views-*.npy"))
    assert len(cached) == 3
    cached[0].write_bytes(b"not an array")
    cfg = TrainConfig(**{**asdict(SMALL), "distill": 0.5, "teacher_views": 2})
    with pytest.raises(ValueError, match=f"{cached[0].name}: unreadable teacher scores"):
        cv.cross_val_predict(images, targets, cfg, folds=3, progress=False, fold_dir=tmp_path / "third",
                             teacher_dirs=[tmp_path / "teacher"])


def test_cached_teacher_scores_follow_the_teacher_file_and_are_checked(tiny_ckpt, tmp_path, monkeypatch):
    teacher = tmp_path / "fold0.pt"
    teacher.write_bytes(tiny_ckpt.read_bytes())
    views = torch.from_numpy(synthetic(6)[0]).reshape(2, 3, 24, 24)  # 2 views of 3 images
    calls, real = [], cv.view_proba
    monkeypatch.setattr(cv, "view_proba", lambda t, v: calls.append(1) or real(t, v))
    first = cv._view_proba(teacher, views)
    assert first.shape == (2, 3) and np.array_equal(cv._view_proba(teacher, views), first) and len(calls) == 1
    ckpt = torch.load(teacher, weights_only=False)
    ckpt["state_dict"]["head.bias"] += 3  # the teacher's CV was run again: other weights, same file name
    torch.save(ckpt, teacher)
    assert not np.allclose(cv._view_proba(teacher, views), first) and len(calls) == 2
    for cached in tmp_path.glob("fold0.views-*.npy"):
        np.save(cached, np.zeros(5))
    with pytest.raises(ValueError, match=r"teacher scores of shape \(5,\), expected \(2, 3\); delete the file"):
        cv._view_proba(teacher, views)


def test_label_noise_splits_the_cv_errors_between_the_images_both_annotators_label_and_the_others(real_root):
    """scripts/label_noise.py on the committed CV of the shipped recipe: the two parts' error rates add up to its
    errors, and its last line compares the models' disagreement with the reference with what independence predicts."""
    script = Path(__file__).parent.parent / "scripts" / "label_noise.py"
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       env={**os.environ, "EYE_CLF_DATA": str(real_root)})
    assert r.returncode == 0, r.stderr
    wrong, n = map(int, re.search(r"(\d+) of (\d+) images wrong out of fold", r.stdout).groups())
    part = re.search(r"disagree with the reference on ([\d.]+)% of the (\d+) images both extra annotators label, "
                     r"and on ([\d.]+)% of the (\d+) others \((\d+) of the (\d+) errors\)", r.stdout).groups()
    rate_both, n_both, rate_other, n_other, wrong_other, total = map(float, part)
    assert n_both + n_other == n and total == wrong and round(rate_other * n_other / 100) == wrong_other
    assert round(rate_both * n_both / 100) + wrong_other == wrong
    assert re.search(r"independent errors at those two rates would make .* disagree on [\d.]+% of those \d+ images; "
                     r"they disagree on ([\d.]+)%", r.stdout).group(1) == f"{rate_both:.2f}"


def test_robustness_crops_crop_and_resizes_resize():
    changes = load_script("robustness").CHANGES
    a = np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)
    im = Image.fromarray(a)
    assert (np.asarray(changes["tight crop (centre 20x20, 83%)"](im)) == a[2:22, 2:22]).all()
    loose = np.asarray(changes["loose crop (2-px border of the edge colour, 28x28)"](im))
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).mean()
    assert (loose[2:26, 2:26] == a).all() and (loose[[0, 1, 26, 27]] == int(border)).all()
    assert changes["downscaled to 20x20"](im).size == (20, 20)
    assert changes["upscaled to 28x28"](im).size == (28, 28)
    UP = Image.Resampling.BICUBIC
    wide = np.asarray(changes["3:2 crop (rows 4-19, 96x64), as given: stretched"](im))
    assert wide.shape == (64, 96) and (wide == np.asarray(im.crop((0, 4, 24, 20)).resize((96, 64), UP))).all()
    padded = np.asarray(changes["3:2 crop, padded square with the edge colour"](im))  # the crop, not resized, between
    edge = int(np.concatenate([wide[0], wide[-1], wide[:, 0], wide[:, -1]]).mean())  # bands of its edge colour
    assert padded.shape == (96, 96) and (padded[16:80] == wide).all() and (padded[[0, 15, 80, 95]] == edge).all()
    assert (np.asarray(changes["3:2 crop, its centre square"](im)) == wide[:, 16:80]).all()
    tall = np.asarray(changes["2:3 crop (columns 4-19, 64x96), as given: stretched"](im))
    assert tall.shape == (96, 64) and (np.asarray(changes["2:3 crop, its centre square"](im)) == tall[16:80]).all()
    assert (np.asarray(changes["2:3 crop, padded square with the edge colour"](im))[:, 16:80] == tall).all()


def test_robustness_refuses_an_unwritable_out_before_scoring(tmp_path, monkeypatch, capsys):
    robustness = load_script("robustness")
    monkeypatch.setattr(robustness, "cv_rows", lambda *args: pytest.fail("read the runs before checking --out"))
    (tmp_path / "a file").write_text("")
    for out, says in ((tmp_path, f"{tmp_path} is an existing folder"),
                      (tmp_path / "a file" / "table.md", f"{tmp_path / 'a file'} is not a writable folder")):
        monkeypatch.setattr("sys.argv", ["robustness.py", "eyenet16_e100_refit_tta", "--out", str(out)])
        with pytest.raises(SystemExit):
            robustness.main()
        assert says in capsys.readouterr().err
    new = tmp_path / "new folder" / "table.md"  # accepted: the table's write makes the folder
    monkeypatch.setattr("sys.argv", ["robustness.py", "eyenet16_e100_refit_tta", "--out", str(new)])
    with pytest.raises(pytest.fail.Exception, match="read the runs"):
        robustness.main()


def test_robustness_without_fold_models_names_the_command_that_trains_them_again(tmp_path, monkeypatch, capsys):
    robustness = load_script("robustness")
    monkeypatch.setattr(robustness, "CV", tmp_path)
    (tmp_path / "run").mkdir()
    for k in range(5):  # a finished run's committed fold files, fold 3's model on disk
        shutil.copy(experiment.CV_RESULTS / "eyenet16_e100_refit_tta" / f"fold{k}.json", tmp_path / "run")
    (tmp_path / "run" / "fold3.pt").write_bytes(b"")
    monkeypatch.setattr("sys.argv", ["robustness.py", "run", "--out", str(tmp_path / "table.md")])
    with pytest.raises(SystemExit):
        robustness.main()
    err = capsys.readouterr().err
    assert f"fold models missing: {tmp_path / 'run' / 'fold0.pt'}, " in err and "fold3.pt" not in err
    assert "python scripts/cv_ablations.py --reproduce run --into DIR) and copy DIR/foldK.pt" in err
    assert not (tmp_path / "table.md").exists()


def test_check_teachers_refuses_fold_models_that_saw_the_students_validation_part(tmp_path):
    def key(**change):
        return dict(config=asdict(TrainConfig(**{"refit": False, **change})), folds=5, seed=0, n=10, n_open=5,
                    data="abc")

    def teacher(name, *keys):
        (tmp_path / name).mkdir()
        for k, key in enumerate(keys):
            (tmp_path / name / f"fold{k}.json").write_text(json.dumps(dict(fold=k, key=key, test_idx=[k], p=[0.5])))
        return tmp_path / name
    student = key(distill=0.5)
    cv.check_teachers([teacher("same_split", key(), key())], student)  # the student's data and split, no refit: fine
    with pytest.raises(ValueError, match=r"fold1.json: its fold model may have seen .*refit"):  # not fold 0's alone
        cv.check_teachers([teacher("second_fold", key(), key(refit=True))], student)
    for name, k, says in (("seed1", key(seed=1), "seed 1, the student's 0"),
                          ("refit", key(refit=True), "refit, which trains on the validation part"),
                          ("val", key(val_fraction=0.2), "val_fraction 0.2"),
                          ("folds", {**key(), "folds": 3}, "folds 3"),
                          ("data", {**key(), "data": "xyz"}, "data 'xyz'")):
        with pytest.raises(ValueError, match=f"may have seen the student's validation or test images.*{says}"):
            cv.check_teachers([teacher(name, k)], student)
    with pytest.raises(ValueError, match="no fold results"):
        cv.check_teachers([tmp_path / "missing"], student)
    cut = teacher("cut", key())
    (cut / "fold0.json").write_text('{"fold": 0, "key"')  # a copy or a write stopped half-way
    with pytest.raises(ValueError, match=r"cut/fold0.json is not a fold file of eye_clf's CV"):
        cv.check_teachers([cut], student)


def test_fold_files_belong_to_their_data(tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, SMALL, folds=3, progress=False, fold_dir=tmp_path)
    order = np.r_[1, 0, 2:60]  # the same images and counts, two of them swapped
    with pytest.raises(ValueError, match="another config, data or device"):
        cv.cross_val_predict(images[order], targets[order], SMALL, folds=3, progress=False, fold_dir=tmp_path)
    rows = [json.loads((tmp_path / f"fold{k}.json").read_text()) for k in range(3)]
    cv.check_data(rows, targets, cv.data_id(images, targets), "run")
    with pytest.raises(ValueError, match="run: fold 0 was made on other data"):
        cv.check_data(rows, targets[order], cv.data_id(images[order], targets[order]), "run")
    for r in rows:
        del r["key"]["data"]  # folds from before the fingerprint: their scores must fit the targets
    cv.check_data(rows, targets, "", "run")
    shuffled = np.random.default_rng(0).permutation(60)
    with pytest.raises(ValueError, match="run: fold 0 was made on other data"):
        cv.check_data(rows, targets[shuffled], "", "run")
    with pytest.raises(ValueError, match="run: fold 0 was made on other data"):
        cv.check_data(rows, targets[:59], "", "run")  # one image fewer


def test_fold_models_that_do_not_reproduce_their_fold_files_are_refused(tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path)
    cv.check_fold_model(tmp_path / "fold1.json", images)
    row = json.loads((tmp_path / "fold1.json").read_text())
    cv.check_fold_model(tmp_path / "fold1.json", images, row["test_idx"])
    with pytest.raises(ValueError, match=r"fold1.json: its test fold is not this split's .* may have trained on"):
        cv.check_fold_model(tmp_path / "fold1.json", images, row["test_idx"][1:])  # a teacher of other folds
    row["p"] = row["p_tta"] = (1 - np.asarray(row["p_tta"])).tolist()  # as if fold1.pt came from another training
    (tmp_path / "fold1.json").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=r"fold1.pt does not reproduce fold1.json's P\(open\)"):
        cv.check_fold_model(tmp_path / "fold1.json", images)
    (tmp_path / "fold0.pt").unlink()
    with pytest.raises(ValueError, match=r"fold0.pt: fold model missing"):
        cv.check_fold_model(tmp_path / "fold0.json", images)


def test_a_cuda_trained_fold_model_is_held_to_tf32s_tolerance(tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, SMALL, folds=2, progress=False, fold_dir=tmp_path)
    row = json.loads((tmp_path / "fold1.json").read_text())
    p = np.asarray(row["p"])
    row["key"]["device"] = "cuda"  # as if trained on a GPU: its scores may differ by TF32 rounding
    row["p"] = row["p_tta"] = np.clip(p + np.where(p < 0.5, 0.007, -0.007), 0, 1).tolist()
    (tmp_path / "fold1.json").write_text(json.dumps(row))
    cv.check_fold_model(tmp_path / "fold1.json", images)
    row["key"]["device"] = "cpu"  # the same gap on the CPU: another training
    (tmp_path / "fold1.json").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=r"fold1.pt does not reproduce fold1.json's P\(open\) \(max difference 0.007"):
        cv.check_fold_model(tmp_path / "fold1.json", images)
    row["key"]["device"] = "cuda"
    row["p"] = row["p_tta"] = (1 - p).tolist()  # far more than TF32: another training
    (tmp_path / "fold1.json").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=r"fold1.pt does not reproduce"):
        cv.check_fold_model(tmp_path / "fold1.json", images)


def test_a_student_refuses_a_missing_or_foreign_teacher_model_before_training(monkeypatch, tmp_path):
    images, targets = synthetic(60)
    cv.cross_val_predict(images, targets, replace(SMALL, refit=False), folds=3, progress=False,
                         fold_dir=tmp_path / "teacher")
    other = tmp_path / "other"
    cv.cross_val_predict(images, targets, replace(SMALL, refit=False, seed=5), folds=3, progress=False,
                         fold_dir=other)
    student = TrainConfig(**{**asdict(SMALL), "distill": 0.5})
    record_fits(monkeypatch, lambda tr, va, t: pytest.fail("trained with a bad teacher"))
    (tmp_path / "teacher" / "fold1.pt").write_bytes((other / "fold1.pt").read_bytes())  # a stale model of a rerun
    with pytest.raises(ValueError, match=r"teacher/fold1.pt does not reproduce fold1.json"):
        cv.cross_val_predict(images, targets, student, folds=3, progress=False, only=[1],
                             fold_dir=tmp_path / "student", teacher_dirs=[tmp_path / "teacher"])
    (tmp_path / "teacher" / "fold1.pt").unlink()
    with pytest.raises(ValueError, match=r"teacher/fold1.pt: fold model missing"):
        cv.cross_val_predict(images, targets, student, folds=3, progress=False, only=[1],
                             fold_dir=tmp_path / "student", teacher_dirs=[tmp_path / "teacher"])
    (tmp_path / "teacher" / "fold1.json").unlink()
    with pytest.raises(ValueError, match=r"teacher/fold1.json: no such fold result"):
        cv.cross_val_predict(images, targets, student, folds=3, progress=False, only=[1],
                             fold_dir=tmp_path / "student", teacher_dirs=[tmp_path / "teacher"])


def test_near_duplicates_finds_a_shifted_mirrored_brighter_copy_and_nothing_else():
    best_correlation = load_script("near_duplicates").best_correlation
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 24, 24)).astype(np.uint8)
    copy = np.roll(images[1][:, ::-1], (1, -1), axis=(0, 1)).astype(np.float64) * 0.5 + 60  # mirrored, shifted, dimmer
    best = best_correlation(np.concatenate([images, copy[None].astype(np.uint8)]))
    assert best[1, 5] == best[5, 1] > 0.99  # the copy, whichever side is shifted
    others = best[np.triu_indices(6, 1)]
    assert np.sort(others)[-2] < 0.5 and (np.diag(best) == -1).all()  # noise images: no other pair


def test_near_duplicates_results_are_what_the_script_prints_now(real_root, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["near_duplicates.py"])
    load_script("near_duplicates").main()
    printed = capsys.readouterr().out.splitlines()[1:]  # after the provenance line
    assert printed == (data.REPO_ROOT / "results" / "near_duplicates.txt").read_text().splitlines()[1:]
    text = "\n".join(printed)
    top = float(re.search(r"and the mirror: (\d\.\d+)", text).group(1))
    pairs, images, split, wrong, other_wrong, others = map(int, re.search(
        r"above 0\.95: (\d+) \((\d+) images; .*folds: (\d+)\); .*errors: (\d+) of \d+ images in them, (\d+) of the "
        r"other (\d+)", text).groups())
    readme = " ".join((data.REPO_ROOT / "README.md").read_text().split())
    assert f"the most alike pair correlates at {top:.3f}" in readme
    assert (f"The {pairs} pairs above 0.95 hold {images} images, and {split} of those pairs are split across the "
            f"folds; the shipped recipe's CV errs on {wrong} of those {images} images and on {other_wrong} of the other "
            f"{others:,}") in readme


def test_near_duplicates_without_the_dataset_says_where_to_put_it(tmp_path):
    out = subprocess.run([sys.executable, str(data.REPO_ROOT / "scripts" / "near_duplicates.py"), "--data",
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and f"eye_clf dataset not found in {tmp_path} (--data): put EyesDataset/" in out.stderr
