"""Hostile command lines: each is refused with one ``error:`` line naming the flag or file, a non-zero exit status
and no traceback, before any data is read or any model trained."""
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

from eye_clf.__main__ import main

NO_DATA = ["--data", "/nonexistent/eye_clf-data"]  # reading data would fail differently: proves nothing was read


def refused(argv, capsys):
    """The one-line message of a refused command line (sys.exit's text or argparse's stderr)."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    code = err.value.code
    assert code not in (0, None)
    message = code if isinstance(code, str) else capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("command", ["train", "cv", "audit"])
@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "error: --epochs: must be >= 1, got 0"),
    (["--epochs", "-1"], "error: --epochs: must be >= 1, got -1"),
    (["--batch-size", "0"], "error: --batch-size: must be >= 1, got 0"),
    (["--val-fraction", "0.7"], "error: --val-fraction: must be in (0, 0.5), got 0.7"),
    (["--arch", "vgg"], "error: --arch: invalid choice: 'vgg'"),
    (["--epochs", "many"], "error: --epochs: invalid int value: 'many'"),
    (["--zoom", "1"], "error: --zoom: must be in [0, 1), got 1.0"),
    (["--pad", "border", "--no-batch-augment"], "error: --pad: must be one of ('zeros', 'border') (border only"),
    (["--device", "gpu"], "error: --device: must be auto or a torch device"),
    (["--method", "feature_extraction"], "error: --method: must be one of ('finetune', 'feature_extraction') "
                                         "(feature_extraction only with --weights"),
    (["--weights", "imagenet"], "error: --weights: must be none for EyeNet"),
    (["--arch", "res_eyenet", "--weights", "imagenet"], "error: --weights: must be none for EyeNet"),
    (["--device", "cuda"], "error: --device: cuda asked for, but torch sees 0 CUDA device(s)"),
])
def test_bad_recipe_flags_name_the_flag(command, flags, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, wherever this runs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert refused([command, *flags, *NO_DATA], capsys).startswith(message)


def test_no_output_goes_into_the_shipped_model_or_its_curves(tmp_path, capsys, monkeypatch):
    from eye_clf import __main__ as cli
    shipped, figures = tmp_path / "eye_clf" / "shipped", tmp_path / "plots_checkpoints"
    for folder in (shipped, figures):
        folder.mkdir(parents=True)
        (folder / "kept.csv").write_text("the shipped file")
    monkeypatch.setattr(cli, "SHIPPED", shipped)  # stand-ins: a regression must not replace the real ones
    monkeypatch.setattr(cli, "checkout", lambda: tmp_path)
    for folder in (shipped, figures):
        for argv in (["cv", "--out", folder / "kept.csv"], ["cv", "--fold-dir", folder / "folds"],
                     ["audit", "--fold-dir", folder], ["audit", "--out", folder / "kept.csv"],
                     ["predict", "--out", folder / "kept.csv", "eye.png"], ["train", "--out", folder / "run"],
                     ["export", "--out", folder / "m.onnx"]):
            message = refused([*map(str, argv), *NO_DATA[:2 * (argv[0] != "predict")]], capsys)
            assert message.startswith(f"error: {argv[1]}: {argv[2]} is in {folder}, a folder of the shipped model")
        assert [p.name for p in folder.iterdir()] == ["kept.csv"]
        assert (folder / "kept.csv").read_text() == "the shipped file"


def test_no_output_goes_into_a_dataset(tmp_path, capsys):
    from eye_clf import __main__ as cli
    root = tmp_path / "data"
    images = root / "EyesDataset"
    images.mkdir(parents=True)
    kept = {p: p.name for p in (images / "000000.jpg", root / "img_name_target.xlsx", root / "other_annotations.csv")}
    for path, text in kept.items():
        path.write_text(text)
    link = tmp_path / "out.csv"
    link.symlink_to(root / "other_annotations.csv")
    for argv in (["predict", "--out", root / "other_annotations.csv", "eye.png"],
                 ["predict", "--out", root / "Other_Annotations.csv", "eye.png"], ["predict", "--out", link, "eye.png"],
                 ["audit", "--out", images / "review.csv"], ["audit", "--save-oof", root / "other_annotations.csv"],
                 ["cv", "--out", images / "cv.json"], ["cv", "--fold-dir", images / "folds"],
                 ["train", "--out", images], ["export", "--out", images / "m.onnx"]):
        message = refused([*map(str, argv), *NO_DATA[:2 * (argv[0] != "predict")]], capsys)
        assert message.startswith(f"error: {argv[1]}: {argv[2]} is "), message
        assert "which eye_clf reads and never writes; write it elsewhere" in message, message
    assert {p: p.read_text() for p in kept} == kept and sorted(p.name for p in images.iterdir()) == ["000000.jpg"]
    assert cli.output_file(str(root / "predictions.csv"))  # a new file beside the dataset is the user's own


def test_cv_out_is_a_json_file(tmp_path, capsys):
    (tmp_path / "eye_clf.pt").write_bytes(b"another run's weights")
    assert refused(["cv", "--out", str(tmp_path / "eye_clf.pt"), *NO_DATA], capsys) == (
        f"error: --out: {tmp_path / 'eye_clf.pt'}: the file is JSON; give it a .json name (see python -m eye_clf cv "
        "--help)")
    assert (tmp_path / "eye_clf.pt").read_bytes() == b"another run's weights"


@pytest.mark.parametrize("command", ["cv", "audit"])
def test_cv_and_audit_refuse_distillation(command, capsys):
    assert refused([command, "--distill", "0.5", *NO_DATA], capsys).startswith("error: --distill: ")


def test_audit_refuses_soft_labels(capsys):
    assert refused(["audit", "--soft-labels", *NO_DATA], capsys).startswith("error: --soft-labels: the audit judges")


@pytest.mark.parametrize("command", ["train", "cv"])
def test_soft_labels_without_the_annotations_file_name_it(command, real_root, tmp_path, capsys):
    for name in ("EyesDataset", "img_name_target.xlsx"):  # the data folder without other_annotations.csv
        (tmp_path / name).symlink_to(real_root / name)
    message = refused([command, "--soft-labels", "--data", str(tmp_path), "--limit", "30", "--epochs", "1"], capsys)
    assert message == f"error: annotations file not found: {tmp_path / 'other_annotations.csv'}"


@pytest.mark.parametrize("command,least", [("train", 20), ("cv", 30)])
@pytest.mark.parametrize("limit", ["0", "5", "19", "-3"])
def test_limit_too_small(command, least, limit, capsys):
    msg = refused([command, "--limit", limit, *NO_DATA], capsys)
    assert msg.startswith(f"error: --limit: must be >= {least}, got {limit}")


def test_an_unwritable_default_run_folder_is_refused_before_training(real_root, tmp_path, monkeypatch, capsys):
    from eye_clf import data, experiment
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setattr(experiment, "new_run_folder", lambda: blocked / "runs" / "train-x")

    def read(*args, **kwargs):
        raise AssertionError("read the images before refusing")
    monkeypatch.setattr(data, "load_dataset", read)
    assert refused(["train", "--data", str(real_root)], capsys) == (
        f"error: cannot write {blocked / 'runs' / 'train-x'}: {blocked} is not a writable folder; choose a run "
        "folder with --out")


def test_the_smallest_limits_train(real_root, tmp_path, capsys):
    """The least --limit of each command trains: cv's folds keep both classes in their validation parts too."""
    for folds in ("2", "5"):
        main(["cv", "--data", str(real_root), "--limit", "30", "--folds", folds, "--epochs", "1", "--width", "4",
              "--threads", "1", "--out", str(tmp_path / f"cv{folds}.json")])
        assert len(json.loads((tmp_path / f"cv{folds}.json").read_text())["folds"]) == int(folds)
    capsys.readouterr()  # (the progress bars)
    assert "must be >= 30, got 29" in refused(["cv", "--limit", "29", *NO_DATA], capsys)
    main(["train", "--data", str(real_root), "--limit", "20", "--epochs", "1", "--width", "4", "--threads", "1",
          "--no-refit", "--out", str(tmp_path / "run")])


def test_limit_larger_than_the_dataset(real_root, capsys):
    msg = refused(["train", "--data", str(real_root), "--limit", "1000000"], capsys)
    assert msg.startswith("error: --limit: 1000000 is more than the ") and "labelled images" in msg


def test_folds_below_two(capsys):
    for command in ("cv", "audit"):
        assert refused([command, "--folds", "1", *NO_DATA], capsys).startswith("error: --folds: must be >= 2, got 1")


def test_more_folds_than_images_of_a_class_is_one_line(labelled_folder, tmp_path, capsys):
    folder, labels, _, targets = labelled_folder
    smaller = int(min(targets.sum(), len(targets) - targets.sum()))
    msg = refused(["audit", "--images", str(folder), "--labels", str(labels), "--folds", str(smaller + 1),
                   "--out", str(tmp_path / "review.csv")], capsys)
    assert msg == (f"error: {smaller + 1} folds: each fold needs an image of each class, and the smaller class "
                   f"has {smaller} images")


@pytest.mark.parametrize("command", ["train", "cv", "audit"])
def test_every_training_command_takes_threads(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--threads THREADS" in capsys.readouterr().out


def test_output_onto_an_existing_folder_or_file_is_refused_first(tmp_path, labelled_folder, tiny_ckpt, capsys):
    folder = tmp_path / "taken"
    folder.mkdir()
    for argv in (["predict", str(labelled_folder[0]), "--checkpoint", str(tiny_ckpt), "--out", str(folder)],
                 ["cv", *NO_DATA, "--out", str(folder)],
                 ["audit", *NO_DATA, "--out", str(folder)],
                 ["audit", *NO_DATA, "--save-oof", str(folder)],
                 ["export", "--checkpoint", str(tiny_ckpt), "--out", str(folder)]):
        flag = "--save-oof" if "--save-oof" in argv else "--out"
        assert refused(argv, capsys).startswith(f"error: {flag}: {folder} is an existing folder"), argv
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    assert refused(["train", *NO_DATA, "--out", str(a_file)], capsys).startswith(
        f"error: --out: {a_file} is an existing file, not a folder")
    assert "is not a writable folder" in refused(["cv", *NO_DATA, "--out", str(a_file / "cv.json")], capsys)
    assert a_file.read_text() == "keep"


@pytest.mark.parametrize("held", ["eye_clf.pt", "run.json"])
def test_train_refuses_a_folder_that_holds_a_run_and_takes_an_empty_one(tmp_path, held, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / held).write_text("an earlier run")
    assert refused(["train", *NO_DATA, "--out", str(run)], capsys) == (
        f"error: --out: {run} holds a run already ({held}); choose a new folder, or remove that one first "
        "(see python -m eye_clf train --help)")
    assert (run / held).read_text() == "an earlier run"
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder (or one of other files) is taken: the command goes on to the missing data
    assert "--out" not in refused(["train", *NO_DATA, "--out", str(empty)], capsys)


def test_predict_never_overwrites_an_input(labelled_folder, tiny_ckpt, capsys):
    folder = labelled_folder[0]
    image = folder / "003.png"
    before = image.read_bytes()
    for inputs in ([str(image)], [str(folder)]):  # not a .csv name: refused as such, before anything is read
        msg = refused(["predict", *inputs, "--checkpoint", str(tiny_ckpt), "--out", str(image)], capsys)
        assert msg == (f"error: --out: {image}: the file is CSV text; give it a .csv name (see python -m eye_clf "
                       "predict --help)")
    odd = folder.parent / "eye.csv"  # an image, whatever its name
    odd.write_bytes(before)
    msg = refused(["predict", str(odd), "--checkpoint", str(tiny_ckpt), "--out", str(odd)], capsys)
    assert msg == f"error: --out: {odd} is one of the input images; write it elsewhere"
    assert image.read_bytes() == before and odd.read_bytes() == before


def test_predict_never_overwrites_its_model(labelled_folder, tiny_ckpt, tmp_path, monkeypatch, capsys):
    from eye_clf import predict
    image = str(labelled_folder[0] / "003.png")
    before = tiny_ckpt.read_bytes()
    model = tmp_path / "model.csv"  # a checkpoint, whatever its name
    model.write_bytes(before)
    msg = refused(["predict", image, "--checkpoint", str(model), "--out", str(model)], capsys)
    assert msg == f"error: --out: {model} is the model; write it elsewhere"
    shipped, onnx = tmp_path / "shipped.pt.csv", tmp_path / "shipped.onnx.csv"  # stand-ins for the default model
    shipped.write_bytes(before)
    monkeypatch.setattr(predict, "DEFAULT_CHECKPOINT", shipped)
    monkeypatch.setattr(predict, "DEFAULT_ONNX", onnx)
    for out in (shipped, onnx):
        msg = refused(["predict", image, "--out", str(out)], capsys)
        assert msg == f"error: --out: {out} is the model; write it elsewhere"
    assert model.read_bytes() == before and shipped.read_bytes() == before and not onnx.exists()


@pytest.mark.parametrize("flag", ["--out", "--save-oof"])
def test_csv_outputs_need_a_csv_name(flag, tmp_path, capsys):
    out = tmp_path / "review.xlsx"
    assert refused(["audit", *NO_DATA, flag, str(out)], capsys) == (
        f"error: {flag}: {out}: the file is CSV text; give it a .csv name (see python -m eye_clf audit --help)")
    assert not out.exists()


def test_predict_into_a_closed_pipe_ends_quietly(labelled_folder, tiny_ckpt):
    cmd = [sys.executable, "-m", "eye_clf", "predict", str(labelled_folder[0]), "--checkpoint", str(tiny_ckpt)]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run.stdout.close()  # the reader (`| head`) has gone before any row is written
    err = run.stderr.read()
    assert run.wait() == 1
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_cv_never_writes_over_its_labels_or_into_its_fold_folder(labelled_folder, tmp_path, capsys):
    labels = labelled_folder[1]
    before = labels.read_bytes()
    cv = ["cv", *NO_DATA, "--labels", str(labels)]
    msg = refused([*cv, "--out", str(labels)], capsys)  # (a labels file is never named .json)
    assert msg.startswith(f"error: --out: {labels}: the file is JSON; give it a .json name")
    folds = tmp_path / "folds"
    for out in (folds / "fold0.json", folds / "sub" / "all.json"):
        msg = refused([*cv, "--out", str(out), "--fold-dir", str(folds)], capsys)
        assert msg == f"error: --out: {out} is in --fold-dir {folds}, whose files are the folds'; write it elsewhere"
    assert labels.read_bytes() == before and not folds.exists()


def test_export_never_overwrites_its_checkpoint(tiny_ckpt, tmp_path, capsys):
    before = tiny_ckpt.read_bytes()
    msg = refused(["export", "--checkpoint", str(tiny_ckpt), "--out", str(tiny_ckpt)], capsys)
    assert msg.startswith(f"error: --out: {tiny_ckpt}: the file is an ONNX model; give it a .onnx name")
    onnx_named = tmp_path / "tiny_as.onnx"  # a checkpoint named .onnx is refused before anything is written
    onnx_named.write_bytes(before)
    assert refused(["export", "--checkpoint", str(onnx_named), "--out", str(onnx_named)], capsys) == \
        f"error: {onnx_named} is an ONNX graph; this needs a .pt checkpoint (the one it was exported from)"
    assert onnx_named.read_bytes() == before
    assert tiny_ckpt.read_bytes() == before


def test_label_checks_model_review_and_port_before_creating_the_labels_file(labelled_folder, tmp_path, capsys):
    import socket
    folder, labels = labelled_folder[0], tmp_path / "new.xlsx"
    label = ["label", "--images", str(folder), "--labels", str(labels), "--no-browser"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for extra, says in ((["--checkpoint", str(tmp_path / "typo.pt")], "typo.pt"),
                            (["--review", str(tmp_path / "none.csv")], "none.csv"),
                            (["--no-model", "--port", str(taken.getsockname()[1])], "cannot listen on")):
            assert says in refused([*label, *extra], capsys)
            assert not labels.exists()
    assert "not allowed with argument" in refused([*label, "--review", "r.csv", "--checkpoint", "m.pt"], capsys)


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_label_port_out_of_range(port, tmp_path, capsys):
    msg = refused(["label", "--images", str(tmp_path), "--labels", str(tmp_path / "l.xlsx"), "--port", port], capsys)
    assert msg.startswith(f"error: --port: must be in 0..65535, got {port}")


@pytest.mark.parametrize("command", ["evaluate", "audit", "label"])
def test_a_missing_image_folder_is_one_line(command, tmp_path, labelled_folder, tiny_ckpt, capsys):
    """As train and cv say it: not one "image file not found" line per labelled row, and a file is no folder."""
    _, labels, _, _ = labelled_folder
    extra = {"evaluate": ["--checkpoint", str(tiny_ckpt)], "audit": ["--out", str(tmp_path / "review.csv")],
             "label": ["--no-browser"]}[command]
    a_file = tmp_path / "eyes.zip"
    a_file.write_bytes(b"PK")
    for images, message in ((tmp_path / "nope", "image folder not found"), (a_file, "not a folder")):
        msg = refused([command, "--images", str(images), "--labels", str(labels), *extra], capsys)
        assert msg == f"error: {message}: {images}"


def test_predict_empty_folder(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "empty").mkdir()
    assert refused(["predict", str(tmp_path / "empty"), "--checkpoint", str(tiny_ckpt)],
                   capsys) == f"error: no image files found in {tmp_path / 'empty'}"


def test_predict_a_folder_of_subfolders_names_them(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "eyes" / "left").mkdir(parents=True)
    (tmp_path / "eyes" / "notes.txt").write_text("no image of its own")
    (tmp_path / "eyes" / "left" / "a.png").write_bytes(b"")  # an image file by its name: none is read
    assert refused(["predict", str(tmp_path / "eyes"), "--checkpoint", str(tiny_ckpt)], capsys) == (
        f"error: no image files found in {tmp_path / 'eyes'} (its subfolder left/ holds images, which are not read: "
        "pass it as a folder of its own)")


def bad_checkpoints(tiny_ckpt, folder):
    """Checkpoint files that load as something else than a usable eye_clf checkpoint, each with the end of the
    error that names it."""
    good = torch.load(tiny_ckpt, weights_only=True)
    shapes = dict(good, state_dict={k: torch.zeros(3, 3) if v.ndim == 4 else v for k, v in good["state_dict"].items()})
    files = {"not_a_dict.pt": ([1, 2, 3], r" is not an eye_clf checkpoint \(format eye_clf/1\)$"),
             "wrong_shapes.pt": (shapes, r": weights do not fit the model \{'arch': 'eyenet', .*: size mismatch for "),
             "no_preprocessing.pt": ({k: v for k, v in good.items() if k != "preprocessing"},
                                     ": checkpoint has no preprocessing dict$"),
             "non_tensor_weight.pt": (dict(good, state_dict={**good["state_dict"], "extra": 3}),
                                      ": state_dict entry 'extra' is not a tensor but int$")}
    for name, (obj, _) in files.items():
        torch.save(obj, folder / name)
    (folder / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    return [(folder / name, why) for name, (_, why) in files.items()] + [
        (folder / "garbage.pt", re.escape(" is not a readable eye_clf checkpoint (UnpicklingError)") + "$")]


def test_unusable_checkpoints_are_one_error_line(tmp_path, labelled_folder, tiny_ckpt, capsys):
    folder, labels, _, _ = labelled_folder
    for ckpt, why in bad_checkpoints(tiny_ckpt, tmp_path):
        for argv in (["predict", str(folder)], ["evaluate", "--images", str(folder), "--labels", str(labels)]):
            msg = refused([*argv, "--checkpoint", str(ckpt)], capsys)
            assert re.match(rf"error: {re.escape(str(ckpt))}{why}", msg), msg
    assert refused(["predict", str(folder), "--checkpoint", str(tmp_path / "x.pt")],
                   capsys).startswith("error: checkpoint not found")
    assert refused(["evaluate", "--images", str(folder), "--labels", str(labels), "--checkpoint", str(tmp_path)],
                   capsys) == f"error: checkpoint: {tmp_path} is a folder, not a model file"
    assert refused(["train", "--data", str(folder.parent), "--labels", str(labels), "--epochs", "1", "--distill",
                    "0.5", "--teacher", str(tmp_path / "t.pt"), "--out", str(tmp_path / "run")],
                   capsys) == f"error: --teacher not found: {tmp_path / 't.pt'}"
    (tmp_path / "teacher_run").mkdir()
    (tmp_path / "teacher_run" / "eye_clf.pt").write_bytes(tiny_ckpt.read_bytes())
    assert refused(["train", "--data", str(folder.parent), "--labels", str(labels), "--epochs", "1", "--distill",
                    "0.5", "--teacher", str(tmp_path / "teacher_run"), "--out", str(tmp_path / "run")],
                   capsys) == (f"error: --teacher: {tmp_path / 'teacher_run'} is a folder, not a model file; the "
                               f"run's model is {tmp_path / 'teacher_run' / 'eye_clf.pt'}")


def test_skip_bad_keeps_the_readable_files(tmp_path, labelled_folder, tiny_ckpt, capsys):
    folder = labelled_folder[0]
    (folder / "010.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["predict", str(folder), "--checkpoint", str(tiny_ckpt)]
    assert str(folder / "010.png") in refused(argv, capsys)  # without --skip-bad: the first bad file, named
    out = tmp_path / "p.csv"
    main([*argv, "--skip-bad", "--out", str(out)])
    df = pd.read_csv(out)
    assert len(df) == 39 and str(folder / "010.png") not in set(df["file"])
    err = capsys.readouterr().err
    assert "skipped 1 unreadable file(s)" in err and str(folder / "010.png") in err


def test_console_exit_status_and_no_traceback():
    """The real process (one run: starting torch is slow): exit status 1, one stderr line, no traceback."""
    r = subprocess.run([sys.executable, "-m", "eye_clf", "train", "--epochs", "0", *NO_DATA], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and r.stderr == "error: --epochs: must be >= 1, got 0\n"


def test_audit_never_writes_over_its_inputs_or_its_other_output(labelled_folder, tmp_path, capsys, monkeypatch):
    folder, labels, _, _ = labelled_folder
    before = labels.read_bytes()
    given = ["audit", "--images", str(folder), "--labels", str(labels)]
    oof = tmp_path / "oof.csv"
    oof.write_text("img_name,target,p_open\n")
    for extra, says in ((["--out", str(labels)], f"--out: {labels} is the labels file"),
                        (["--oof", str(oof), "--out", str(oof)], f"--out: {oof} is --oof"),
                        (["--out", str(tmp_path / "r.csv"), "--save-oof", str(tmp_path / "r.csv")],
                         f"--save-oof: {tmp_path / 'r.csv'} is --out")):
        assert refused(given + extra, capsys).startswith(f"error: {says}; write it elsewhere"), extra
    assert labels.read_bytes() == before and not (tmp_path / "r.csv").exists()
    annotations = tmp_path / "data" / "other_annotations.csv"  # in the data folder, beside the reference labels
    annotations.parent.mkdir()
    annotations.write_text("img_name,annotator_a,annotator_b\n")
    monkeypatch.setenv("EYE_CLF_DATA", str(annotations.parent))  # (--data would be refused: --images is elsewhere)
    assert refused(given + ["--out", str(annotations)], capsys).startswith(
        f"error: --out: {annotations} is the extra annotators' labels; write it elsewhere")
    protected = tmp_path / "kept.csv"
    protected.write_text("a write-protected file")
    protected.chmod(0o444)  # refused even for root, who could replace it
    assert refused(given + ["--out", str(protected)], capsys).startswith(
        f"error: --out: {protected} is a read-only file, which eye_clf does not replace")
    assert protected.read_text() == "a write-protected file" and annotations.read_text().startswith("img_name")


@pytest.mark.parametrize("command", ["train", "evaluate", "cv", "audit"])
def test_a_data_folder_that_would_be_ignored_is_refused(command, tmp_path, capsys):
    from argparse import Namespace

    from eye_clf.__main__ import check_data_flag
    data, images, labels = tmp_path / "data", tmp_path / "images", tmp_path / "labels.csv"
    (data / "EyesDataset").mkdir(parents=True)
    images.mkdir()
    msg = refused([command, "--data", str(data), "--images", str(images), "--labels", str(labels)], capsys)
    assert msg == (f"error: --data: {data} would be ignored, as --images and --labels name the images and their "
                   f"labels; drop --data, or drop --images to read {data / 'EyesDataset'}")
    for given in (dict(images=str(data / "EyesDataset")), dict(images=None), dict(labels=None)):  # each one is read
        check_data_flag(Namespace(**{**dict(data=str(data), images=str(images), labels=str(labels)), **given}))
