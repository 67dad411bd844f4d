import json
import re
import runpy
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
import torch

import eye_clf.audit  # noqa: F401 (imported first, so that patching its names restores them afterwards)
from eye_clf import cv, data, metrics
from eye_clf.__main__ import main
from eye_clf.export import export_onnx
from eye_clf.models import ARCHS, METHODS
from eye_clf.predict import predict_proba
from eye_clf.train import TrainConfig

from conftest import ATOL
from test_metrics import brute_force_eer


def exit_message(argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code not in (0, None)
    return str(err.value.code)


def test_train(real_root, tmp_path, capsys, monkeypatch):
    from eye_clf import experiment
    calls = iter(range(10))
    monkeypatch.setattr(experiment, "provenance", lambda *args: dict(call=next(calls)))
    out = tmp_path / "run"
    main(["train", "--data", str(real_root), "--limit", "120", "--epochs", "1", "--width", "8",
          "--weights", "none", "--out", str(out)])
    printed = capsys.readouterr().out
    assert re.search(r"trained eyenet/finetune \(weights: random init\) in \d+ s for both fits "
                     r"\(torch threads: \d+\): 1 epoch\(s\) on \d+ images, best validation loss at epoch 1; "
                     r"then a refit on all 120 images", printed)
    ckpt = torch.load(out / "eye_clf.pt", weights_only=True)
    assert ckpt["config"]["width"] == 8 and ckpt["config"]["epochs"] == 1 and ckpt["config"]["weights"] is None
    assert 0 < ckpt["threshold"] < 1 and len(ckpt["training_images"]) == 120  # train + validation parts
    assert {"eye_clf.pt", "history.csv", "history.json", "train_val_loss_metrics_history.png"} <= {
        p.name for p in out.iterdir()}
    assert f"to make it the shipped model: eye-clf ship {out}" in printed
    run = json.loads((out / "run.json").read_text())
    assert ckpt["provenance"] == run["provenance"] == dict(call=0)  # taken once, when the run started


def test_train_outside_a_checkout_and_with_an_unreadable_shipped_model_keeps_the_run(real_root, tmp_path, capsys,
                                                                                      monkeypatch):
    """A shipped model that this code cannot read (older preprocessing, a damaged file) only skips the comparison;
    installed (no checkout), the hint to ship is left out: ship would refuse."""
    from eye_clf import __main__ as cli, experiment
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "eye_clf.pt").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(experiment, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setattr(cli, "checkout", lambda: None)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="not compared with the shipped model: .*eye_clf.pt"):
        main(["train", "--data", str(real_root), "--limit", "60", "--epochs", "1", "--width", "4", "--out", str(out)])
    assert (out / "eye_clf.pt").is_file() and json.loads((out / "run.json").read_text())["shipped_on_same_val"] is None
    assert "eye-clf ship" not in capsys.readouterr().out


def test_a_weights_file_that_does_not_fit_is_refused_before_the_data_is_read(real_root, tmp_path, tiny_ckpt,
                                                                             monkeypatch):
    from eye_clf import data
    monkeypatch.setattr(data, "load_dataset", lambda *args, **kw: pytest.fail("read the data first"))
    (tmp_path / "bad.pt").write_bytes(b"not a state dict")
    for weights, says in ((tmp_path / "bad.pt", "is not a readable state dict"),
                          (tiny_ckpt, "is an eye_clf checkpoint, not the state dict of a ResNet"),
                          (tmp_path / "missing.pt", "not found")):
        for command, out in (("train", tmp_path / "run"), ("cv", tmp_path / "cv.json")):  # never the default folders
            assert f"error: --weights: {weights} {says}" in exit_message(
                [command, "--data", str(real_root), "--arch", "resnet18", "--weights", str(weights), "--epochs", "1",
                 "--out", str(out)])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, and no network

    def offline(*args, **kwargs):
        raise URLError("offline")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    for command, out in (("train", tmp_path / "run"), ("cv", tmp_path / "cv.json")):
        assert "error: --weights imagenet: resnet18's ImageNet weights are not in torch hub's cache" in exit_message(
            [command, "--data", str(real_root), "--arch", "resnet18", "--weights", "imagenet", "--epochs", "1",
             "--out", str(out)])


def test_train_run_never_writes_into_the_shipped_model_or_its_curves(real_root, tmp_path, monkeypatch):
    """The API's guard (the command line's is its argparse types: test_bad_inputs_cli)."""
    from eye_clf import experiment
    for name in ("SHIPPED", "FIGURES"):  # stand-ins: a regression must not replace the real shipped model
        monkeypatch.setattr(experiment, name, tmp_path / name)
        (tmp_path / name).mkdir()
        for out in (tmp_path / name, tmp_path / name / "run"):  # the folder itself or one inside it
            with pytest.raises(ValueError, match=f"out: {out} is in the folders of the shipped model"):
                experiment.train_run(TrainConfig(epochs=1), real_root, out_dir=out, limit=60, progress=False)
        assert not any((tmp_path / name).iterdir())


def test_an_installed_eye_clf_has_no_shipped_curves_folder_to_protect(monkeypatch):
    """Installed, ``ship`` refuses to run, so ./plots_checkpoints is an ordinary folder, for the API as for the
    command line (the checks only look at the path: nothing is written)."""
    from argparse import ArgumentTypeError

    from eye_clf import __main__ as cli
    from eye_clf import experiment
    curves, model = experiment.FIGURES / "run", experiment.SHIPPED / "run"
    for path in (curves, model):
        with pytest.raises(ValueError, match="is in the folders of the shipped model"):
            experiment.check_outside_shipped(path)
        with pytest.raises(ArgumentTypeError, match="a folder of the shipped model"):
            cli._outside_shipped(path, "run")
    for module in (experiment, cli):
        monkeypatch.setattr(module, "checkout", lambda: None, raising=False)
    assert experiment.check_outside_shipped(curves) == curves
    cli._outside_shipped(curves, "run")  # accepted by both
    with pytest.raises(ValueError, match="is in the folders of the shipped model"):  # the package's own folder is not
        experiment.check_outside_shipped(model)
    with pytest.raises(ArgumentTypeError, match="a folder of the shipped model"):
        cli._outside_shipped(model, "run")


def test_train_keep_last_says_validation_picked_no_epoch(real_root, tmp_path, capsys):
    main(["train", "--data", str(real_root), "--limit", "120", "--epochs", "2", "--width", "8", "--weights", "none",
          "--keep-last", "--no-refit", "--out", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert "images; they picked the temperature and threshold, so these are optimistic" in printed
    assert torch.load(tmp_path / "run" / "eye_clf.pt", weights_only=True)["best_epoch"] == 2


def test_train_names_a_damaged_cv_file_but_keeps_its_run(real_root, tmp_path, capsys, monkeypatch):
    """The closing CV line searches results/cv/; a damaged file there (another run's) must not fail a written run."""
    from eye_clf import experiment
    (tmp_path / "cv" / "other").mkdir(parents=True)
    (tmp_path / "cv" / "other" / "fold0.json").write_text('{"fold": 0, "key": ')  # cut short
    search = experiment.cv_of
    monkeypatch.setattr(experiment, "cv_of", lambda cfg, **kw: search(cfg, tmp_path / "cv", **kw))
    main(["train", "--data", str(real_root), "--limit", "60", "--epochs", "1", "--width", "8", "--no-refit",
          "--out", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert (f"this recipe's CV could not be looked up in results/cv/: {tmp_path / 'cv' / 'other' / 'fold0.json'} is "
            "not a fold file of eye_clf's CV") in printed
    assert f"wrote {tmp_path / 'run'}/" in printed and (tmp_path / "run" / "eye_clf.pt").is_file()


def test_an_unknown_flag_points_to_its_commands_help(capsys):
    assert exit_message(["audit", "--limit", "200"]) == "2"
    assert capsys.readouterr().err == "error: unrecognized arguments: --limit 200 (see python -m eye_clf audit --help)\n"


def test_version_is_the_packages_one(capsys):
    from importlib.metadata import version

    import eye_clf
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.split()[-1] == eye_clf.__version__ == version("eye-clf")  # pyproject reads it


def test_help_comes_from_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "{" + ",".join(ARCHS) + "}" in text and "{" + ",".join(METHODS) + "}" in text
    for f in fields(TrainConfig):
        help = " ".join(f.metadata["help"].split())
        assert f"{help} (default: {f.default})" in text, f.name
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_predict_files_and_folders(labelled_folder, tiny_ckpt, tmp_path, capsys):
    folder, _, _, _ = labelled_folder
    one = folder / "005.png"
    out = tmp_path / "preds.csv"
    main(["predict", str(one), str(folder), "--checkpoint", str(tiny_ckpt), "--out", str(out)])
    df = pd.read_csv(out)
    assert list(df.columns) == ["file", "p_open", "decision"] and len(df) == 41
    assert df["file"].iloc[0] == str(one) and df["file"].iloc[1] == str(folder / "000.png")
    expected = predict_proba([str(one), folder], checkpoint=tiny_ckpt)
    assert np.allclose(df["p_open"], expected, atol=5e-7 + ATOL)  # rounded to 6 decimals
    assert all(re.fullmatch(r"[01]\.\d{6}", v) for v in out.read_text().splitlines()[1].split(",")[1:2])
    assert (df["decision"] == np.where(expected >= 0.5, "open", "closed")).all()
    err = capsys.readouterr().err
    assert "decision: open when P(open) >= 0.500000 (0.5: the checkpoint records no threshold)" in err
    assert "wrote 41 predictions" in err
    main(["predict", str(one), "--checkpoint", str(tiny_ckpt)])  # CSV on standard output
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "file,p_open,decision" and lines[1].startswith(f"{one},") and len(lines) == 2


def with_keys(ckpt, path, **keys):
    torch.save({**torch.load(ckpt, weights_only=True), **keys}, path)
    return path


def test_predict_decides_at_the_checkpoint_threshold(labelled_folder, tiny_ckpt, tmp_path, capsys):
    folder = labelled_folder[0]
    p = predict_proba(folder, checkpoint=tiny_ckpt)
    threshold = float(np.median(p))  # half the images on each side, unlike 0.5
    ckpt = with_keys(tiny_ckpt, tmp_path / "t.pt", threshold=threshold)
    main(["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv")])
    df = pd.read_csv(tmp_path / "p.csv")
    assert (df["decision"] == np.where(p >= threshold, "open", "closed")).all()
    assert f"open when P(open) >= {threshold:.6f} (the checkpoint's recommended threshold)" in capsys.readouterr().err


def test_predict_rows_agree_with_the_printed_threshold(labelled_folder, tiny_ckpt, tmp_path, capsys):
    """A threshold just above an image's P(open) that prints the same as it: the row says open, as written."""
    folder = labelled_folder[0]
    p = float(predict_proba(folder, checkpoint=tiny_ckpt)[0])
    r = round(p, 6)
    threshold = (p + r) / 2 if p < r else (p + r + 5e-7) / 2  # above p, written as r
    assert p < threshold and round(threshold, 6) == r
    ckpt = with_keys(tiny_ckpt, tmp_path / "t.pt", threshold=threshold)
    main(["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv")])
    df = pd.read_csv(tmp_path / "p.csv")
    printed = float(re.search(r"P\(open\) >= ([0-9.]+)", capsys.readouterr().err).group(1))
    assert df["decision"].iloc[0] == "open"
    assert (df["decision"] == np.where(df["p_open"] >= printed, "open", "closed")).all()


def test_evaluate(labelled_folder, tiny_ckpt, capsys):
    folder, labels, _, targets = labelled_folder
    main(["evaluate", "--images", str(folder), "--labels", str(labels), "--checkpoint", str(tiny_ckpt)])
    out = capsys.readouterr().out
    m = metrics.summary(targets, predict_proba(folder, checkpoint=tiny_ckpt))
    assert out.startswith(f"model: eyenet, weights: random init ({tiny_ckpt})\n40 images: ")
    assert f"EER {100 * m['eer']:.2f}%" in out and f"accuracy {100 * m['accuracy']:.2f}%" in out
    assert f"AUC {m['auc']:.4f}" in out
    assert "seen in training: cannot tell" in out  # the tiny checkpoint does not list its training images
    assert "ONNX" not in out


def test_evaluate_an_onnx_file_points_to_its_checkpoint(labelled_folder, tiny_ckpt, tmp_path, capsys):
    folder, labels, _, _ = labelled_folder
    onnx = export_onnx(tiny_ckpt, tmp_path / "t.onnx")
    main(["evaluate", "--images", str(folder), "--labels", str(labels), "--checkpoint", str(onnx)])
    out = capsys.readouterr().out
    assert "(an ONNX file never does: evaluate its .pt checkpoint to tell)" in out
    assert out.startswith(f"model: eyenet, weights: random init ({onnx})\n")  # from the graph's metadata


def test_evaluate_scores_seen_and_unseen_images_apart(labelled_folder, tiny_ckpt, tmp_path, capsys):
    folder, labels, images, targets = labelled_folder
    seen = np.arange(40) < 25
    ckpt = with_keys(tiny_ckpt, tmp_path / "t.pt", training_images=[data.image_hash(im) for im in images[seen]])
    main(["evaluate", "--images", str(folder), "--labels", str(labels), "--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    p = predict_proba(folder, checkpoint=tiny_ckpt)
    assert "the model was trained on 25 of these 40 images" in out
    for name, mask in (("seen in training", seen), ("never seen", ~seen)):
        eer = metrics.eer(targets[mask], p[mask])[0]
        assert re.search(rf"^{name}: {mask.sum()} images: EER {100 * eer:.2f}%", out, re.M), out


def test_cv(real_root, tmp_path, capsys, monkeypatch):
    seen = {}

    def spy(images, targets, *args, **kwargs):  # keep the out-of-fold scores the CLI pools
        oof, per_fold = real(images, targets, *args, **kwargs)
        seen.update(targets=targets, oof=oof)
        return oof, per_fold

    real = cv.cross_val_predict
    monkeypatch.setattr(cv, "cross_val_predict", spy)
    out, folds = tmp_path / "cv.json", tmp_path / "folds"
    argv = ["cv", "--data", str(real_root), "--folds", "2", "--limit", "100", "--epochs", "1", "--width", "4",
            "--out", str(out), "--fold-dir", str(folds)]
    main(argv)
    printed = capsys.readouterr().out
    assert "2-fold CV (eyenet, weights: random init): EER" in printed and "resuming" not in printed
    result = json.loads(out.read_text())
    assert len(result["folds"]) == 2 and result["config"]["epochs"] == 1 and len(seen["targets"]) == 100
    assert result["pooled"]["eer"] == pytest.approx(brute_force_eer(seen["targets"], seen["oof"])[0], abs=1e-12)
    for col, name in (("eer", "EER"), ("accuracy_at_val_threshold", "accuracy at the validation threshold"),
                      ("ece", "ECE")):
        m, h = cv.interval([f[col] for f in result["folds"]])
        assert f"{name} {100 * m:.2f} ± {100 * h:.2f}%" in printed  # the mean over the folds written
    m, h = cv.interval([f["auc"] for f in result["folds"]])
    assert f"AUC {m:.4f} ± {h:.4f}" in printed
    assert result["data"] == dict(n=100, n_open=int(sum(seen["targets"]))) and result["provenance"]["git_commit"]
    assert sorted(p.name for p in folds.iterdir()) == ["fold0.json", "fold0.pt", "fold1.json", "fold1.pt"]
    monkeypatch.setattr(cv, "fit_recipe", lambda *a, **kw: pytest.fail("a finished fold trained again"))
    fold1 = json.loads((folds / "fold1.json").read_text())
    fold1["provenance"]["git_commit"] = "an older commit"  # as if it were made by other code
    (folds / "fold1.json").write_text(json.dumps(fold1))
    main(argv)  # resumes from the fold folder
    assert f"resuming: fold(s) 0, 1 found in {folds}; each is used, not trained again, once checked" in \
        capsys.readouterr().out
    again = json.loads(out.read_text())
    assert again["folds"] == result["folds"]
    assert [p["git_commit"] for p in again["fold_provenance"]] == [result["provenance"]["git_commit"],
                                                                    "an older commit"]  # each fold's own code
    for damaged in ('{"fold": 1}', '{"fold": 1, "key": {}, "test_idx": [], "p": []}', "{not json"):
        (folds / "fold1.json").write_text(damaged)
        assert f"{folds / 'fold1.json'} is not a fold file of eye_clf's CV" in exit_message(argv)


def test_train_and_cv_read_an_image_folder_of_their_own(labelled_folder, real_root, tmp_path, capsys, monkeypatch):
    """--images with its --labels: a folder labelled in the studio trains and cross-validates like the dataset."""
    folder, labels, images, _ = labelled_folder
    flags = ["--images", str(folder), "--labels", str(labels), "--epochs", "1", "--width", "4"]
    main(["train", *flags, "--out", str(tmp_path / "run")])
    ckpt = torch.load(tmp_path / "run" / "eye_clf.pt", weights_only=True)
    assert sorted(ckpt["training_images"]) == sorted(data.image_hashes(images))  # these images, all of them
    source = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert (source["images"], source["labels"], source["n"]) == (str(folder.resolve()), str(labels.resolve()), 40)
    main(["cv", *flags, "--folds", "2", "--limit", "30", "--out", str(tmp_path / "cv.json")])
    assert json.loads((tmp_path / "cv.json").read_text())["data"]["n"] == 30
    assert "error: --limit: 41 is more than the 40 labelled images" in exit_message(["cv", *flags, "--limit", "41"])
    for command in ("train", "cv"):  # the reference labels are the CEW patches': other images need their own
        assert "pass --labels with these images' labels" in exit_message([command, "--images", str(folder)])
        missing = ["--images", str(tmp_path / "typo"), "--labels", str(labels)]
        assert exit_message([command, *missing]) == f"error: image folder not found: {tmp_path / 'typo'}"
        soft = [*flags, "--soft-labels", "--data", str(real_root)]  # the annotations label the data folder's images
        assert "error: soft labels: the extra annotators' labels" in exit_message([command, *soft])
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("read the images before refusing"))
    for command, more in (("train", ["--distill", "0.5", "--out", str(tmp_path / "student")]),
                          ("cv", ["--out", str(tmp_path / "soft.json")])):  # refused before teachers or images
        assert "error: soft labels: the extra" in exit_message([command, *soft, *more])


@pytest.mark.parametrize("command", ["cv", "audit"])
def test_seed_changes_the_training_not_the_folds(command, real_root, monkeypatch, tmp_path):
    """The committed seed runs share fold seed 0, so that they pair fold by fold."""
    calls = []

    def spy(images, targets, cfg, folds, seed, *args, **kwargs):
        calls.append((cfg.seed, seed))
        raise SystemExit(0)
    monkeypatch.setattr(cv, "cross_val_predict", spy)
    monkeypatch.setattr("eye_clf.audit.cross_val_predict", spy)
    with pytest.raises(SystemExit):
        main([command, "--data", str(real_root), "--folds", "2", "--seed", "3",
              *(["--out", str(tmp_path / "review.csv")] if command == "audit" else ["--limit", "40"])])
    assert calls == [(3, 0)]


def test_bad_inputs_exit_with_a_clear_message(tmp_path, tiny_ckpt, labelled_folder):
    msg = exit_message(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(tiny_ckpt)])
    assert msg.startswith("error: no such file or folder") and "missing.png" in msg
    msg = exit_message(["predict", str(labelled_folder[0]), str(tmp_path / "typo"), "--skip-bad"])
    assert msg == f"error: no such file or folder: {tmp_path / 'typo'}"  # not skipped as an unreadable file
    (tmp_path / "fake.jpg").write_text("text")
    assert "not an image file" in exit_message(["predict", str(tmp_path / "fake.jpg"), "--checkpoint",
                                                str(tiny_ckpt)])
    folder, labels, _, _ = labelled_folder
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"img_name": ["000.png", "zzz.png"], "target": [1, 3]}).to_csv(bad, index=False)
    msg = exit_message(["evaluate", "--images", str(folder), "--labels", str(bad), "--checkpoint", str(tiny_ckpt)])
    assert "row 3 (zzz.png): target 3 is not 0" in msg and "image file not found" in msg
    assert "dataset not found" in exit_message(["train", "--data", str(tmp_path), "--epochs", "1"])


@pytest.mark.filterwarnings("ignore:.*found in sys.modules")  # eye_clf.__main__ is imported above too
def test_module_entry_point(tmp_path, tiny_ckpt, monkeypatch):
    """``python -m eye_clf`` runs main(): a missing image exits with the message (status 1 for a string code)."""
    argv = ["eye_clf", "predict", str(tmp_path / "gone.png"), "--checkpoint", str(tiny_ckpt)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as err:
        runpy.run_module("eye_clf", run_name="__main__")
    assert isinstance(err.value.code, str) and err.value.code.startswith("error:") and "gone.png" in err.value.code


def test_usage_names_the_program_as_called():
    for argv, prog in (([str(Path(sys.executable).parent / "eye-clf")], "eye-clf"),
                       ([sys.executable, "-m", "eye_clf"], "python -m eye_clf")):
        out = subprocess.run([*argv, "predict"], capture_output=True, text=True, cwd=data.REPO_ROOT)
        assert out.returncode == 2 and out.stderr.endswith(f"(see {prog} predict --help)\n"), out.stderr


def test_commands_names_every_subcommand(capsys):
    """COMMANDS (what the command line says without the training libraries) is the parser's list of commands."""
    from eye_clf.__main__ import COMMANDS
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "{" + ",".join(COMMANDS) + "}" in capsys.readouterr().out
